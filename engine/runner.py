"""The async bridge: one worker thread owns the engine; the event loop never blocks on torch."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from engine.encoding import DEFAULT_TOTAL_LIMIT, EncodedImage, encode_one, fit_total

if TYPE_CHECKING:
    from engine.encoding import Pixels
    from engine.pipeline import Engine
    from engine.requests import GenerationRequest, GenerationResult, StepProgress

log = logging.getLogger(__name__)

ProgressCallback = Callable[["StepProgress"], object]

MAX_ENCODE_WORKERS = 4
"""One result is four images; more threads than that cannot help one job, and a bot box needs
cores left for the event loop. PNG/WebP/JPEG encoders run in C, so images encode in parallel."""


def default_encode_workers() -> int:
    """Encoder threads: one per core, at most ``MAX_ENCODE_WORKERS``."""
    return max(1, min(MAX_ENCODE_WORKERS, os.cpu_count() or 1))


class EngineRunner:
    """Runs an ``Engine`` on a single dedicated thread and exposes it to asyncio.

    The engine is created by ``load`` on that thread too, so CUDA state and the pipeline are
    only ever touched from one thread. Encoding runs on a separate small pool so that it never
    waits behind the GPU.
    """

    def __init__(
        self,
        load: Callable[[], Engine],
        *,
        warm_up: bool = True,
        encode_workers: int | None = None,
    ) -> None:
        self._load = load
        self._warm_up = warm_up
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagine-gpu")
        self.encode_workers = encode_workers or default_encode_workers()
        self._encoder = ThreadPoolExecutor(
            max_workers=self.encode_workers, thread_name_prefix="imagine-encode"
        )
        self._engine: Engine | None = None
        self._closed = False

    @property
    def engine(self) -> Engine:
        """The loaded engine (only touch it through the runner's methods from async code)."""
        if self._engine is None:
            raise RuntimeError("EngineRunner.start() has not finished")
        return self._engine

    @property
    def started(self) -> bool:
        """Whether the engine is loaded."""
        return self._engine is not None

    async def start(self) -> None:
        """Load (and warm up) the engine on the worker thread."""
        loop = asyncio.get_running_loop()
        self._engine = await loop.run_in_executor(self._gpu, self._load_and_warm_up)

    def _load_and_warm_up(self) -> Engine:
        engine = self._load()
        if self._warm_up:
            engine.warm_up()
        return engine

    def _forwarder(
        self, loop: asyncio.AbstractEventLoop, progress: ProgressCallback | None
    ) -> Callable[[StepProgress], None] | None:
        if progress is None:
            return None

        def forward(step: StepProgress) -> None:
            # Called on the GPU thread: hand the update to the loop, never run bot code here.
            if not loop.is_closed():
                loop.call_soon_threadsafe(progress, step)

        return forward

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback | None = None
    ) -> GenerationResult:
        """Generate one request; ``progress`` is called on the event loop."""
        results = await self.generate_batch([request], progress)
        return results[0]

    async def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        progress: ProgressCallback | None = None,
        *,
        preview_every: float = 0.0,
    ) -> list[GenerationResult]:
        """Generate requests that share a ``batch_key`` in one pipeline call.

        ``preview_every``: least seconds between two step previews (see ``Engine``).
        """
        engine = self.engine
        loop = asyncio.get_running_loop()
        call = functools.partial(
            engine.generate_batch,
            list(requests),
            self._forwarder(loop, progress),
            preview_every=preview_every,
        )
        return await loop.run_in_executor(self._gpu, call)

    async def encode(
        self,
        images: Sequence[Pixels],
        limit_bytes: int,
        total_limit_bytes: int = DEFAULT_TOTAL_LIMIT,
        stem: str = "imagine",
        indexes: Sequence[int] | None = None,
        image_format: str = "png",
    ) -> list[EncodedImage]:
        """Encode images to fit Discord's limits on the encoder pool, one task per image.

        The images of a set encode in parallel (and the jobs of a batch too); only when the
        set is over ``total_limit_bytes`` does one more pass shrink the largest files.
        ``indexes`` numbers the files (``{stem}_{index}.png``) when they are not 1, 2, ...
        ``images`` are uint8 (height, width, 3) arrays or PIL images.
        """
        loop = asyncio.get_running_loop()
        images = list(images)
        numbers = list(indexes) if indexes is not None else list(range(1, len(images) + 1))
        encoded = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._encoder,
                    functools.partial(
                        encode_one,
                        image,
                        limit_bytes,
                        stem=stem,
                        index=index,
                        image_format=image_format,
                    ),
                )
                for index, image in zip(numbers, images, strict=True)
            )
        )
        if sum(len(e.data) for e in encoded) > total_limit_bytes:
            call = functools.partial(
                fit_total,
                images,
                encoded,
                total_limit_bytes,
                stem=stem,
                indexes=numbers,
                image_format=image_format,
            )
            encoded = await loop.run_in_executor(self._encoder, call)
        for item in encoded:
            if item.note:
                log.info("%s: %s (%d bytes)", item.filename, item.note, len(item.data))
        return list(encoded)

    async def close(self, *, wait: bool = True) -> None:
        """Wait for the running batch to finish, then stop both thread pools.

        ``wait=False`` abandons a GPU thread that is stuck (the generation watchdog fired): it
        cannot be interrupted, so the process has to exit without joining it.
        """
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if not wait:
            self._gpu.shutdown(wait=False, cancel_futures=True)
            self._encoder.shutdown(wait=False, cancel_futures=True)
            log.warning("engine runner abandoned with its GPU thread still busy")
            return
        # shutdown(wait=True) blocks, so do it off the loop.
        await loop.run_in_executor(None, functools.partial(self._gpu.shutdown, wait=True))
        await loop.run_in_executor(None, functools.partial(self._encoder.shutdown, wait=True))
        log.info("engine runner closed")
