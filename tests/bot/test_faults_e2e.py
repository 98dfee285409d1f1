"""Fault tolerance end to end: the GPU feeder outlives storage and file errors, the generation
watchdog, U as an ordinary job, translation limits, and safety verdicts that keep their numbers.
Real bot, local Discord stand-in, tiny engine, real SQLite and files."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import sqlite3

import pytest
from PIL import Image

from bot.i18n import t
from tests.bot.test_conversation_e2e import SlowEngine, click_for_images, imagine
from tests.bot.test_imagine_e2e import job_for_message, seeds_in
from tests.tiny_marian import build_tiny_marian


async def wait_for_status(bot, job_id: int, status: str, timeout: float = 30.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        job = await bot.storage.get_job(job_id)
        if job is not None and job.status == status:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never became {status}")


async def test_a_file_error_outside_the_engine_fails_only_its_job(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, seed=1)
    job = await job_for_message(bot, result.id)
    # The stored set is damaged: its first image is a directory now (not "missing").
    folder = bot.settings.images_dir / str(job.id)
    [first] = [p for p in folder.iterdir() if p.name.startswith("1-")]
    first.unlink()
    first.mkdir()

    ix = await standin.click(world.alice, result, f"imagine:vary:{job.id}:1")
    failed = await standin.wait_for_message(
        lambda m: m.interaction is ix and "⚠️" in m.content, timeout=30
    )
    assert "try again" in failed.content.lower()
    # The feeder is still alive: the next job is made and posted.
    _, later = await imagine(standin, world.bob, world.general, prompt="a later fox")
    assert len(later.attachments) == 4


async def test_a_storage_error_fails_only_its_job_and_the_dispatcher_goes_on(
    bot_process, standin, world, monkeypatch
):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, seed=2)
    job = await job_for_message(bot, result.id)
    # The engine refuses the damaged source image, and recording that failure hits a full disk.
    folder = bot.settings.images_dir / str(job.id)
    [first] = [p for p in folder.iterdir() if p.name.startswith("1-")]
    first.write_bytes(b"not an image")
    real_mark_failed = bot.storage.mark_failed
    calls = []

    async def disk_full_once(job_id, error):
        calls.append(job_id)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return await real_mark_failed(job_id, error)

    monkeypatch.setattr(bot.storage, "mark_failed", disk_full_once)
    ix = await standin.click(world.alice, result, f"imagine:vary:{job.id}:1")
    failed = await standin.wait_for_message(
        lambda m: m.interaction is ix and "⚠️" in m.content, timeout=30
    )
    assert calls and "image" in failed.content.lower()

    _, later = await imagine(standin, world.bob, world.general, prompt="a later fox")
    assert len(later.attachments) == 4
    assert not bot.jobs._dispatcher.done()
    await bot_process.stop()  # does not re-raise anything


async def test_the_watchdog_fails_a_stuck_batch_and_exits_non_zero(
    bot_process, standin, world, tiny_engine_settings, caplog
):
    from engine import Engine

    slow = SlowEngine(Engine.load(tiny_engine_settings))
    settings = bot_process.settings.model_copy(update={"generation_timeout": 1.0})
    bot = await bot_process.start(settings, load_engine=lambda: slow)
    ix = await standin.slash_command(world.alice, world.general, "imagine", {"prompt": "a hang"})
    await ix.wait_ack(3)
    with caplog.at_level(logging.CRITICAL, logger="engine.executor"):
        failed = await standin.wait_for_message(
            lambda m: m.interaction is ix and "⚠️" in m.content, timeout=30
        )
        assert t("generation_timed_out", "en-US") in failed.content
        await asyncio.wait_for(bot_process.task, 30)  # the bot shut itself down
    assert bot.exit_code == 3
    assert "IMAGINE_GENERATION_TIMEOUT" in caplog.text
    slow.release.set()
    bot = await bot_process.start()
    [job] = await bot.storage.recent_jobs(world.alice.id)
    assert job.status == "failed"  # not run again after the restart
    assert await bot.storage.unfinished_jobs() == []


async def test_upscale_is_an_ordinary_job_that_reads_the_stored_image(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, seed=40)
    job = await job_for_message(bot, result.id)
    _, single = await click_for_images(
        standin, world.alice, result, f"imagine:upscale:{job.id}:3", count=1
    )
    upscale = await job_for_message(bot, single.id)
    assert upscale.kind == "upscale" and upscale.status == "done" and upscale.seeds == (42,)
    assert bot.jobs.batches[-1] == (upscale.id,)  # a GPU job of its own
    assert await bot.jobs.has_image(upscale, 1)  # stored as its own set

    # V on the upscaled image works from its file, at the size the set was generated at.
    _, varied = await click_for_images(standin, world.alice, single, f"imagine:vary:{upscale.id}:1")
    assert {Image.open(io.BytesIO(a.data)).size for a in varied.attachments} == {
        (job.width, job.height)
    }

    # A purged set: U, V and S say so (there is no picture to work from any more).
    shutil.rmtree(bot.settings.images_dir / str(job.id))
    for action in ("upscale", "vary", "subtle"):
        gone = await standin.click(world.alice, result, f"imagine:{action}:{job.id}:2")
        assert (await gone.wait_response(5)).content == t("images_purged", "en-US")


async def test_a_failed_upscale_is_not_posted_again_after_a_restart(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, seed=7)
    job = await job_for_message(bot, result.id)
    world.guild.attachment_size_limit = 100  # Discord refuses the image: the edit fails
    ix = await standin.click(world.alice, result, f"imagine:upscale:{job.id}:1")
    await ix.wait_ack(3)
    await standin.wait_for_message(lambda m: m.interaction is ix and "⚠️" in m.content, timeout=30)
    [upscale] = [j for j in await bot.storage.recent_jobs(world.alice.id) if j.kind == "upscale"]
    assert upscale.status == "failed"

    world.guild.attachment_size_limit = 10 * 2**20
    await bot_process.stop()
    bot = await bot_process.start()
    assert await bot.storage.unfinished_jobs() == []
    await asyncio.sleep(0.5)
    assert not [m for m in standin.messages() if len(m.attachments) == 1]


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    return build_tiny_marian(tmp_path_factory.mktemp("marian"))


async def test_blocked_prompts_never_reach_the_translator_and_long_ones_are_cut(
    bot_process, standin, world, marian_dir
):
    engine = bot_process.settings.engine.model_copy(update={"translator": str(marian_dir)})
    bot = await bot_process.start(bot_process.settings.model_copy(update={"engine": engine}))
    calls = bot.translator.model_calls
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "裸体 " + "猫" * 5000}
    )
    assert (await ix.wait_response(10)).content == t("prompt_blocked", "en-US")
    assert bot.translator.model_calls == calls  # refused before translating

    long_prompt = "一只猫在窗台上睡觉，" * 300  # 3000 characters
    _, result = await imagine(standin, world.alice, world.general, prompt=long_prompt)
    assert "first 500 characters were translated" in result.content
    job = await job_for_message(bot, result.id)
    assert job.prompt == long_prompt.strip()


@pytest.fixture(scope="module")
def half_flagging_classifier(tmp_path_factory, tiny_engine_settings):
    """A tiny classifier calibrated on the four images of one seed so that exactly two of
    them are flagged: (classifier folder, seed, flagged 1-based numbers)."""
    import torch

    from engine import Engine, make_request
    from engine.safety import SafetyChecker
    from tests.engine.test_safety import build_tiny_classifier

    seed = 123
    engine = Engine.load(tiny_engine_settings)
    request = make_request("a red fox", settings=tiny_engine_settings, seed=seed)
    [result] = engine.generate_batch([request])
    images = [g.image.convert("RGB") for g in result.images]
    labels = {0: "normal", 1: "nsfw"}
    folder = build_tiny_classifier(tmp_path_factory.mktemp("half"), nsfw_bias=0.0, labels=labels)
    checker = SafetyChecker(str(folder))
    model = checker._model
    with torch.no_grad():
        torch.manual_seed(1)
        model.classifier.weight.normal_(0, 10.0)
        inputs = checker._processor(images=images, return_tensors="pt")
        logits = model(**inputs).logits
    margin = (logits[:, 1] - logits[:, 0]).tolist()
    low, high = sorted(margin)[1:3]
    assert high - low > 1e-2, "calibration needs two clearly separated halves"
    with torch.no_grad():
        model.classifier.bias[1] = -(low + high) / 2
    model.save_pretrained(folder)
    flagged = tuple(i for i, m in enumerate(margin, start=1) if m > (low + high) / 2)
    assert len(flagged) == 2
    return folder, seed, flagged


async def test_withheld_and_flagged_images_keep_their_numbers(
    bot_process, standin, world, half_flagging_classifier
):
    classifier, seed, flagged = half_flagging_classifier
    engine = bot_process.settings.engine.model_copy(update={"safety_model": str(classifier)})
    bot = await bot_process.start(bot_process.settings.model_copy(update={"engine": engine}))
    await bot.storage.update_guild_settings(world.guild.id, showcase_channel_id=world.showcase.id)

    # Spoiler mode: flagged images are spoilers here, upscaled (U) and in the showcase.
    _, result = await imagine(standin, world.alice, world.general, seed=seed)
    job = await job_for_message(bot, result.id)
    assert job.flagged == flagged and job.withheld == ()
    assert [a.spoiler for a in result.attachments] == [i in flagged for i in range(1, 5)]
    for index in (flagged[0], next(i for i in range(1, 5) if i not in flagged)):
        _, single = await click_for_images(
            standin, world.alice, result, f"imagine:upscale:{job.id}:{index}", count=1
        )
        upscale = await job_for_message(bot, single.id)
        # What was made from a hidden picture stays hidden; a new picture is checked anew.
        assert single.attachments[0].spoiler == (1 in upscale.flagged)
        if index in flagged:
            assert upscale.flagged == (1,)
    share = await standin.click(world.alice, result, f"imagine:share:{job.id}")
    await share.wait_ack(3)
    posted = await standin.wait_for_message(
        lambda m: len(m.attachments) == 4, channel=world.showcase, timeout=10
    )
    assert [a.spoiler for a in posted.attachments] == [i in flagged for i in range(1, 5)]

    # Withhold mode: the others keep their numbers, seeds and buttons.
    await bot.storage.update_guild_settings(world.guild.id, safety_mode="withhold")
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a red fox", "seed": seed}
    )
    kept = [i for i in range(1, 5) if i not in flagged]
    withheld = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == len(kept), timeout=60
    )
    held_job = await job_for_message(bot, withheld.id)
    assert held_job.withheld == flagged
    assert seeds_in(withheld.content) == [seed, seed + 1, seed + 2, seed + 3]
    assert [a.filename.rsplit("_", 1)[1] for a in withheld.attachments] == [
        f"{i}.png" for i in kept
    ]
    upscales = sorted(c for c in withheld.custom_ids() if ":upscale:" in c)
    assert upscales == [f"imagine:upscale:{held_job.id}:{i}" for i in kept]
    # U of a kept image upscales that image, with its seed.
    _, single = await click_for_images(
        standin, world.alice, withheld, f"imagine:upscale:{held_job.id}:{kept[-1]}", count=1
    )
    assert seeds_in(single.content) == [seed + kept[-1] - 1]


async def wait_gone(path, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while path.exists():
        assert loop.time() < deadline, f"{path} was not removed"
        await asyncio.sleep(0.05)


async def test_retention_removes_old_unshared_sets_and_u_regenerates_them(
    bot_process, standin, world
):
    import os
    import time

    bot = await bot_process.start()
    await bot.storage.update_guild_settings(world.guild.id, showcase_channel_id=world.showcase.id)
    _, old = await imagine(standin, world.alice, world.general, prompt="an old fox", seed=30)
    old_job = await job_for_message(bot, old.id)
    _, kept = await imagine(standin, world.alice, world.general, prompt="a shared fox", seed=50)
    kept_job = await job_for_message(bot, kept.id)
    share = await standin.click(world.alice, kept, f"imagine:share:{kept_job.id}")
    await standin.wait_for_message(
        lambda m: m.interaction is share and "showcase" in m.content.lower(), timeout=10
    )
    await bot_process.stop()
    images = bot_process.settings.images_dir
    week_ago = time.time() - 7 * 86400
    for job in (old_job, kept_job):
        for path in (images / str(job.id)).iterdir():
            os.utime(path, (week_ago, week_ago))

    # A restart with a 2-day limit sweeps at once: the shared set stays.
    bot = await bot_process.start(bot_process.settings.model_copy(update={"retention_days": 2}))
    await wait_gone(images / str(old_job.id))
    assert (images / str(kept_job.id)).is_dir()

    gone = await standin.click(world.alice, old, f"imagine:vary:{old_job.id}:1")
    assert (await gone.wait_response(5)).content == t("images_purged", "en-US")
    star = await standin.click(world.alice, old, f"imagine:share:{old_job.id}")
    assert (await star.wait_response(5)).content == t("images_purged", "en-US")
    assert await bot.storage.get_share(old_job.id, 0) is None  # no half-made share is left
    upscale = await standin.click(world.alice, old, f"imagine:upscale:{old_job.id}:2")
    assert (await upscale.wait_response(5)).content == t("images_purged", "en-US")

    # 🗑 removes the set's stored files with its message, shared or not.
    trash = await standin.click(world.alice, kept, f"imagine:delete:{kept_job.id}")
    await trash.wait_ack(3)
    await wait_gone(images / str(kept_job.id))
