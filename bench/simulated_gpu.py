"""A stand-in for ``engine.pipeline.Engine`` that sleeps instead of computing: a simulated GPU.

It takes the same requests and returns the same result types (small solid images whose colour
comes from the seed), so the whole path around the GPU (runner, executor, worker, Redis, bot)
is measured or tested for real while the GPU costs only ``seconds_per_image`` of sleep and no
CPU. Used by bench/redis_bench.py and the Redis protocol tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from engine.requests import GeneratedImage, GenerationRequest, GenerationResult, StepProgress


class SimulatedEngine:
    """Sleeps ``seconds_per_image`` per image of a batch (spread over the steps).

    Args:
        seconds_per_image: simulated GPU time per image.
        size: side of the returned images (small: encoding them is nearly free).
    """

    def __init__(self, seconds_per_image: float = 0.05, size: int = 8):
        self.seconds_per_image = seconds_per_image
        self.size = size
        self.calls: list[list[int]] = []  # the job seeds of each batch

    def warm_up(self) -> None:
        """Nothing to warm."""

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        progress: Callable[[StepProgress], object] | None = None,
        *,
        preview_every: float = 0.0,
    ) -> list[GenerationResult]:
        started = time.perf_counter()
        self.calls.append([r.seed for r in requests])
        images = sum(r.count for r in requests)
        steps = max(1, requests[0].steps)
        for step in range(1, steps + 1):
            time.sleep(self.seconds_per_image * images / steps)
            if progress is not None:
                progress(StepProgress(step, steps))
        seconds = time.perf_counter() - started
        return [
            GenerationResult(
                request=r,
                images=tuple(
                    GeneratedImage(seed, self._image(seed))
                    for seed in range(r.seed, r.seed + r.count)
                ),
                seconds=seconds,
            )
            for r in requests
        ]

    def _image(self, seed: int) -> np.ndarray:
        colour = (seed % 251, (seed // 251) % 251, (seed * 7) % 251)
        return np.full((self.size, self.size, 3), colour, dtype=np.uint8)
