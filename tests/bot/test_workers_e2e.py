"""Redis mode end to end: the real bot against the stand-in, GPU workers as real processes.

The bot runs with ``IMAGINE_QUEUE_URL`` set (it loads no image model); each worker is
``python -m engine.worker`` on the tiny model, exactly as an operator starts one. Faults are
real: ``kill -9`` of a worker, a flushed Redis (a server of the test's own), a bot killed
mid-queue. Every accepted job must be posted exactly once, with its four PNGs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr

from tests.bot.test_queue_e2e import attached, finished_job, job_of, result_messages
from tests.redis_support import free_port

pytestmark = pytest.mark.timeout(300)
REPO_ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
SLOW_STEPS = 30  # ~3 s per 64x64 batch on the CPU: long enough to kill a worker mid-batch


class Workers:
    """``python -m engine.worker`` processes sharing one Redis and key prefix."""

    def __init__(self, tmp_path: Path, engine_settings, url: str, prefix: str):
        self.tmp_path = tmp_path
        self.url = url
        self.prefix = prefix
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "IMAGINE_MODEL": engine_settings.model,
            "IMAGINE_LORA": engine_settings.lora,
            "IMAGINE_VAE": "",
            "IMAGINE_DEVICE": "cpu",
            "IMAGINE_DTYPE": "float32",
            "IMAGINE_RESOLUTION": "64",
            "IMAGINE_TRANSLATOR": "",
            "IMAGINE_SAFETY_MODEL": "",
            "IMAGINE_MAX_BATCH_IMAGES": "8",
            "IMAGINE_WORKER_CAPACITY": "8",
            "IMAGINE_CLAIM_TIMEOUT": "4",
            "IMAGINE_HEARTBEAT_INTERVAL": "0.3",
            "IMAGINE_QUEUE_URL": url,
            "IMAGINE_QUEUE_PREFIX": prefix,
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, **env: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 (the process owns it)
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.worker"],
            cwd=self.tmp_path,  # no .env of the repository's
            env={**self.env, "IMAGINE_WORKER_NAME": name, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


@pytest.fixture
def workers(tmp_path, tiny_engine_settings, redis_url, queue_prefix):
    group = Workers(tmp_path, tiny_engine_settings, redis_url, queue_prefix)
    try:
        yield group
    finally:
        group.stop_all()


def redis_settings(bot_settings, workers: Workers, *, steps: int = 2, **changes):
    engine = bot_settings.engine.model_copy(update={"steps": steps, "max_batch_images": 8})
    return bot_settings.model_copy(
        update={
            "queue_url": SecretStr(workers.url),
            "queue_prefix": workers.prefix,
            "engine": engine,
            **changes,
        }
    )


async def wait_until(check, timeout: float, what: str, diagnose=lambda: ""):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := check()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{diagnose()}")
        await asyncio.sleep(0.1)
    return value


async def wait_workers(bot, count: int, workers: Workers) -> None:
    await wait_until(
        lambda: bot.jobs.backend.gpus >= count,
        90,
        f"{count} worker(s) online",
        lambda: "\n".join(f"--- {n}\n{workers.log(n)[-3000:]}" for n in workers.processes),
    )


async def imagine(standin, user, channel, prompt: str, seed: int):
    ix = await standin.slash_command(user, channel, "imagine", {"prompt": prompt, "seed": seed})
    await ix.wait_ack(3)
    return ix


async def posted_once(bot, standin, interactions, workers: Workers, timeout: float = 120):
    """Wait until each job is done; assert it was posted exactly once with four PNGs."""
    jobs = [await job_of(bot, ix) for ix in interactions]

    def all_posted():
        return all(result_messages(standin, job.id) for job in jobs)

    await wait_until(
        all_posted,
        timeout,
        "every job posted",
        lambda: (
            standin.describe()
            + "".join(f"\n--- {n}\n{workers.log(n)[-2000:]}" for n in list(workers.processes))
        ),
    )
    await asyncio.sleep(1.0)  # a duplicate outcome would be posted by now
    for job in jobs:
        [message] = result_messages(standin, job.id)
        assert len(message.attachments) == 4
        assert all(a.data.startswith(PNG) for a in message.attachments)
        stored = await finished_job(
            bot, next(ix for ix in interactions if ix.id == job.interaction_id)
        )
        assert stored.status == "done" and stored.result_message_id == message.id
    return jobs


async def test_two_workers_serve_several_users_in_fair_order(
    bot_process, bot_settings, standin, world, workers
):
    bot = await bot_process.start(settings=redis_settings(bot_settings, workers))
    assert not bot.runner.started  # the bot loads no image model in Redis mode
    users = [world.alice, world.bob, world.mod]
    # Each user sends three at once while the workers start; fairness interleaves them.
    interactions = []
    for user in users:
        for k in range(3):
            interactions.append(
                await imagine(standin, user, world.general, f"{user.name} {k}", 10 * k)
            )
    metrics_port = free_port()
    workers.start("w1")
    workers.start("w2", IMAGINE_METRICS_PORT=str(metrics_port))
    jobs = await posted_once(bot, standin, interactions, workers)
    released = [job_id for batch in bot.jobs.batches for job_id in batch]
    owners = {job.id: job.requester_id for job in jobs}
    for start in (0, 3, 6):  # a, b, m, a, b, m, ... not a, a, a, b, ...
        assert {owners[j] for j in released[start : start + 3]} == {u.id for u in users}
    # w2's own operator endpoints count what it made.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            metrics = await response.text()
        async with http.get(f"http://127.0.0.1:{metrics_port}/healthz") as response:
            health = await response.json()
    made = re.search(r'imagine_worker_tickets_total\{outcome="finished"\} (\d+)', metrics)
    assert made and int(float(made.group(1))) == len(
        re.findall(r"worker w2: job \d+ finished", workers.log("w2"))
    )
    assert health["ok"] and health["name"] == "w2"
    # SIGTERM: a worker finishes what it holds, says goodbye and exits 0.
    w1 = workers.processes.pop("w1")
    w1.terminate()
    assert w1.wait(30) == 0
    await wait_until(lambda: bot.jobs.backend.gpus == 1, 10, "w1 gone from the workers")
    made_by = {
        m.group(1)
        for name in ("w1", "w2")
        for m in re.finditer(r"worker (w\d): job \d+ finished", workers.log(name))
    }
    assert made_by == {"w1", "w2"}  # both GPUs worked


async def test_a_killed_worker_s_jobs_finish_on_the_other_once(
    bot_process, bot_settings, standin, world, workers
):
    workers.start("w1")
    bot = await bot_process.start(settings=redis_settings(bot_settings, workers, steps=SLOW_STEPS))
    await wait_workers(bot, 1, workers)
    interactions = [
        await imagine(standin, user, world.general, f"slow {user.name}", 7)
        for user in (world.alice, world.bob)
    ]
    # w1 takes both (capacity 8) and starts on them; mid-batch it dies without a word.
    redis = bot.jobs.backend.redis
    running = await wait_until(lambda: set(bot.jobs._running), 60, "w1 running a batch")
    claims = {await redis.get(f"{workers.prefix}:claim:{job_id}") for job_id in running}
    workers.kill("w1")
    assert claims == {b"w1"}
    assert not any(result_messages(standin, job_id) for job_id in running)
    workers.start("w2")
    await posted_once(bot, standin, interactions, workers, timeout=180)
    assert "took over ticket" in workers.log("w2")
    assert re.search(r"worker w2: job \d+ finished", workers.log("w2"))


async def test_a_flushed_redis_loses_no_job(
    bot_process,
    bot_settings,
    standin,
    world,
    tmp_path,
    tiny_engine_settings,
    own_redis,
    queue_prefix,
):
    workers = Workers(tmp_path, tiny_engine_settings, own_redis.url, queue_prefix)
    try:
        workers.start("w1")
        bot = await bot_process.start(settings=redis_settings(bot_settings, workers, steps=8))
        await wait_workers(bot, 1, workers)
        interactions = []
        for k in range(4):
            for user in (world.alice, world.bob):
                interactions.append(
                    await imagine(standin, user, world.general, f"{user.name} {k}", k)
                )
        first = await job_of(bot, interactions[0])
        await wait_until(lambda: result_messages(standin, first.id), 120, "a first result")
        redis = bot.jobs.backend.redis
        assert bot.jobs.backend.in_flight() and len(bot.queue)  # mid-queue
        await redis.flushall()  # as if Redis restarted with nothing on disk
        await posted_once(bot, standin, interactions, workers, timeout=180)
    finally:
        workers.stop_all()


async def test_a_bot_killed_mid_queue_posts_every_job_once_after_its_restart(
    bot_process, bot_settings, standin, world, workers
):
    workers.start("w1")
    settings = redis_settings(bot_settings, workers, steps=8, queue_per_user=5)
    bot = await bot_process.start(settings=settings)
    await wait_workers(bot, 1, workers)
    interactions = []
    for k in range(5):
        for user in (world.alice, world.bob):
            interactions.append(await imagine(standin, user, world.general, f"{user.name} {k}", k))
    for ix in interactions:
        await attached(bot, ix)
    first = await job_of(bot, interactions[0])
    await wait_until(lambda: result_messages(standin, first.id), 120, "a first result")
    # Mid-queue: some jobs are with the worker, some still in the bot's queue.
    assert bot.jobs.backend.in_flight() and len(bot.queue)
    await bot_process.kill()
    await asyncio.sleep(2)  # the worker goes on meanwhile; its outcomes wait in Redis
    bot = await bot_process.start(settings=settings)
    await posted_once(bot, standin, interactions, workers, timeout=180)


async def test_without_a_worker_the_status_says_so_and_the_job_runs_when_one_starts(
    bot_process, bot_settings, standin, world, workers
):
    bot = await bot_process.start(settings=redis_settings(bot_settings, workers))
    assert not bot.jobs.backend.available
    ix = await imagine(standin, world.alice, world.general, "a lighthouse", 3)
    await wait_until(
        lambda: ix.original is not None and "waiting for a GPU worker" in ix.original.content,
        20,
        "the waiting status",
        standin.describe,
    )
    workers.start("w1")
    [job] = await posted_once(bot, standin, [ix], workers)
    # V1 on the result: the variation's ticket carries image 1 to the worker (img2img there).
    [result] = result_messages(standin, job.id)
    click = await standin.click(world.alice, result, f"imagine:vary:{job.id}:1")
    await click.wait_ack(3)
    varied = await standin.wait_for_message(
        lambda m: m.interaction is click and len(m.attachments) == 4 and not m.ephemeral,
        timeout=90,
    )
    assert all(a.data.startswith(PNG) for a in varied.attachments)
    [child] = [j for j in await bot.storage.recent_jobs(world.alice.id) if j.kind == "variation"]
    assert child.parent_job_id == job.id
    for _ in range(50):  # marked done right after it is posted
        if (await bot.storage.get_job(child.id)).status == "done":
            break
        await asyncio.sleep(0.1)
    assert (await bot.storage.get_job(child.id)).status == "done"
    assert re.search(rf"worker w1: job {child.id} finished", workers.log("w1"))
    # U1: an upscale's ticket (operation and all) is made in tiles on the worker.
    click = await standin.click(world.alice, result, f"imagine:upscale:{job.id}:1")
    await click.wait_ack(3)
    upscaled = await standin.wait_for_message(
        lambda m: m.interaction is click and len(m.attachments) == 1 and not m.ephemeral,
        timeout=90,
    )
    picture = Image.open(io.BytesIO(upscaled.attachments[0].data))
    assert picture.size == (job.width * 2, job.height * 2)
    [upscale] = [j for j in await bot.storage.recent_jobs(world.alice.id) if j.kind == "upscale"]
    assert re.search(rf"worker w1: job {upscale.id} finished", workers.log("w1"))


async def test_cancel_of_a_released_ticket(bot_process, bot_settings, standin, world, workers):
    workers.start("w1")
    bot = await bot_process.start(settings=redis_settings(bot_settings, workers, steps=SLOW_STEPS))
    await wait_workers(bot, 1, workers)
    # Different sizes never share a batch: the second waits at the worker behind the first.
    running = await imagine(standin, world.alice, world.general, "first", 1)
    runs = await job_of(bot, running)
    await wait_until(lambda: runs.id in bot.jobs._running, 60, "the first job running")
    ix = await standin.slash_command(
        world.bob, world.general, "imagine", {"prompt": "second", "aspect_ratio": "16:9"}
    )
    await ix.wait_ack(3)
    waiting = await attached(bot, ix)
    await wait_until(lambda: waiting.id in bot.jobs.backend.in_flight(), 20, "second released")
    cancel_id = f"imagine:cancel:{waiting.id}"
    await wait_until(
        lambda: ix.original is not None and cancel_id in ix.original.custom_ids(),
        20,
        "a Cancel button on the released job",
        standin.describe,
    )
    click = await standin.click(world.bob, ix.original, cancel_id)
    await click.wait_ack(3)
    await posted_once(bot, standin, [running], workers)
    await asyncio.sleep(2)
    assert not result_messages(standin, waiting.id)
    assert (await bot.storage.get_job(waiting.id)).status == "cancelled"
    assert not re.search(rf"job {waiting.id} finished", workers.log("w1"))
