"""The Redis protocol between ``RedisBackend`` (the bot's side) and ``engine.worker.Worker``.

Real Redis, real workers and the real executor and encoder; only the GPU is simulated
(``bench/simulated_gpu.py``: it sleeps per image), so claims, cancels, restarts and flushes
can be driven quickly. The bot and worker processes end to end are in tests/workers.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bench.simulated_gpu import SimulatedEngine
from engine import EngineRunner
from engine.executor import TicketExecutor
from engine.requests import GenerationRequest
from engine.streams import StreamKeys, connect
from engine.tickets import Failed, Finished, Started, Ticket, ticket_to_fields
from engine.worker import Worker
from lifecycle.redis_backend import RedisBackend

pytestmark = pytest.mark.timeout(60)
PNG = b"\x89PNG\r\n\x1a\n"


def ticket(job_id: int, count: int = 2, steps: int = 2, width: int = 64) -> Ticket:
    request = GenerationRequest(
        prompt=f"job {job_id}", seed=1000 * job_id, width=width, height=64, steps=steps, count=count
    )
    return Ticket(job_id=job_id, user_id=job_id % 3, request=request)


class Harness:
    """A bot-side backend and any number of in-process workers on one Redis and prefix."""

    def __init__(self, url: str, prefix: str):
        self.url = url
        self.keys = StreamKeys(prefix)
        self.events: list = []
        self.backend: RedisBackend | None = None
        self.workers: dict[str, tuple[Worker, asyncio.Task, EngineRunner, SimulatedEngine]] = {}
        self.changed = asyncio.Event()

    async def on_event(self, event) -> None:
        self.events.append(event)
        self.changed.set()

    async def start_backend(self) -> RedisBackend:
        self.backend = RedisBackend(connect(self.url), keys=self.keys, poll_interval=0.05)
        await self.backend.start(self.on_event)
        return self.backend

    async def start_worker(
        self,
        name: str,
        *,
        seconds_per_image: float = 0.02,
        capacity: int = 8,
        batch: int = 8,
        claim_timeout: float = 30.0,
    ) -> Worker:
        engine = SimulatedEngine(seconds_per_image)
        runner = EngineRunner(lambda: engine, warm_up=False)
        await runner.start()
        worker = Worker(
            connect(self.url),
            TicketExecutor(runner, worker=name),
            keys=self.keys,
            name=name,
            capacity=capacity,
            max_batch_images=batch,
            claim_timeout=claim_timeout,
            heartbeat_interval=0.1,
        )
        task = asyncio.create_task(worker.run())
        self.workers[name] = (worker, task, runner, engine)
        return worker

    async def stop_worker(self, name: str) -> None:
        worker, task, runner, _ = self.workers.pop(name)
        worker.stop()
        await asyncio.wait_for(task, 30)
        await runner.close()
        await worker.redis.aclose()

    def outcomes(self) -> dict[int, list]:
        found: dict[int, list] = {}
        for event in self.events:
            if isinstance(event, Finished | Failed):
                found.setdefault(event.job_id, []).append(event)
        return found

    async def wait(self, check, what: str, timeout: float = 20.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (value := check()):
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; events: {self.events[-5:]}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.05)
        return value

    async def close(self) -> None:
        for name in list(self.workers):
            with contextlib.suppress(Exception):
                await self.stop_worker(name)
        if self.backend is not None:
            await self.backend.close()


@pytest.fixture
async def harness(redis_url, queue_prefix):
    h = Harness(redis_url, queue_prefix)
    try:
        yield h
    finally:
        await h.close()


async def release_all(backend: RedisBackend, tickets: list[Ticket]) -> None:
    """Release like the service does: wait for room, then hand over what fits."""
    waiting = list(tickets)
    while waiting:
        room = await backend.capacity()
        batch, images = [], 0
        while waiting and (not batch or images + waiting[0].request.count <= room):
            images += waiting[0].request.count
            batch.append(waiting.pop(0))
        await backend.release(batch)


async def test_no_worker_means_waiting_then_tickets_run_when_one_comes(harness):
    backend = await harness.start_backend()
    assert not backend.available  # "waiting for a GPU worker"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(backend.capacity(), 0.5)

    await harness.start_worker("w1", capacity=6)
    assert await asyncio.wait_for(backend.capacity(), 5) == 6
    assert backend.available and backend.gpus == 1

    tickets = [ticket(i, count=2) for i in range(1, 8)]
    await release_all(backend, tickets)
    outcomes = await harness.wait(lambda: len(harness.outcomes()) == 7 and harness.outcomes(), "7")
    for job_id, [finished] in outcomes.items():
        assert isinstance(finished, Finished)
        assert [f.index for f in finished.files] == [1, 2]
        assert all(f.data.startswith(PNG) for f in finished.files)
        assert finished.seeds == (1000 * job_id, 1000 * job_id + 1)
        assert finished.worker == "w1"
    # Never more than the worker's capacity out at once: 3 tickets of 2 images.
    assert max(len(s.job_ids) for s in harness.events if isinstance(s, Started)) <= 3
    # Everything acknowledged is gone from Redis.
    redis = backend.redis
    await harness.wait(lambda: not backend.in_flight(), "no ticket in flight")
    await asyncio.sleep(0.5)  # the worker acknowledges right after writing the outcome
    assert await redis.xlen(harness.keys.tickets) == 0
    left = await redis.xrange(harness.keys.events)
    assert not left, [(i, f.get(b"type"), f.get(b"meta")) for i, f in left]


async def test_compatible_tickets_share_a_batch_up_to_the_batch_limit(harness):
    backend = await harness.start_backend()
    await harness.start_worker("w1", capacity=16, batch=8, seconds_per_image=0.05)
    await asyncio.wait_for(backend.capacity(), 5)
    # Two sizes: tickets of one size batch together, never with the other size.
    tickets = [ticket(i, count=2, width=64 if i % 2 else 128) for i in range(1, 9)]
    await backend.release(tickets)
    await harness.wait(lambda: len(harness.outcomes()) == 8, "8 outcomes")
    _, _, _, engine = harness.workers["w1"]
    for call in engine.calls:
        widths = {64 if (seed // 1000) % 2 else 128 for seed in call}
        assert len(widths) == 1
        assert len(call) * 2 <= 8
    assert any(len(call) == 4 for call in engine.calls)


async def test_two_workers_share_the_work(harness):
    backend = await harness.start_backend()
    await harness.start_worker("w1", capacity=4, batch=4, seconds_per_image=0.05)
    await harness.start_worker("w2", capacity=4, batch=4, seconds_per_image=0.05)
    await harness.wait(lambda: backend.gpus == 2, "two workers online")
    await release_all(backend, [ticket(i, count=2) for i in range(1, 13)])
    outcomes = await harness.wait(lambda: len(harness.outcomes()) == 12 and harness.outcomes(), "")
    by_worker = {}
    for [event] in outcomes.values():
        by_worker[event.worker] = by_worker.get(event.worker, 0) + 1
    assert set(by_worker) == {"w1", "w2"} and min(by_worker.values()) >= 3


async def test_cancel_wins_only_before_a_worker_claims_the_ticket(harness):
    backend = await harness.start_backend()
    await harness.start_worker("w1", capacity=4, batch=2, seconds_per_image=0.5)
    await asyncio.wait_for(backend.capacity(), 5)
    first, second = ticket(1, count=2), ticket(2, count=2)
    await backend.release([first])
    await backend.release([second])  # waits in the worker behind the first batch
    await harness.wait(lambda: any(isinstance(e, Started) for e in harness.events), "a start")
    assert not await backend.cancel(1)  # running: too late
    assert await backend.cancel(2)  # released, not claimed: withdrawn
    assert 2 not in backend.in_flight()
    await harness.wait(lambda: 1 in harness.outcomes(), "job 1's outcome")
    await asyncio.sleep(1.0)
    assert 2 not in harness.outcomes()
    _, _, _, engine = harness.workers["w1"]
    assert engine.calls == [[1000]]
    assert await backend.redis.xlen(harness.keys.tickets) == 0


async def test_a_ticket_of_another_schema_version_fails_with_a_clear_message(harness):
    backend = await harness.start_backend()
    await harness.start_worker("w1")
    await asyncio.wait_for(backend.capacity(), 5)
    fields = ticket_to_fields(ticket(5))
    fields[b"v"] = b"99"
    await backend.redis.xadd(harness.keys.tickets, fields)
    [failed] = await harness.wait(lambda: harness.outcomes().get(5), "job 5's outcome")
    assert isinstance(failed, Failed) and failed.reason == "version"
    assert "schema version 99" in failed.user_message


async def test_a_restarted_bot_adopts_the_tickets_the_workers_still_hold(harness):
    backend = await harness.start_backend()
    await asyncio.sleep(0.2)
    # No worker yet: the tickets a previous run released sit in the stream.
    backend.reachable = True
    await backend.release([ticket(1), ticket(2)])
    assert await backend.redis.xlen(harness.keys.tickets) == 2
    await backend.close()

    again = await harness.start_backend()
    assert again.in_flight() == {1, 2}
    await harness.start_worker("w1")
    await harness.wait(lambda: set(harness.outcomes()) == {1, 2}, "both outcomes")
    await harness.wait(lambda: not again.in_flight(), "nothing in flight")


async def test_a_flushed_redis_gets_every_unfinished_ticket_again(
    tmp_path, own_redis, queue_prefix
):
    harness = Harness(own_redis.url, queue_prefix)
    try:
        backend = await harness.start_backend()
        await harness.start_worker("w1", capacity=4, batch=4, seconds_per_image=0.1)
        await asyncio.wait_for(backend.capacity(), 5)
        tickets = [ticket(i, count=2) for i in range(1, 9)]
        releasing = asyncio.create_task(release_all(backend, tickets))
        await harness.wait(lambda: len(harness.outcomes()) >= 2, "two outcomes")
        await backend.redis.flushall()
        await asyncio.wait_for(releasing, 30)
        outcomes = await harness.wait(
            lambda: len(harness.outcomes()) == 8 and harness.outcomes(), "all 8 outcomes", 30
        )
        assert all(isinstance(e, Finished) for events in outcomes.values() for e in events)
    finally:
        await harness.close()


async def test_redis_down_keeps_released_tickets_until_it_is_back(
    tmp_path, own_redis, queue_prefix
):
    harness = Harness(own_redis.url, queue_prefix)
    try:
        backend = await harness.start_backend()
        await harness.start_worker("w1", capacity=8, seconds_per_image=0.02)
        await asyncio.wait_for(backend.capacity(), 5)
        own_redis.stop()
        await harness.wait(lambda: not backend.available, "Redis seen as down", 10)
        await backend.release([ticket(1), ticket(2)])  # kept in memory
        assert backend.in_flight() == {1, 2}
        own_redis.start()  # empty: nothing was kept
        outcomes = await harness.wait(
            lambda: len(harness.outcomes()) == 2 and harness.outcomes(), "both outcomes", 30
        )
        assert all(isinstance(e, Finished) for [e] in outcomes.values())
    finally:
        await harness.close()


async def test_a_bot_started_while_redis_is_down_publishes_when_it_comes_up(
    own_redis, queue_prefix
):
    own_redis.stop()
    harness = Harness(own_redis.url, queue_prefix)
    try:
        backend = await harness.start_backend()  # no error: jobs are accepted and wait
        assert not backend.available and not backend.in_flight()
        await backend.release([ticket(1)])
        own_redis.start()
        await harness.start_worker("w1")  # a worker that starts now finds the ticket
        [finished] = await harness.wait(lambda: harness.outcomes().get(1), "job 1's outcome", 30)
        assert isinstance(finished, Finished) and finished.worker == "w1"
    finally:
        await harness.close()


async def test_a_worker_of_another_release_gets_no_work_and_the_log_says_why(harness, caplog):
    backend = await harness.start_backend()
    beat = b'{"name":"old","capacity":8,"busy":0,"seconds_per_image":0.1,"v":99}'
    await backend.redis.set(harness.keys.worker("old"), beat, px=5000)
    await backend.redis.sadd(harness.keys.workers, "old")
    with caplog.at_level("WARNING", logger="lifecycle.redis_backend"):
        await asyncio.sleep(0.3)  # a few polls
    assert not backend.available and backend.gpus == 0
    warnings = [r.getMessage() for r in caplog.records if "old" in r.getMessage()]
    assert len(warnings) == 1 and "same release" in warnings[0]
