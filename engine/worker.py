"""A GPU worker: ``python -m engine.worker`` takes tickets from Redis and answers with events.

It knows no Discord and no storage: it reads tickets from ``{prefix}:tickets`` in the consumer
group ``workers``, batches compatible ones up to ``IMAGINE_MAX_BATCH_IMAGES``, runs them on its
GPU through the same ``TicketExecutor`` the bot's local mode uses, and ``XADD``s progress and
outcomes to ``{prefix}:events``. A ticket is acknowledged (and deleted) only after its outcome
is in the events stream, so a worker killed mid-batch loses nothing: after
``IMAGINE_CLAIM_TIMEOUT`` another worker claims its tickets (``XAUTOCLAIM``). While it works on
a ticket it refreshes the ticket's idle time, so a slow batch is never claimed from a live
worker. docs/redis-streams.md has the protocol.

Exit codes: 0 after SIGTERM/SIGINT (the running batch is finished first), 1 when it cannot
start, 3 when the generation watchdog fired (a supervisor should restart it).
``python -m engine.worker doctor`` checks the setup without serving (``engine.doctor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.executor import GPUStuck, TicketExecutor
from engine.settings import COMPILE_CACHE
from engine.streams import (
    CANCELLED,
    CLAIM_SCRIPT,
    CLAIM_TTL_S,
    EVENTS_MAXLEN,
    TICKET_GROUP,
    StreamKeys,
    WorkerBeat,
    check_queue_url,
    connect,
    ensure_group,
    is_nogroup,
    is_redis_error,
)
from engine.tickets import (
    Event,
    Failed,
    Finished,
    Ticket,
    WireError,
    WireVersionError,
    event_to_fields,
    ticket_from_fields,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_GPU_STUCK = 3
MAX_DELIVERIES = 3  # a ticket that killed this many workers is failed, not tried again
GAVE_UP = "This request failed on several GPU workers in a row. Please try another prompt."
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0


class WorkerSettings(BaseSettings):
    """What ``python -m engine.worker`` reads from ``IMAGINE_*`` (engine settings apart)."""

    model_config = SettingsConfigDict(env_prefix="IMAGINE_", env_file=".env", extra="ignore")

    queue_url: SecretStr
    queue_prefix: str = "imagine"
    worker_name: str = ""
    worker_capacity: int = Field(default=0, ge=0, le=1024)
    claim_timeout: float = Field(default=60.0, gt=0)
    heartbeat_interval: float = Field(default=2.0, gt=0)
    progress_interval: float = Field(default=0.5, ge=0)
    generation_timeout: float = Field(default=300.0, ge=1)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    data_dir: Path = Path("./data")  # the worker keeps only torch.compile's cache there

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: SecretStr) -> SecretStr:
        check_queue_url(value.get_secret_value(), required=True)
        return value

    @property
    def name(self) -> str:
        """This worker's consumer name: the setting, or host-pid (unique on one machine)."""
        return self.worker_name or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class _Held:
    """A ticket this worker took from the stream and has not answered yet."""

    entry_id: bytes
    ticket: Ticket
    started: bool = False

    @property
    def images(self) -> int:
        return self.ticket.request.work


