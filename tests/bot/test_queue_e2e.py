"""The queue end to end: fairness, limits, positions, cancel, batching, progress, Discord limits.

The real bot runs against the local Discord stand-in with the tiny engine at 64x64. The only
test code between them is ``ControlledEngine``, a wrapper around the real tiny ``Engine`` that
can hold the GPU (so a queue builds up and positions can be watched), slow each step down, and
raise for prompts containing "explode".
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time

import numpy as np
import pytest
from PIL import Image

from lifecycle.service import request_for
from lifecycle.storage import Job

PNG = b"\x89PNG\r\n\x1a\n"
QUEUED = re.compile(r"#(\d+) in queue")
STEP = re.compile(r"step (\d+)/(\d+)")

pytestmark = pytest.mark.timeout(240)


class ControlledEngine:
    """The real tiny engine with test controls; everything else is forwarded to it."""

    def __init__(self, engine):
        self.engine = engine
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # a batch is waiting at (or went through) the gate
        self.step_delay = 0.0  # seconds per denoising step, to make progress observable
        self.batch_delay = 0.0  # extra seconds per batch, to make positions move slowly
        self.calls: list[list[str]] = []  # prompts of every generate_batch call

    def generate_batch(self, requests, progress=None, **options):
        self.calls.append([r.prompt for r in requests])
        self.entered.set()
        self.gate.wait(timeout=120)
        if any("explode" in r.prompt for r in requests):
            raise RuntimeError("simulated engine crash")
        if self.batch_delay:
            time.sleep(self.batch_delay)
        slowed = progress
        if progress is not None and self.step_delay:

            def slowed(step):
                progress(step)
                time.sleep(self.step_delay)

        return self.engine.generate_batch(requests, slowed, **options)

    def __getattr__(self, name):
        return getattr(self.engine, name)


async def start_bot(bot_process, bot_settings, *, engine_settings=None, **changes):
    """Start the real bot with a ControlledEngine around a freshly loaded tiny engine."""
    from engine import Engine

    engine_settings = engine_settings or bot_settings.engine
    controlled = ControlledEngine(await asyncio.to_thread(Engine.load, engine_settings))
    settings = bot_settings.model_copy(update={"engine": engine_settings, **changes})
    bot = await bot_process.start(settings=settings, load_engine=lambda: controlled)
    return bot, controlled


async def wait_until(check, timeout: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def job_of(bot, ix) -> Job:
    """The stored job of an accepted interaction."""

    async def find():
        for job in await bot.storage.recent_jobs(ix.user.id, limit=50):
            if job.interaction_id == ix.id:
                return job
        return None

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        job = await find()
        if job is not None:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"no job for interaction {ix.id}")


async def finished_job(bot, ix) -> Job:
    """The job of ``ix`` once it is stored as finished (stored right after posting)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        job = await job_of(bot, ix)
        if job.finished or loop.time() > deadline:
            return job
        await asyncio.sleep(0.05)


