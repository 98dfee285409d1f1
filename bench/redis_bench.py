"""Local backend vs GPU workers over Redis, on a simulated GPU, in one run.

``python bench/redis_bench.py [--redis-url URL] [--jobs 100] [--seconds-per-image 0.02]``

Three rows, each running the same ``--jobs`` queued tickets (4 images each) through the bot's
real backend code:

- ``local``: ``LocalBackend`` + ``TicketExecutor`` on a ``SimulatedEngine`` in this process
  (today's single-process mode);
- ``redis, 1 worker`` / ``redis, 2 workers``: ``RedisBackend`` in this process, workers as
  separate ``bench/sim_worker.py`` processes (the real ``engine.worker.Worker``).

The simulated GPU sleeps ``--seconds-per-image`` per image and costs no CPU, so throughput shows
what the machinery around the GPU allows. Then the added latency per job: one job at a time
(no queue), release -> outcome stored, minus the GPU time the worker reported; the Redis path's
p50 minus the local path's p50 is what going through Redis adds. Prints a markdown table (for
BENCHMARKS.md) and writes ``--out`` JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.simulated_gpu import SimulatedEngine  # noqa: E402
from engine import EngineRunner  # noqa: E402
from engine.executor import TicketExecutor  # noqa: E402
from engine.requests import GenerationRequest  # noqa: E402
from engine.streams import StreamKeys, connect  # noqa: E402
from engine.tickets import Failed, Finished, Ticket  # noqa: E402
from lifecycle.local import LocalBackend  # noqa: E402
from lifecycle.redis_backend import RedisBackend  # noqa: E402

IMAGES = 4
BATCH = 16


def make_ticket(job_id: int) -> Ticket:
    request = GenerationRequest(
        prompt=f"bench {job_id}", seed=job_id * 10, width=64, height=64, steps=4, count=IMAGES
    )
    return Ticket(job_id=job_id, user_id=job_id % 10, request=request)


class Collector:
    """The service's side of ``on_event``: when each outcome arrived."""

    def __init__(self) -> None:
        self.done: dict[int, tuple[float, float]] = {}  # job -> (arrival, GPU seconds)
        self.changed = asyncio.Event()

    async def on_event(self, event) -> None:
        if isinstance(event, Finished | Failed):
            gpu = event.seconds if isinstance(event, Finished) else 0.0
            self.done.setdefault(event.job_id, (time.perf_counter(), gpu))
            self.changed.set()

    async def wait(self, count: int, timeout: float = 600) -> None:
        deadline = time.perf_counter() + timeout
        while len(self.done) < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(self.done)}/{count} outcomes")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1)


async def drive(backend, collector: Collector, tickets: list[Ticket]) -> float:
    """Release ``tickets`` as the service does (wait for room, hand over a batch); seconds
    until the last outcome arrived."""
    started = time.perf_counter()
    waiting = list(tickets)
    while waiting:
        room = await backend.capacity()
        batch: list[Ticket] = []
        while waiting and (not batch or (len(batch) + 1) * IMAGES <= room):
            batch.append(waiting.pop(0))
        await backend.release(batch)
    await collector.wait(len(tickets))
    return time.perf_counter() - started


async def latencies(backend, collector: Collector, first_id: int, count: int) -> list[float]:
    """Overhead per job: release -> outcome, minus its GPU time, one job at a time."""
    overheads = []
    for job_id in range(first_id, first_id + count):
        await backend.capacity()
        released = time.perf_counter()
        await backend.release([make_ticket(job_id)])
        while job_id not in collector.done:
            collector.changed.clear()
            await asyncio.wait_for(collector.changed.wait(), 30)
        arrival, gpu = collector.done[job_id]
        overheads.append(arrival - released - gpu)
    return overheads


async def local_row(args) -> dict:
    runner = EngineRunner(lambda: SimulatedEngine(args.seconds_per_image), warm_up=False)
    await runner.start()
    backend = LocalBackend(TicketExecutor(runner), max_batch_images=BATCH)
    collector = Collector()
    await backend.start(collector.on_event)
    seconds = await drive(backend, collector, [make_ticket(i) for i in range(1, args.jobs + 1)])
    overheads = await latencies(backend, collector, 10_000, args.latency_jobs)
    await backend.close()
    await runner.close()
    return {"row": "local", "workers": 1, "seconds": seconds, "overheads": overheads}


def start_workers(args, prefix: str, count: int) -> list[subprocess.Popen]:
    env = {
        **os.environ,
        "IMAGINE_QUEUE_URL": args.redis_url,
        "IMAGINE_QUEUE_PREFIX": prefix,
        "IMAGINE_MAX_BATCH_IMAGES": str(BATCH),
        "IMAGINE_WORKER_CAPACITY": str(2 * BATCH),
        "IMAGINE_HEARTBEAT_INTERVAL": "0.2",
        "IMAGINE_PROGRESS_INTERVAL": "0.5",
    }
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "bench" / "sim_worker.py"),
                "--seconds-per-image",
                str(args.seconds_per_image),
            ],
            env={**env, "IMAGINE_WORKER_NAME": f"bench-{i}"},
            cwd="/tmp",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]


async def redis_row(args, count: int) -> dict:
    prefix = f"imagine-bench-{uuid.uuid4().hex[:8]}"
    processes = start_workers(args, prefix, count)
    backend = RedisBackend(connect(args.redis_url), keys=StreamKeys(prefix), poll_interval=0.1)
    collector = Collector()
    try:
        await backend.start(collector.on_event)
        deadline = time.perf_counter() + 60
        while backend.gpus < count:
            if time.perf_counter() > deadline:
                raise TimeoutError("workers did not come online")
            await asyncio.sleep(0.1)
        tickets = [make_ticket(i) for i in range(1, args.jobs + 1)]
        seconds = await drive(backend, collector, tickets)
        overheads = await latencies(backend, collector, 10_000, args.latency_jobs)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        redis = backend.redis
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await backend.close()
    name = f"redis, {count} worker" + ("s" if count > 1 else "")
    return {"row": name, "workers": count, "seconds": seconds, "overheads": overheads}


def table(rows: list[dict], args) -> str:
    local_p50 = statistics.median(rows[0]["overheads"])
    ideal = args.jobs * IMAGES * args.seconds_per_image
    lines = [
        f"{args.jobs} queued jobs x {IMAGES} images, simulated GPU "
        f"{args.seconds_per_image * 1000:.0f} ms/image (ideal on one GPU: {ideal:.1f} s); "
        f"overhead over {args.latency_jobs} single jobs",
        "",
        "| backend | wall s | images/s | vs local | overhead p50 ms | p95 ms | added p50 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = rows[0]["seconds"]
    for row in rows:
        over = sorted(row["overheads"])
        p50 = statistics.median(over) * 1000
        p95 = over[int(0.95 * (len(over) - 1))] * 1000
        lines.append(
            f"| {row['row']} | {row['seconds']:.2f} | {args.jobs * IMAGES / row['seconds']:.1f} "
            f"| {base / row['seconds']:.2f}x | {p50:.1f} | {p95:.1f} | "
            f"{p50 - local_p50 * 1000:+.1f} |"
        )
    return "\n".join(lines)


async def main_async(args) -> None:
    rows = [await local_row(args)]
    for count in (1, 2):
        rows.append(await redis_row(args, count))
    text = table(rows, args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seconds-per-image", type=float, default=0.02)
    parser.add_argument("--latency-jobs", type=int, default=50)
    parser.add_argument("--out", default="")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
