"""Where released tickets go to be generated: the interface every GPU backend implements.

The bot keeps the fair queue (fairness, positions, ETA and cancel stay exact) and releases
tickets to a backend only while it has room: ``capacity()`` waits for room, ``release()`` hands
tickets over, and the backend reports back through the ``on_event`` callback given to
``start()`` (``Started``, ``Progress``, then one ``Finished`` or ``Failed`` per ticket).

``LocalBackend`` runs tickets in this process on the engine runner; ``RedisBackend`` publishes
them to a Redis stream that GPU workers (``python -m engine.worker``) consume.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from engine.tickets import Event, Ticket

OnEvent = Callable[[Event], Awaitable[None]]


@runtime_checkable
class Backend(Protocol):
    """A GPU side that turns released tickets into events."""

    name: str  # "local" or "redis": for logs and metrics

    async def start(self, on_event: OnEvent) -> None:
        """Begin delivering events to ``on_event``.

        ``on_event`` is awaited for each event; an event counts as delivered (and, for Redis,
        is acknowledged) only when it returns, so it must store the outcome before returning.
        After ``start`` returns, ``in_flight()`` names the tickets a previous run released
        that are still waiting or running (the bot adopts them instead of re-queueing).
        """
        ...

    async def capacity(self) -> int:
        """Wait until tickets may be released; the most images that may be released now (>= 1)."""
        ...

    async def release(self, tickets: Sequence[Ticket]) -> None:
        """Hand ``tickets`` (one ``batch_key``) to the GPU side. Never raises: a backend that
        cannot deliver them now (Redis down) keeps them and delivers them when it can."""
        ...

    async def cancel(self, job_id: int) -> bool:
        """Withdraw a released ticket that has not started; True when it will never run."""
        ...

    def in_flight(self) -> frozenset[int]:
        """Job ids released and without an outcome yet."""
        ...

    @property
    def available(self) -> bool:
        """Whether some GPU is there to run tickets (False: "waiting for a GPU worker")."""
        ...

    @property
    def seconds_per_image(self) -> float:
        """Smoothed GPU seconds per image on one GPU (the ETA basis)."""
        ...

    @property
    def gpus(self) -> int:
        """How many GPUs share the queue's work now (1 locally; workers online for Redis)."""
        ...

    def busy_for(self) -> float:
        """Seconds until the released work should be done (the ETA of the queue's head)."""
        ...

    @property
    def stuck(self) -> bool:
        """The local GPU watchdog fired: take no more work (always False for Redis)."""
        ...

    async def close(self, *, wait: bool = True) -> None:
        """Stop; with ``wait``, let running local work finish and deliver its events first."""
        ...
