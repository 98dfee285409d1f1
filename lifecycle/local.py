"""The in-process backend: released tickets run on this process's engine runner, one batch at a
time. The default: it needs nothing installed besides the bot itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from engine.executor import GPUStuck, TicketExecutor
from engine.tickets import Ticket
from lifecycle.backend import OnEvent

log = logging.getLogger(__name__)

MAX_FINISHING = 2
"""Generated batches that may wait for their safety check and encoding while the next batch
runs on the GPU: enough to keep the GPU busy, few enough to bound the pixels held in memory."""


class LocalBackend:
    """Runs each released batch on one ``TicketExecutor``; takes the next when it is done.

    Args:
        executor: generates, checks and encodes on the local GPU.
        max_batch_images: the most images released at once (``IMAGINE_MAX_BATCH_IMAGES``).
        on_stuck: called once when the generation watchdog fires (the process should exit).
    """

    name = "local"

    def __init__(
        self,
        executor: TicketExecutor,
        *,
        max_batch_images: int,
        on_stuck: Callable[[], None] = lambda: None,
    ):
        self.executor = executor
        self.max_batch_images = max_batch_images
        self._on_stuck = on_stuck
        self._on_event: OnEvent | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._batches: set[asyncio.Task] = set()  # on the GPU, or being checked and encoded
        self._finishing: dict[asyncio.Task, frozenset[int]] = {}
        self._finished = asyncio.Event()  # set whenever a batch is fully finished
        self._running: frozenset[int] = frozenset()
        self._busy_until = 0.0  # loop time when the running batch should end (ETA)

    async def start(self, on_event: OnEvent) -> None:
        self._on_event = on_event

    async def capacity(self) -> int:
        # The GPU is free once a batch is generated; its encoding overlaps the next batch, but
        # at most MAX_FINISHING batches wait for encoding at once (memory and CPU stay bounded).
        while True:
            await self._idle.wait()
            if len(self._finishing) < MAX_FINISHING:
                return self.max_batch_images
            self._finished.clear()
            await self._finished.wait()

    async def release(self, tickets: Sequence[Ticket]) -> None:
        assert self._on_event is not None, "start() first"
        tickets = list(tickets)
        if not tickets:
            return
        self._idle.clear()
        self._running = frozenset(t.job_id for t in tickets)
        images = sum(t.request.work for t in tickets)
        loop = asyncio.get_running_loop()
        self._busy_until = loop.time() + images * self.executor.seconds_per_image
        task = loop.create_task(self._run(tickets), name="imagine-gpu-batch")
        self._batches.add(task)

    async def _run(self, tickets: list[Ticket]) -> None:
        assert self._on_event is not None
        task = asyncio.current_task()
        ids = frozenset(t.job_id for t in tickets)

        def gpu_done() -> None:
            # The GPU is free: the dispatcher may release the next batch now.
            if task is not None:
                self._finishing[task] = ids
            self._running = frozenset()
            self._busy_until = 0.0
            self._idle.set()

        try:
            await self.executor.run(tickets, self._on_event, on_gpu_done=gpu_done)
        except GPUStuck:
            # Its tickets were failed; the GPU thread stays busy, so no later batch can run.
            # The idle flag stays cleared: nothing more is released; the process restarts.
            self._on_stuck()
            return
        except Exception:
            # The executor fails its own tickets; this is the last net, so that no error ever
            # leaves the dispatcher waiting for a batch that will never end.
            log.exception("GPU batch %s: unexpected error", sorted(ids))
        finally:
            self._batches.discard(task)
            self._finishing.pop(task, None)
            self._finished.set()
        if self._running == ids:
            self._running = frozenset()
            self._busy_until = 0.0
            self._idle.set()

    async def cancel(self, job_id: int) -> bool:
        return False  # a released ticket is on the GPU already

    def in_flight(self) -> frozenset[int]:
        return self._running.union(*self._finishing.values())

    @property
    def available(self) -> bool:
        return True

    @property
    def seconds_per_image(self) -> float:
        return self.executor.seconds_per_image

    @property
    def gpus(self) -> int:
        return 1

    def busy_for(self) -> float:
        return max(0.0, self._busy_until - asyncio.get_running_loop().time())

    @property
    def stuck(self) -> bool:
        return self.executor.stuck

    async def close(self, *, wait: bool = True) -> None:
        if self._batches and wait and not self.stuck:
            await asyncio.gather(*self._batches, return_exceptions=True)
