"""The async bridge: one worker thread owns the engine; the event loop never blocks on torch."""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, TypeVar

from engine.encoding import DEFAULT_TOTAL_LIMIT, EncodedImage, as_array, encode_one, fit_total

if TYPE_CHECKING:
    from engine.encoding import Pixels
    from engine.pipeline import Engine
    from engine.requests import GenerationRequest, GenerationResult, StepProgress

log = logging.getLogger(__name__)

ProgressCallback = Callable[["StepProgress"], object]
T = TypeVar("T")

MAX_ENCODE_WORKERS = 4
"""One result is four images; more processes than that cannot help one job, and a bot box
needs cores left for the event loop and the GPU thread."""


def default_encode_workers() -> int:
    """Encoder processes: one per core, at most ``MAX_ENCODE_WORKERS``."""
    return max(1, min(MAX_ENCODE_WORKERS, os.cpu_count() or 1))


def encoder_pool(workers: int) -> ProcessPoolExecutor:
    """Processes that encode images, started from a clean server process.

    Processes, not threads: fpng, the PNG writer, holds the GIL while it encodes (~6 ms per
    1024x1024 image), and the GPU thread needs the GIL to launch every kernel. Moving the
    pixels to a process costs ~1 ms per image; stalling the GPU thread costs the GPU
    (BENCHMARKS.md, "busy-1024"). ``forkserver``: never fork a process that holds CUDA.
    """
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        context.set_forkserver_preload(["engine.encoding"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


class EngineRunner:
    """Runs an ``Engine`` on a single dedicated thread and exposes it to asyncio.

    The engine is created by ``load`` on that thread too, so CUDA state and the pipeline are
    only ever touched from one thread. Encoding runs on a small pool of processes so that it
    never waits behind the GPU, nor the GPU behind it (``encoder_pool``).
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
        self._encoder: Executor = encoder_pool(self.encode_workers)
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

    async def run(self, call: Callable[..., T], *args: object) -> T:
        """Run a blocking ``call(*args)`` on the GPU thread, after the batch there: for another
        model that shares the GPU (the /describe captioner), one call at a time with SDXL."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._gpu, functools.partial(call, *args))

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
        images = [as_array(image) for image in images]
        numbers = list(indexes) if indexes is not None else list(range(1, len(images) + 1))
        encoded = await asyncio.gather(
            *(
                self._encode_call(
                    functools.partial(
                        encode_one,
                        image,
                        limit_bytes,
                        stem=stem,
                        index=index,
                        image_format=image_format,
                    )
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
            encoded = await self._encode_call(call)
        for item in encoded:
            if item.note:
                log.info("%s: %s (%d bytes)", item.filename, item.note, len(item.data))
        return list(encoded)

    async def _encode_call(self, call: functools.partial):
        """Run ``call`` on the encoder pool; a pool whose process died is replaced once."""
        loop = asyncio.get_running_loop()
        pool = self._encoder
        try:
            return await loop.run_in_executor(pool, call)
        except BrokenProcessPool:
            if self._closed:
                raise
            log.warning("an encoder process died; starting new ones")
            if self._encoder is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._encoder = encoder_pool(self.encode_workers)
            return await loop.run_in_executor(self._encoder, call)

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