class Worker:
    """Takes tickets from Redis, runs them on one ``TicketExecutor``, writes events back.

    Args:
        redis: a ``redis.asyncio.Redis`` with ``decode_responses=False``.
        executor: generates, checks and encodes on this machine's GPU.
        keys: the stream names (``IMAGINE_QUEUE_PREFIX``).
        name: this worker's consumer name (unique among live workers).
        capacity: most images held at once (running plus waiting).
        max_batch_images: most images in one GPU batch.
        claim_timeout: seconds a ticket may sit unrefreshed before another worker takes it.
        heartbeat_interval: seconds between heartbeats (a worker is gone after three missed).
        metrics: an ``engine.monitoring.WorkerMetrics`` to report to, or None.
    """

    def __init__(
        self,
        redis,
        executor: TicketExecutor,
        *,
        keys: StreamKeys,
        name: str,
        capacity: int,
        max_batch_images: int,
        claim_timeout: float = 60.0,
        heartbeat_interval: float = 2.0,
        metrics=None,
    ):
        self.redis = redis
        self.executor = executor
        self.keys = keys
        self.name = name
        self.capacity = max(1, capacity)
        self.max_batch_images = max_batch_images
        self.claim_timeout = claim_timeout
        self.heartbeat_interval = heartbeat_interval
        self.metrics = metrics
        self.held: dict[bytes, _Held] = {}  # in arrival order
        self.connected = False
        self._claim = redis.register_script(CLAIM_SCRIPT)
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()  # nothing held any more: the refresh may end
        self._changed = asyncio.Event()
        self._group_ready = False

    # ------------------------------------------------------------------------ running
    def stop(self) -> None:
        """Take no new tickets; finish the held ones; then ``run`` returns 0."""
        self._stopping.set()
        self._changed.set()

    async def run(self) -> int:
        """Work until ``stop()`` (returns 0) or the GPU watchdog fires (returns 3)."""
        log.info(
            "worker %s: capacity %d images, batches of up to %d, queue %s",
            self.name,
            self.capacity,
            self.max_batch_images,
            self.keys.tickets,
        )
        loops = [
            asyncio.create_task(self._heartbeat(), name="worker-heartbeat"),
            asyncio.create_task(self._read(), name="worker-read"),
            asyncio.create_task(self._refresh(), name="worker-refresh"),
        ]
        try:
            await self._work()
            return 0
        except GPUStuck:
            log.critical("worker %s: the GPU is stuck; exiting for a restart", self.name)
            return EXIT_GPU_STUCK
        finally:
            self._stopping.set()
            self._finished.set()
            # The loops watch the stop flag (their Redis calls block at most 1 s): let them
            # end by themselves rather than cancelling a Redis call half-way.
            _, late = await asyncio.wait(loops, timeout=3)
            for task in late:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.redis.srem(self.keys.workers, self.name)
                await self.redis.delete(self.keys.worker(self.name))

    @property
    def busy_images(self) -> int:
        return sum(h.images for h in self.held.values())

    async def _backoff(self, delay: float, what: str, exc: BaseException) -> float:
        if self.connected or delay == BACKOFF_MIN_S:
            log.warning("worker %s: Redis %s failed (%s); retrying", self.name, what, exc)
        self.connected = False
        self._group_ready = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        return min(delay * 2, BACKOFF_MAX_S)

    # ------------------------------------------------------------------------ heartbeat
    async def _heartbeat(self) -> None:
        delay = BACKOFF_MIN_S
        while not self._stopping.is_set():
            beat = WorkerBeat(
                self.name,
                self.capacity,
                self.busy_images,
                round(self.executor.seconds_per_image, 4),
            )
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(
                        self.keys.worker(self.name),
                        beat.to_json(),
                        px=int(self.heartbeat_interval * 3000),
                    )
                    pipe.sadd(self.keys.workers, self.name)
                    await pipe.execute()
            except Exception as exc:
                if not is_redis_error(exc):
                    raise
                delay = await self._backoff(delay, "heartbeat", exc)
                continue
            if not self.connected:
                log.info("worker %s: connected to Redis", self.name)
            self.connected = True
            delay = BACKOFF_MIN_S
            if self.metrics is not None:
                self.metrics.busy(self.busy_images)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.heartbeat_interval)

    # ------------------------------------------------------------------------ reading
    async def _read(self) -> None:
        """Fill ``held`` up to the capacity: own pending first, then dead workers', then new."""
        own_pending = True
        delay = BACKOFF_MIN_S
        while not self._stopping.is_set():
            if self.busy_images >= self.capacity:
                await self._wait_changed(1.0)
                continue
            try:
                if not self._group_ready:
                    await ensure_group(self.redis, self.keys.tickets, TICKET_GROUP)
                    self._group_ready = True
                if own_pending:
                    # After a restart under the same name: what this worker held before.
                    entries = await self._read_group("0", count=self.capacity, block=None)
                    own_pending = False
                else:
                    entries = await self._autoclaim() or await self._read_group(
                        ">", count=1, block=None if self.held else 1000
                    )
                delay = BACKOFF_MIN_S
            except Exception as exc:
                if is_redis_error(exc) and is_nogroup(exc):
                    self._group_ready = False
                    continue
                if not is_redis_error(exc):
                    log.exception("worker %s: reading tickets failed", self.name)
                delay = await self._backoff(delay, "read", exc)
                continue
            for entry_id, fields in entries:
                await self._take(entry_id, fields)
            if not entries and self.held:
                await self._wait_changed(0.2)

    async def _read_group(self, start: str, *, count: int, block: int | None) -> list:
        reply = await self.redis.xreadgroup(
            TICKET_GROUP, self.name, {self.keys.tickets: start}, count=count, block=block
        )
        return [entry for _stream, entries in reply or [] for entry in entries]

    async def _autoclaim(self) -> list:
        """Tickets left idle past the claim timeout by a worker that died (or hung)."""
        reply = await self.redis.xautoclaim(
            self.keys.tickets,
            TICKET_GROUP,
            self.name,
            int(self.claim_timeout * 1000),
            start_id="0-0",
            count=1,
        )
        entries = [e for e in (reply[1] if reply else []) if e and e[1]]
        taken = []
        for entry_id, fields in entries:
            pending = await self.redis.xpending_range(
                self.keys.tickets, TICKET_GROUP, entry_id, entry_id, 1
            )
            delivered = pending[0]["times_delivered"] if pending else 1
            log.warning(
                "worker %s: took over ticket %s (delivery %d)",
                self.name,
                entry_id.decode(),
                delivered,
            )
            if delivered > MAX_DELIVERIES:
                await self._give_up(entry_id, fields)
                continue
            taken.append((entry_id, fields))
        return taken

    async def _take(self, entry_id: bytes, fields: dict) -> None:
        if entry_id in self.held:
            return
        if not fields:  # deleted after it was read (cancelled), or a stale id
            await self._forget(entry_id)
            return
        try:
            ticket = ticket_from_fields(fields)
        except WireError as exc:
            log.error("worker %s: unreadable ticket %s: %s", self.name, entry_id.decode(), exc)
            if exc.job_id is not None:
                reason = "version" if isinstance(exc, WireVersionError) else "crash"
                await self._answer(Failed(exc.job_id, str(exc), reason), [entry_id])
            else:
                await self._forget(entry_id)
            return
        self.held[entry_id] = _Held(entry_id, ticket)
        self._changed.set()

    async def _give_up(self, entry_id: bytes, fields: dict) -> None:
        try:
            job_id = ticket_from_fields(fields).job_id
        except WireError as exc:
            job_id = exc.job_id
        log.error("worker %s: giving up on ticket of job %s", self.name, job_id)
        if job_id is None:
            await self._forget(entry_id)
        else:
            await self._answer(Failed(job_id, GAVE_UP, "gave_up"), [entry_id])

    async def _wait_changed(self, timeout: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # ------------------------------------------------------------------------ refreshing
    async def _refresh(self) -> None:
        """Keep held tickets' idle time low, so that no live worker's ticket is claimed."""
        interval = max(0.2, self.claim_timeout / 5)
        while not self._finished.is_set():
            ids = list(self.held)
            if ids:
                try:
                    await self.redis.xclaim(
                        self.keys.tickets, TICKET_GROUP, self.name, 0, ids, justid=True
                    )
                except Exception as exc:
                    if not is_redis_error(exc):
                        raise
                    log.debug("worker %s: refresh failed: %s", self.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), interval)

    # ------------------------------------------------------------------------ working
    async def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                if self._stopping.is_set():
                    return
                await self._wait_changed(1.0)
                continue
            batch = await self._claimed(batch)
            if not batch:
                continue
            for held in batch:
                held.started = True
            tickets = [h.ticket for h in batch]
            entries = {h.ticket.job_id: h.entry_id for h in batch}
            started = time.perf_counter()

            async def emit(event: Event, entries: dict[int, bytes] = entries) -> None:
                if isinstance(event, Finished | Failed):
                    await self._answer(event, [entries[event.job_id]])
                else:
                    await self._publish_quietly(event)

            await self.executor.run(tickets, emit)  # GPUStuck propagates: exit 3
            if self.metrics is not None:
                self.metrics.batch(sum(h.images for h in batch), time.perf_counter() - started)

    def _next_batch(self) -> list[_Held]:
        """The oldest waiting ticket and the compatible ones after it, up to a full batch."""
        waiting = [h for h in self.held.values() if not h.started]
        if not waiting:
            return []
        key = waiting[0].ticket.batch_key
        batch, images = [], 0
        for held in waiting:
            if held.ticket.batch_key != key:
                continue
            if batch and images + held.images > self.max_batch_images:
                break
            batch.append(held)
            images += held.images
        return batch

    async def _claimed(self, batch: list[_Held]) -> list[_Held]:
        """The tickets of ``batch`` this worker may run: a cancelled one is dropped."""
        kept = []
        for held in batch:
            while True:
                try:
                    ok = await self._claim(
                        keys=[self.keys.claim(held.ticket.job_id)],
                        args=[self.name, CANCELLED, CLAIM_TTL_S],
                    )
                    break
                except Exception as exc:
                    if not is_redis_error(exc):
                        raise
                    await self._backoff(1.0, "claim", exc)
            if ok:
                kept.append(held)
            else:
                log.info("worker %s: job %s was cancelled", self.name, held.ticket.job_id)
                await self._forget(held.entry_id)
        return kept

    async def _publish_quietly(self, event: Event) -> None:
        """A progress or start event: worth sending, not worth waiting for Redis."""
        try:
            await self.redis.xadd(
                self.keys.events, event_to_fields(event), maxlen=EVENTS_MAXLEN, approximate=True
            )
        except Exception as exc:
            if not is_redis_error(exc):
                raise
            log.debug("worker %s: event dropped: %s", self.name, exc)

    async def _answer(self, event: Finished | Failed, entry_ids: list[bytes]) -> None:
        """Store an outcome in the events stream, then acknowledge its ticket (in that order:
        a worker killed in between leaves a duplicate outcome, never a lost one)."""
        fields = event_to_fields(event)
        delay = BACKOFF_MIN_S
        while True:
            try:
                await self.redis.xadd(
                    self.keys.events, fields, maxlen=EVENTS_MAXLEN, approximate=True
                )
                break
            except Exception as exc:
                if not is_redis_error(exc):
                    raise
                delay = await self._backoff(delay, "outcome", exc)
        for entry_id in entry_ids:
            await self._forget(entry_id, job_id=event.job_id)
        if self.metrics is not None:
            self.metrics.ticket("finished" if isinstance(event, Finished) else "failed")
        log.info(
            "worker %s: job %s %s",
            self.name,
            event.job_id,
            "finished" if isinstance(event, Finished) else f"failed ({event.reason})",
        )

    async def _forget(self, entry_id: bytes, *, job_id: int | None = None) -> None:
        """Acknowledge and delete a ticket entry (and its claim); it is done with."""
        self.held.pop(entry_id, None)
        self._changed.set()
        delay = BACKOFF_MIN_S
        for _ in range(20):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xack(self.keys.tickets, TICKET_GROUP, entry_id)
                    pipe.xdel(self.keys.tickets, entry_id)
                    if job_id is not None:
                        pipe.delete(self.keys.claim(job_id))
                    await pipe.execute()
                return
            except Exception as exc:
                if not is_redis_error(exc):
                    raise
                if is_nogroup(exc):
                    return  # Redis lost the stream: nothing left to acknowledge
                delay = await self._backoff(delay, "acknowledge", exc)
        # Still pending: another worker claims it later; its duplicate outcome is dropped.
        log.error("worker %s: could not acknowledge %s", self.name, entry_id.decode())


