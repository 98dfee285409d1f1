"""The scale-out backend: released tickets go to GPU workers through Redis Streams.

The fair queue stays in the bot (``JobService``); this backend only releases tickets while the
workers' heartbeats say they have room, publishes them to ``{prefix}:tickets``, and turns the
``{prefix}:events`` stream back into events for the service, acknowledging each only after
the service has stored it. SQLite stays the source of truth; Redis may forget everything:

- Redis unreachable: released tickets wait in memory (an outbox) and ``available`` is False
  (the status says "waiting for a GPU worker"); they are published when it is back.
- Redis lost its data (restart without persistence, flush): the epoch key is gone, so every
  ticket without an outcome is published again.
- The bot restarted: ``start()`` reads the streams, so tickets a worker still holds are
  adopted instead of queued twice.

docs/redis-streams.md has the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from engine.streams import (
    CANCELLED,
    CLAIM_TTL_S,
    EVENT_GROUP,
    TICKET_GROUP,
    StreamKeys,
    WorkerBeat,
    ensure_group,
    is_nogroup,
    is_redis_error,
)
from engine.tickets import (
    Failed,
    Finished,
    Started,
    Ticket,
    WireError,
    event_from_fields,
    ticket_from_fields,
    ticket_to_fields,
)
from lifecycle.backend import OnEvent

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often heartbeats and the epoch are read
READ_BLOCK_MS = 1000
READ_COUNT = 64
BACKOFF_MAX_S = 5.0
DEFAULT_SECONDS_PER_IMAGE = 0.1
LOST = "The GPU queue lost this job while it was being finished. Please try again."


@dataclass
class _Released:
    """A ticket handed to the workers without an outcome yet (``ticket`` is None for a job
    whose outcome was already in the events stream when the bot started)."""

    ticket: Ticket | None
    entry_id: bytes | None = None  # its stream entry; None: not published yet (in the outbox)

    @property
    def images(self) -> int:
        return self.ticket.request.work if self.ticket is not None else 0


class RedisBackend:
    """Publishes tickets to GPU workers over Redis Streams and reads their events back.

    Args:
        redis: a ``redis.asyncio.Redis`` with ``decode_responses=False``
            (``engine.streams.connect``).
        keys: the stream names (``IMAGINE_QUEUE_PREFIX``).
        consumer: this bot's consumer name in the events group.
        poll_interval: seconds between reads of the heartbeats and the epoch.
    """

    name = "redis"

    def __init__(
        self,
        redis,
        *,
        keys: StreamKeys,
        consumer: str = "bot",
        poll_interval: float = POLL_S,
    ):
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.poll_interval = poll_interval
        self.workers: dict[str, WorkerBeat] = {}
        self._unusable: set[bytes] = set()  # workers whose heartbeat this side cannot read
        self.reachable = False
        self._released: dict[int, _Released] = {}
        self._on_event: OnEvent | None = None
        self._epoch: bytes | None = None
        self._room = asyncio.Event()
        self._publishing = asyncio.Lock()  # release() and the poll must not XADD one ticket twice
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------------ Backend
    async def start(self, on_event: OnEvent) -> None:
        self._on_event = on_event
        try:
            await self._sync()
            await self._adopt()
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            log.warning(
                "Redis (IMAGINE_QUEUE_URL) is unreachable (%s): jobs are accepted and wait for it",
                exc,
            )
        self._tasks = [
            asyncio.create_task(self._watch(), name="imagine-redis-watch"),
            asyncio.create_task(self._consume(), name="imagine-redis-events"),
        ]

    async def capacity(self) -> int:
        while True:
            free = self._free()
            if free > 0:
                return free
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), self.poll_interval)

    def _free(self) -> int:
        if not self.available:
            return 0
        total = sum(beat.capacity for beat in self.workers.values())
        return total - sum(r.images for r in self._released.values())

    async def release(self, tickets: Sequence[Ticket]) -> None:
        for ticket in tickets:
            self._released[ticket.job_id] = _Released(ticket)
        with contextlib.suppress(Exception):
            await self._publish()  # what it could not publish waits for the next poll

    async def cancel(self, job_id: int) -> bool:
        async with self._publishing:  # not while its XADD may be on the way
            return await self._cancel(job_id)

    async def _cancel(self, job_id: int) -> bool:
        released = self._released.get(job_id)
        if released is None or released.ticket is None:
            return False  # unknown, or its outcome is already on the way
        if released.entry_id is not None:
            try:
                ok = await self.redis.set(
                    self.keys.claim(job_id), CANCELLED, nx=True, ex=CLAIM_TTL_S
                )
                if not ok:
                    return False  # a worker has it already
                await self.redis.xdel(self.keys.tickets, released.entry_id)
            except Exception as exc:
                if not is_redis_error(exc):
                    raise
                return False  # cannot tell whether a worker took it: it runs
        self._released.pop(job_id, None)
        self._room.set()
        return True

    def in_flight(self) -> frozenset[int]:
        return frozenset(self._released)

    @property
    def available(self) -> bool:
        return self.reachable and bool(self.workers)

    @property
    def seconds_per_image(self) -> float:
        if not self.workers:
            return DEFAULT_SECONDS_PER_IMAGE
        return sum(b.seconds_per_image for b in self.workers.values()) / len(self.workers)

    @property
    def gpus(self) -> int:
        return len(self.workers)

    def busy_for(self) -> float:
        images = sum(r.images for r in self._released.values())
        return images * self.seconds_per_image / max(self.gpus, 1)

    @property
    def stuck(self) -> bool:
        return False  # a stuck worker exits; the others go on

    async def close(self, *, wait: bool = True) -> None:
        self._closing.set()
        self._room.set()
        if self._tasks:
            # Both loops see the flag within one Redis block (1 s); cancelling a Redis call
            # half-way is the fallback only.
            _, late = await asyncio.wait(self._tasks, timeout=3)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    # ------------------------------------------------------------------------ start-up
    async def _adopt(self) -> None:
        """Take over the tickets and outcomes a previous run of the bot left in Redis."""
        for entry_id, fields in await self.redis.xrange(self.keys.tickets):
            try:
                ticket = ticket_from_fields(fields)
            except WireError:
                continue  # the workers fail it (another version) or drop it
            self._released[ticket.job_id] = _Released(ticket, entry_id)
        for entry_id, fields in await self.redis.xrange(self.keys.events):
            try:
                event = event_from_fields(fields)
            except WireError:
                continue
            if isinstance(event, Finished | Failed):
                self._released.setdefault(event.job_id, _Released(None, entry_id))
        if self._released:
            log.info("%d job(s) still with the GPU workers", len(self._released))

    # ------------------------------------------------------------------------ watching
    async def _watch(self) -> None:
        delay = self.poll_interval
        while not self._closing.is_set():
            try:
                await self._sync()
                await self._publish()
                delay = self.poll_interval
            except Exception as exc:
                if not is_redis_error(exc):
                    log.exception("watching the GPU workers failed")
                elif self.reachable:
                    log.warning("Redis is unreachable (%s); jobs wait for it", exc)
                self.reachable = False
                delay = min(delay * 2, BACKOFF_MAX_S)
            self._room.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    async def _sync(self) -> None:
        """Read the epoch and the heartbeats; republish everything when Redis lost its data."""
        epoch = await self.redis.get(self.keys.epoch)
        if epoch is None:
            await self.redis.set(self.keys.epoch, secrets.token_hex(8), nx=True)
            epoch = await self.redis.get(self.keys.epoch)
            await ensure_group(self.redis, self.keys.tickets, TICKET_GROUP)
            await ensure_group(self.redis, self.keys.events, EVENT_GROUP)
        if self._epoch is not None and epoch != self._epoch:
            await self._lost_data()
        self._epoch = epoch
        names = sorted(await self.redis.smembers(self.keys.workers))
        beats = (
            await self.redis.mget([self.keys.worker(n.decode()) for n in names]) if names else []
        )
        workers: dict[str, WorkerBeat] = {}
        for name, raw in zip(names, beats, strict=True):
            if raw is None:
                await self.redis.srem(self.keys.workers, name)  # its heartbeat expired
                continue
            beat = WorkerBeat.from_json(raw)
            if beat is not None:
                workers[beat.name] = beat
            elif name not in self._unusable:
                self._unusable.add(name)
                log.warning(
                    "GPU worker %s speaks another schema version (or sent garbage): no work "
                    "goes to it. Run the same release on the bot and the workers.",
                    name.decode(errors="replace"),
                )
        if set(workers) != set(self.workers):
            log.info("GPU workers online: %s", ", ".join(sorted(workers)) or "none")
        if not self.reachable:
            log.info("Redis is reachable")
        self.workers = workers
        self.reachable = True

    async def _lost_data(self) -> None:
        """Redis restarted empty or was flushed: every released ticket goes out again."""
        log.warning(
            "Redis lost its data (restart or flush): publishing %d unfinished ticket(s) again",
            len(self._released),
        )
        lost = []
        async with self._publishing:
            for job_id, released in self._released.items():
                if released.ticket is None:
                    lost.append(job_id)
                released.entry_id = None
        for job_id in lost:
            # Only its outcome was left, and it went with the data: the job cannot be remade
            # from here; say so rather than leave it waiting.
            self._released.pop(job_id, None)
            await self._deliver(Failed(job_id, LOST, "crash"))

    async def _publish(self) -> None:
        """XADD every released ticket that is not in the stream yet."""
        async with self._publishing:
            outbox = [r for r in self._released.values() if r.entry_id is None and r.ticket]
            if not outbox or not self.reachable:
                return
            async with self.redis.pipeline(transaction=False) as pipe:
                for released in outbox:
                    assert released.ticket is not None
                    pipe.xadd(self.keys.tickets, ticket_to_fields(released.ticket))
                ids = await pipe.execute()
            for released, entry_id in zip(outbox, ids, strict=True):
                released.entry_id = entry_id
            log.debug("published %d ticket(s)", len(outbox))

    # ------------------------------------------------------------------------ events
    async def _consume(self) -> None:
        start = "0"  # own pending first (events read before a crash and not acknowledged)
        delay = self.poll_interval
        while not self._closing.is_set():
            try:
                reply = await self.redis.xreadgroup(
                    EVENT_GROUP,
                    self.consumer,
                    {self.keys.events: start},
                    count=READ_COUNT,
                    block=READ_BLOCK_MS,
                )
                delay = self.poll_interval
            except Exception as exc:
                if is_redis_error(exc) and is_nogroup(exc):
                    with contextlib.suppress(Exception):
                        await ensure_group(self.redis, self.keys.events, EVENT_GROUP)
                    start = "0"
                    continue
                if not is_redis_error(exc):
                    log.exception("reading GPU events failed")
                start = "0"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            entries = [entry for _stream, entries in reply or [] for entry in entries]
            if not entries and start == "0":
                start = ">"
                continue
            done = []
            for entry_id, fields in entries:
                if fields:
                    try:
                        event = event_from_fields(fields)
                    except WireError as exc:
                        log.error("unreadable GPU event %s: %s", entry_id.decode(), exc)
                    else:
                        await self._deliver(event)
                done.append(entry_id)
            if done:
                with contextlib.suppress(Exception):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.xack(self.keys.events, EVENT_GROUP, *done)
                        pipe.xdel(self.keys.events, *done)
                        await pipe.execute()

    async def _deliver(self, event) -> None:
        """Hand one event to the service; an outcome frees its ticket's room afterwards."""
        if isinstance(event, Started):
            event = Started(tuple(j for j in event.job_ids if j in self._released), event.worker)
            if not event.job_ids:
                return  # a duplicate run of jobs that already have their outcome
        assert self._on_event is not None
        await self._on_event(event)  # returns once the outcome is stored
        freed = isinstance(event, Finished | Failed) and self._released.pop(event.job_id, None)
        if freed:
            self._room.set()
