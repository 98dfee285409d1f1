"""The async bridge: one worker thread owns the engine; the event loop never blocks on torch."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from engine.encoding import DEFAULT_TOTAL_LIMIT, EncodedImage, encode_images

if TYPE_CHECKING:
    from PIL import Image

    from engine.pipeline import Engine
    from engine.requests import GenerationRequest, GenerationResult, StepProgress

log = logging.getLogger(__name__)

ProgressCallback = Callable[["StepProgress"], object]


class EngineRunner:
    """Runs an ``Engine`` on a single dedicated thread and exposes it to asyncio.

    The engine is created by ``load`` on that thread too, so CUDA state and the pipeline are
    only ever touched from one thread. Encoding runs on a separate small pool so that it never
    waits behind the GPU.
    """

    def __init__(self, load: Callable[[], Engine], *, warm_up: bool = True) -> None:
        self._load = load
        self._warm_up = warm_up
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagine-gpu")
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="imagine-encode")
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
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[GenerationResult]:
        """Generate requests that share a ``batch_key`` in one pipeline call."""
        engine = self.engine
        loop = asyncio.get_running_loop()
        call = functools.partial(
            engine.generate_batch, list(requests), self._forwarder(loop, progress)
        )
        return await loop.run_in_executor(self._gpu, call)

    async def encode(
        self,
        images: Sequence[Image.Image],
        limit_bytes: int,
        total_limit_bytes: int = DEFAULT_TOTAL_LIMIT,
        stem: str = "imagine",
    ) -> list[EncodedImage]:
        """Encode images to fit Discord's limits, on the encoder pool (not the GPU thread)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(
            encode_images, list(images), limit_bytes, total_limit_bytes, stem=stem
        )
        return await loop.run_in_executor(self._encoder, call)

    async def close(self) -> None:
        """Wait for the running batch to finish, then stop both thread pools."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        # shutdown(wait=True) blocks, so do it off the loop.
        await loop.run_in_executor(None, functools.partial(self._gpu.shutdown, wait=True))
        await loop.run_in_executor(None, functools.partial(self._encoder.shutdown, wait=True))
        log.info("engine runner closed")