async def attached(bot, ix) -> Job:
    """Wait until the bot has recorded the job's status message."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        job = await job_of(bot, ix)
        if job.status_message_id is not None:
            return job
        if loop.time() > deadline:
            raise AssertionError(f"no status message recorded for interaction {ix.id}")
        await asyncio.sleep(0.05)


def contents(message) -> list[str]:
    return [r.get("content") or "" for r in message.revisions]


def positions(message) -> list[int]:
    shown = []
    for text in contents(message):
        match = QUEUED.search(text)
        if match and (not shown or shown[-1] != int(match.group(1))):
            shown.append(int(match.group(1)))
    return shown


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def result_messages(standin, job_id: int) -> list:
    return [
        m
        for m in standin.messages(include_deleted=False)
        if m.author is standin.bot_user
        and m.attachments
        and re.search(rf"\bjob {job_id}\b", m.content)
    ]


async def test_twenty_users_three_jobs_fair_limits_positions_cancel_batching(
    bot_process, bot_settings, standin, world
):
    """20 users x 3 jobs while the GPU is busy: all answered once, in fair order, in batches."""
    engine_settings = bot_settings.engine.model_copy(update={"max_batch_images": 16})
    bot, engine = await start_bot(
        bot_process,
        bot_settings,
        engine_settings=engine_settings,
        queue_max_jobs=61,
        queue_per_user=3,
    )
    users = [standin.add_user(f"user{i}") for i in range(23)]
    channel = world.general

    # user0's job takes the GPU and holds it, so everything after it queues up.
    engine.gate.clear()
    blocker = await standin.slash_command(users[0], channel, "imagine", {"prompt": "blocker"})
    await blocker.wait_ack(3)
    await asyncio.to_thread(engine.entered.wait, 30)

    # Each user sends all three at once: plain FIFO would run user1's three first.
    accepted = []
    for i in range(1, 21):
        for k in range(1, 4):
            ix = await standin.slash_command(
                users[i], channel, "imagine", {"prompt": f"u{i} j{k}", "seed": 1000 * i + k}
            )
            accepted.append(ix)
    for ix in accepted:
        await ix.wait_ack(3)
        assert ix.ack_type == 5 and not ix.ephemeral

    # Every waiting job shows its place in the queue, with a requester-only Cancel button.
    await wait_until(
        lambda: all(ix.original is not None and positions(ix.original) for ix in accepted),
        30,
        "a queue position on every waiting job",
    )
    assert len(bot.queue) == 60
    # Newcomers' first jobs overtook earlier users' second ones while the burst arrived; each
    # message catches up (positions beyond 10 are edited at most every position / 5 s).
    await wait_until(
        lambda: sorted(positions(ix.original)[-1] for ix in accepted) == list(range(1, 61)),
        30,
        "every message to show its final position",
    )
    assert "starts in about" in accepted[-1].original.content
    assert any(c.startswith("imagine:cancel:") for c in accepted[-1].original.custom_ids())

    # Per-user limit: a fourth job is refused at once, ephemerally, and nothing is lost.
    fourth = await standin.slash_command(users[2], channel, "imagine", {"prompt": "u2 j4"})
    answer = await fourth.wait_response(5)
    assert answer.ephemeral and "You already have 3 jobs waiting" in answer.content
    assert len(bot.queue) == 60

    # Global bound: the 61st queued job fits, the 62nd is refused with a clear message.
    late = await standin.slash_command(users[21], channel, "imagine", {"prompt": "u21 late"})
    await late.wait_ack(3)
    full = await standin.slash_command(users[22], channel, "imagine", {"prompt": "u22 full"})
    answer = await full.wait_response(5)
    assert answer.ephemeral and "queue is full" in answer.content
    assert len(bot.queue) == 61

    # Cancel: only the requester may; it removes the job and everyone behind moves up.
    late_job = await job_of(bot, late)
    cancel_id = f"imagine:cancel:{late_job.id}"
    await wait_until(
        lambda: late.original is not None and cancel_id in late.original.custom_ids(),
        10,
        "the Cancel button",
    )
    other = await standin.click(users[22], late.original, cancel_id)
    refused = await other.wait_response(5)
    assert refused.ephemeral
    # A newcomer joins the current round: behind everyone's first job, not behind all 60.
    assert bot.queue.position(late_job.id) == 21
    mine = await standin.click(users[21], late.original, cancel_id)
    await mine.wait_ack(3)
    assert mine.ack_type == 7 and "Cancelled" in late.original.content
    assert not late.original.custom_ids()
    assert (await bot.storage.get_job(late_job.id)).status == "cancelled"
    assert len(bot.queue) == 60

    # The late job's coming and going moved the jobs behind it: let their messages catch up.
    await wait_until(
        lambda: sorted(positions(ix.original)[-1] for ix in accepted) == list(range(1, 61)),
        30,
        "every message to show its position after the cancel",
    )

    # Let the GPU go; a small pause per batch lets positions visibly move.
    engine.batch_delay = 0.3
    seen = {ix.id: len(positions(ix.original)) for ix in accepted}
    engine.gate.set()
    for ix in [blocker, *accepted]:
        await standin.wait_for_message(
            lambda m, ix=ix: m.interaction is ix and len(m.attachments) == 4, timeout=120
        )

    jobs = {ix.id: await finished_job(bot, ix) for ix in accepted}
    owner = {job.id: job.requester_id for job in jobs.values()}
    # Answered exactly once: one result message per job, in its own interaction message.
    for ix in accepted:
        job = jobs[ix.id]
        assert job.status == "done"
        [message] = result_messages(standin, job.id)
        assert message is ix.original and not ix.followups
        assert [a.data[:8] for a in message.attachments] == [PNG] * 4
    assert result_messages(standin, late_job.id) == []
    assert late_job.id not in {j for batch in bot.jobs.batches for j in batch}

    # Fair order: nobody's k-th job started before every user's (k-1)-th had started.
    started = [j for batch in bot.jobs.batches for j in batch if j in owner]
    assert sorted(started) == sorted(owner)
    nth: dict[int, int] = {}
    rank = {}
    for job_id in sorted(owner):  # a user's own jobs run in the order they were accepted
        nth[owner[job_id]] = nth.get(owner[job_id], 0) + 1
        rank[job_id] = nth[owner[job_id]]
    ranks = [rank[j] for j in started]
    assert ranks == sorted(ranks), f"unfair start order: {ranks}"

    # Dynamic batching: same-size jobs ran four at a time (16 images).
    sizes = [len(b) for b in bot.jobs.batches if set(b) <= set(owner)]
    assert max(sizes) == 4 and sum(sizes) == 60

    # Positions were updated as the queue moved, and never went backwards.
    moved = [positions(ix.original)[seen[ix.id] - 1 :] for ix in accepted]
    assert all(p == sorted(p, reverse=True) for p in moved), moved
    assert sum(len(p) >= 2 for p in moved) >= 5, moved

    # A batched result equals the same job run alone (up to 8-bit rounding of BLAS noise).
    engine.batch_delay = 0.0
    for ix in (accepted[0], accepted[-1]):
        job = jobs[ix.id]
        [alone] = await bot.runner.generate_batch([request_for(job)])
        for attachment, image in zip(ix.original.attachments, alone.images, strict=True):
            diff = np.abs(pixels(attachment.data) - np.asarray(image.image.convert("RGB")))
            assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert standin.unknown_routes == []


async def test_progress_preview_limits_token_failures_and_deleted_messages(
    bot_process, bot_settings, standin, world, tiny_taesd_dir
):
    """One bot, several jobs: what users see while waiting and when things go wrong."""
    engine_settings = bot_settings.engine.model_copy(
        update={"preview_vae": str(tiny_taesd_dir), "max_batch_images": 8}
    )
    bot, engine = await start_bot(bot_process, bot_settings, engine_settings=engine_settings)
    alice, bob, channel = world.alice, world.bob, world.general

    # Progress: "step n/4" edits, at most about one per second, with a preview attachment.
    engine.step_delay = 0.7
    ix = await standin.slash_command(alice, channel, "imagine", {"prompt": "a slow fox"})
    await ix.wait_ack(3)
    result = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == 4, timeout=60
    )
    steps = [STEP.search(c) for c in contents(result)]
    steps = [int(m.group(1)) for m in steps if m]
    assert len(steps) >= 2 and steps == sorted(steps), contents(result)
    assert all(m.group(2) == "4" for m in map(STEP.search, contents(result)) if m)
    previews = [a["filename"] for r in result.revisions for a in r.get("attachments", ())]
    assert any(name.startswith("preview") for name in previews), previews
    assert all(not a.filename.startswith("preview") for a in result.attachments)
    edits = [
        r.time
        for r in standin.requests_to("PATCH", f"/webhooks/{standin.application_id}/{ix.token}/")
    ]
    progress_edits = edits[:-1]  # the last one is the result itself
    gaps = np.diff(progress_edits)
    assert len(progress_edits) >= 2 and gaps.min() > 0.8, gaps
    engine.step_delay = 0.0

    # Over the guild's attachment limit: re-encoded smaller and said so in the message.
    world.guild.attachment_size_limit = 6000  # a 64x64 noise PNG is ~12 KB
    ix = await standin.slash_command(alice, channel, "imagine", {"prompt": "tight", "seed": 3})
    result = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == 4, timeout=60
    )
    assert all(a.size <= 6000 for a in result.attachments)
    assert all(a.filename.endswith((".jpg", ".webp")) for a in result.attachments)
    assert "to fit Discord's 5 KiB limit" in result.content
    world.guild.attachment_size_limit = 10 * 2**20

    # Expired interaction token: the result comes as a channel message that pings the user.
    engine.gate.clear()
    engine.entered.clear()
    ix = await standin.slash_command(bob, channel, "imagine", {"prompt": "late owl", "seed": 9})
    await ix.wait_ack(3)
    await asyncio.to_thread(engine.entered.wait, 30)
    await attached(bot, ix)  # the bot has fetched its @original message with the token
    standin.expire_token(ix)
    engine.gate.set()
    late = await standin.wait_for_message(
        lambda m: m.interaction is None and len(m.attachments) == 4 and "late owl" in m.content,
        timeout=60,
    )
    assert late.author is standin.bot_user and bob in late.mentions
    assert f"<@{bob.id}> your images are ready" in late.content
    job = await finished_job(bot, ix)
    assert job.status == "done" and job.result_message_id == late.id
    assert ix.original.deleted  # the stale "step"/"queued" message is removed

    # A failing engine call fails that job only, with a message; the next job succeeds.
    engine.gate.clear()
    engine.entered.clear()
    holder = await standin.slash_command(bob, channel, "imagine", {"prompt": "holder"})
    await asyncio.to_thread(engine.entered.wait, 30)
    boom = await standin.slash_command(alice, channel, "imagine", {"prompt": "explode", "seed": 1})
    after = await standin.slash_command(bob, channel, "imagine", {"prompt": "calm sea", "seed": 2})
    for waiting in (holder, boom, after):
        await waiting.wait_ack(3)
    engine.gate.set()
    failed = await standin.wait_for_message(
        lambda m: m.interaction is boom and "Something went wrong" in m.content, timeout=60
    )
    assert not failed.attachments and not failed.custom_ids()
    assert (await finished_job(bot, boom)).status == "failed"
    for fine in (holder, after):
        await standin.wait_for_message(
            lambda m, ix=fine: m.interaction is ix and len(m.attachments) == 4, timeout=60
        )
    # "explode" and "calm sea" shared a batch; the batch failed, then each ran alone.
    assert ["explode", "calm sea"] in engine.calls and ["calm sea"] in engine.calls

    # The status message deleted while queued (10008 on edit): the job still delivers.
    engine.gate.clear()
    engine.entered.clear()
    holder = await standin.slash_command(bob, channel, "imagine", {"prompt": "holder two"})
    await asyncio.to_thread(engine.entered.wait, 30)
    ix = await standin.slash_command(alice, channel, "imagine", {"prompt": "gone", "seed": 5})
    await ix.wait_ack(3)
    await wait_until(
        lambda: ix.original is not None and positions(ix.original), 10, "a queue position"
    )
    # The stand-in has no public "user deletes a message" call yet: use its own helper.
    await standin._delete_message(ix.original)
    engine.step_delay = 0.4  # progress edits are attempted (and hit 10008) while it runs
    engine.gate.set()
    posted = await standin.wait_for_message(
        lambda m: m.interaction is None and len(m.attachments) == 4 and "gone" in m.content,
        timeout=60,
    )
    assert alice in posted.mentions
    job = await finished_job(bot, ix)
    assert job.status == "done" and job.result_message_id == posted.id
    assert any(r.status == 404 and r.response.get("code") == 10008 for r in standin.failed_requests)
    engine.step_delay = 0.0
    await standin.wait_for_message(
        lambda m: m.interaction is holder and len(m.attachments) == 4, timeout=60
    )