# ---------------------------------------------------------------------------------- main
async def _optional_model(setting: str, model: str, load: Callable[[str], T]) -> T | None:
    """Load an optional model off the loop; None (and one warning) when it cannot be."""
    if not model:
        return None
    from engine.errors import EngineError

    try:
        return await asyncio.to_thread(load, model)
    except EngineError as exc:
        log.warning("%s: %s Working without it.", setting, exc.user_message)
        return None


async def serve(settings: WorkerSettings, engine_settings, load_engine=None) -> int:
    """Load the engine, then work until SIGTERM/SIGINT; the exit code.

    ``load_engine``: builds the engine on the GPU thread (default: SDXL from
    ``engine_settings``; the benchmark passes a simulated GPU).
    """
    from engine import EngineRunner
    from engine.monitoring import OpsServer, WorkerMetrics

    if load_engine is None:
        from engine.pipeline import Engine

        def load_engine():
            return Engine.load(engine_settings, compile_cache=settings.data_dir / COMPILE_CACHE)

    runner = EngineRunner(load_engine)
    await runner.start()
    from engine.describe import Describer
    from engine.safety import SafetyChecker

    safety = await _optional_model(
        "IMAGINE_SAFETY_MODEL", engine_settings.safety_model, SafetyChecker
    )
    describer = await _optional_model(
        "IMAGINE_DESCRIBE_MODEL",
        engine_settings.describe_model,
        lambda model: Describer(model, engine_settings.device, engine_settings.dtype),
    )
    name = settings.name
    executor = TicketExecutor(
        runner,
        safety=lambda: safety,
        describer=lambda: describer,
        generation_timeout=settings.generation_timeout,
        progress_interval=settings.progress_interval,
        worker=name,
        image_format=engine_settings.image_format,
    )
    metrics = WorkerMetrics()
    redis = connect(settings.queue_url.get_secret_value())
    worker = Worker(
        redis,
        executor,
        keys=StreamKeys(settings.queue_prefix),
        name=name,
        capacity=settings.worker_capacity or 2 * engine_settings.max_batch_images,
        max_batch_images=engine_settings.max_batch_images,
        claim_timeout=settings.claim_timeout,
        heartbeat_interval=settings.heartbeat_interval,
        metrics=metrics,
    )
    ops = None
    if settings.metrics_port:

        def health() -> dict[str, object]:
            return {
                "ok": worker.connected and not executor.stuck,
                "redis": worker.connected,
                "busy_images": worker.busy_images,
                "name": name,
            }

        ops = await OpsServer.start(
            settings.metrics_host, settings.metrics_port, metrics.registry, health
        )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        code = await worker.run()
    finally:
        if ops is not None:
            await ops.close()
        with contextlib.suppress(Exception):
            await redis.aclose()
    if code == EXIT_GPU_STUCK:
        return code  # the GPU thread cannot be joined: main() exits hard
    await runner.close()
    return code


def main() -> None:
    """``python -m engine.worker``."""
    from pydantic import ValidationError

    from engine.errors import EngineError
    from engine.settings import EngineSettings
    from engine.web_listener import ListenError

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    try:
        settings = WorkerSettings()
        engine_settings = EngineSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"IMAGINE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        print(f"error: bad settings: {problems}", file=sys.stderr)
        sys.exit(1)
    if sys.argv[1:] == ["doctor"]:  # check the setup without serving (engine/doctor.py)
        from engine.doctor import run_worker_doctor

        sys.exit(run_worker_doctor(settings, engine_settings))
    try:
        code = asyncio.run(serve(settings, engine_settings))
    except EngineError as exc:
        print(f"error: the engine could not start: {exc.user_message}", file=sys.stderr)
        code = 1
    except ListenError as exc:  # IMAGINE_METRICS_PORT is taken
        print(f"error: {exc.strerror}", file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # a stuck GPU thread would keep a normal exit waiting forever


if __name__ == "__main__":
    main()
