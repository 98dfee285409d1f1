"""Buttons, reply-to-regenerate, sharing, history/info, and nothing lost across restarts.

Real discord.py client, local Discord stand-in, tiny SDXL engine, real SQLite file.
"""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
from PIL import Image

from bot.i18n import t
from tests.bot.test_imagine_e2e import job_for_message, seeds_in

PNG = b"\x89PNG\r\n\x1a\n"


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


async def wait_deleted(message, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not message.deleted:
        assert loop.time() < deadline, f"message {message.id} was not deleted"
        await asyncio.sleep(0.02)


async def imagine(standin, user, channel, prompt="a red fox", **options):
    """Run /imagine and return (interaction, result message with 4 images)."""
    ix = await standin.slash_command(user, channel, "imagine", {"prompt": prompt, **options})
    await ix.wait_ack(3)
    message = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == 4, timeout=60
    )
    return ix, message


async def click_for_images(standin, user, message, custom_id, count=4):
    ix = await standin.click(user, message, custom_id)
    await ix.wait_ack(3)
    result = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == count and not m.ephemeral,
        timeout=60,
    )
    return ix, result


async def test_reroll_posts_four_new_images_in_a_new_message(bot_process, standin, world):
    bot = await bot_process.start()
    _, first = await imagine(standin, world.alice, world.general, seed=10)
    job = await job_for_message(bot, first.id)
    before = [a.data for a in first.attachments]

    _, second = await click_for_images(standin, world.bob, first, f"imagine:reroll:{job.id}")
    assert second.id != first.id
    assert [a.data[:8] for a in second.attachments] == [PNG] * 4
    new_seeds = seeds_in(second.content)
    assert len(new_seeds) == 4 and new_seeds != [10, 11, 12, 13]
    assert "a red fox" in second.content
    # The clicked message keeps its images.
    assert not first.deleted and [a.data for a in first.attachments] == before
    child = await job_for_message(bot, second.id)
    assert child.kind == "reroll" and child.parent_job_id == job.id
    assert child.requester_id == world.bob.id


async def test_upscale_posts_that_image_at_twice_the_size_and_info_reproduces_it(
    bot_process, standin, world
):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, seed=500)
    job = await job_for_message(bot, result.id)
    _, single = await click_for_images(
        standin, world.alice, result, f"imagine:upscale:{job.id}:2", count=1
    )
    upscaled = Image.open(io.BytesIO(single.attachments[0].data))
    assert upscaled.size == (job.width * 2, job.height * 2)
    assert seeds_in(single.content) == [501]
    assert f"upscaled 2× from image 2 of [job {job.id}](<" in single.content
    ids = single.custom_ids()
    upscale = await job_for_message(bot, single.id)
    for action in ("subtle", "vary", "zoom2", "zoom15"):
        assert f"imagine:{action}:{upscale.id}:1" in ids
    assert (upscale.kind, upscale.parent_job_id, upscale.parent_index) == ("upscale", job.id, 2)
    assert upscale.strength == 0.3 and upscale.seeds == (501,)

    # /info says how to make these pixels again; doing so makes them exactly.
    info = await standin.slash_command(world.alice, world.general, "info", {"job": upscale.id})
    text = (await info.wait_response(5)).content
    assert "`--seed 501`" in text and "strength:        0.3" in text
    reply = await standin.user_message(
        world.alice, world.general, "--seed 501", reply_to=single, mentions_bot=True
    )
    again = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 1, timeout=60
    )
    assert again.attachments[0].data == single.attachments[0].data
    assert (await job_for_message(bot, again.id)).kind == "upscale"


async def test_zoom_out_paints_four_pictures_around_the_image_at_its_size(
    bot_process, standin, world
):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, seed=300)
    job = await job_for_message(bot, result.id)
    _, single = await click_for_images(
        standin, world.alice, result, f"imagine:upscale:{job.id}:1", count=1
    )
    upscale = await job_for_message(bot, single.id)
    # The new buttons are persistent like the others: they work after a restart.
    await bot_process.stop()
    bot = await bot_process.start()
    _, zoomed = await click_for_images(standin, world.bob, single, f"imagine:zoom2:{upscale.id}:1")
    # Made at the size the picture was generated at (not the upscale's), four new seeds.
    sizes = {Image.open(io.BytesIO(a.data)).size for a in zoomed.attachments}
    assert sizes == {(job.width, job.height)}
    zoom = await job_for_message(bot, zoomed.id)
    assert (zoom.kind, zoom.zoom, zoom.parent_job_id, zoom.requester_id) == (
        "zoom",
        2.0,
        upscale.id,
        world.bob.id,
    )
    assert f"Zoom Out 2× of image 1 of [job {upscale.id}](<" in zoomed.content
    # The zoomed set is a set like any other: U, V, S on each picture.
    assert f"imagine:upscale:{zoom.id}:4" in zoomed.custom_ids()
    _, wider = await click_for_images(standin, world.bob, zoomed, f"imagine:subtle:{zoom.id}:3")
    subtle = await job_for_message(bot, wider.id)
    assert subtle.kind == "variation" and subtle.strength == 0.35 and subtle.parent_index == 3
    _, closer = await click_for_images(standin, world.bob, single, f"imagine:zoom15:{upscale.id}:1")
    assert (await job_for_message(bot, closer.id)).zoom == 1.5
    # 🔄 on a zoom zooms the same picture again, with new seeds.
    _, rerolled = await click_for_images(standin, world.bob, zoomed, f"imagine:reroll:{zoom.id}")
    again = await job_for_message(bot, rerolled.id)
    assert (again.kind, again.parent_job_id, again.zoom) == ("zoom", upscale.id, 2.0)
    assert set(again.seeds).isdisjoint(zoom.seeds)


async def test_variations_stay_near_the_image_with_new_seeds(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, seed=77)
    job = await job_for_message(bot, result.id)
    source = pixels(result.attachments[0].data).astype(float)
    strengths = {}
    for action in ("vary", "subtle"):
        _, varied = await click_for_images(
            standin, world.alice, result, f"imagine:{action}:{job.id}:1"
        )
        seeds = seeds_in(varied.content)
        assert len(seeds) == 4 and 77 not in seeds
        variations = [pixels(a.data).astype(float) for a in varied.attachments]
        assert all(v.shape == source.shape for v in variations)
        assert all(not np.array_equal(v, source) for v in variations)
        child = await job_for_message(bot, varied.id)
        assert child.kind == "variation" and child.parent_index == 1
        strengths[action] = child.strength
        assert ("Vary (Strong)" if action == "vary" else "Vary (Subtle)") in varied.content
    assert strengths == {"vary": 0.7, "subtle": 0.35}
    # What /info says reproduces it: a --seed reply runs the same variation of the same image.
    info = await standin.slash_command(world.alice, world.general, "info", {"job": child.id})
    assert f"`--seed {seeds[0]}`" in (await info.wait_response(5)).content
    reply = await standin.user_message(
        world.alice, world.general, f"--seed {seeds[0]}", reply_to=varied
    )
    again = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert [a.data for a in again.attachments] == [a.data for a in varied.attachments]


async def test_delete_is_for_the_requester_or_moderators(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general)
    job = await job_for_message(bot, result.id)
    button = f"imagine:delete:{job.id}"

    nosy = await standin.click(world.bob, result, button)
    answer = await nosy.wait_response(5)
    assert answer.ephemeral and answer.content == t("not_yours", "en-US")
    assert not result.deleted

    mod = await standin.click(world.mod, result, button)
    await mod.wait_ack(3)
    await wait_deleted(result)
    assert (await bot.storage.get_job(job.id)).result_message_id is None

    _, own = await imagine(standin, world.alice, world.general, prompt="a second fox")
    own_job = await job_for_message(bot, own.id)
    ix = await standin.click(world.alice, own, f"imagine:delete:{own_job.id}")
    await ix.wait_ack(3)
    await wait_deleted(own)


async def test_share_to_showcase_once_and_settings_need_manage_server(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, prompt="a lighthouse")
    job = await job_for_message(bot, result.id)
    star = f"imagine:share:{job.id}"

    unset = await standin.click(world.alice, result, star)
    assert (await unset.wait_response(5)).content == t("showcase_not_set", "en-US")

    refused = await standin.slash_command(
        world.bob, world.general, "imagine-settings", {"showcase": world.showcase}
    )
    assert (await refused.wait_response(5)).content == t("no_permission", "en-US")
    assert (await bot.storage.guild_settings(world.guild.id)).showcase_channel_id is None

    viewed = await standin.slash_command(world.bob, world.general, "imagine-settings", {})
    assert "not set" in (await viewed.wait_response(5)).content

    ok = await standin.slash_command(
        world.mod, world.general, "imagine-settings", {"showcase": world.showcase}
    )
    assert (await ok.wait_response(5)).ephemeral
    assert (
        await bot.storage.guild_settings(world.guild.id)
    ).showcase_channel_id == world.showcase.id

    # Only the requester (or a moderator) may put a prompt on show.
    nosy = await standin.click(world.bob, result, star)
    assert (await nosy.wait_response(5)).content == t("share_not_allowed", "en-US")

    shared = await standin.click(world.alice, result, star)
    await shared.wait_ack(3)
    posted = await standin.wait_for_message(
        lambda m: len(m.attachments) == 4, channel=world.showcase, timeout=10
    )
    assert "a lighthouse" in posted.content and f"Shared by <@{world.alice.id}>" in posted.content
    assert [a.data for a in posted.attachments] == [a.data for a in result.attachments]
    note = await standin.wait_for_message(
        lambda m: m.interaction is shared and "showcase" in m.content.lower(), timeout=10
    )
    assert note.ephemeral and str(posted.id) in note.content

    again = await standin.click(world.alice, result, star)
    repeat = await again.wait_response(5)
    assert repeat.ephemeral and str(posted.id) in repeat.content
    assert len([m for m in standin.messages(channel=world.showcase) if m.attachments]) == 1


async def test_history_and_info(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine(
        standin, world.alice, world.general, prompt="a blue whale", seed=99, negative_prompt="fog"
    )
    job = await job_for_message(bot, result.id)

    history = await standin.slash_command(world.alice, world.general, "history", {})
    listing = await history.wait_response(5)
    assert listing.ephemeral and "a blue whale" in listing.content
    assert f"/{world.general.id}/{result.id}" in listing.content

    info = await standin.slash_command(world.bob, world.general, "info", {"job": job.id})
    text = (await info.wait_response(5)).content
    for piece in ("a blue whale", "fog", "99, 100, 101, 102", "64x64", "guidance:        1.5"):
        assert piece in text, piece

    menu = await standin.context_menu(world.bob, result, "Imagine info")
    assert (await menu.wait_response(5)).content == text


async def test_reply_with_text_is_a_new_prompt_with_the_same_settings(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine(
        standin, world.alice, world.general, prompt="a fox", aspect_ratio="16:9"
    )
    job = await job_for_message(bot, result.id)
    reply = await standin.user_message(
        world.bob,
        world.general,
        f"<@{standin.bot_user.id}> a wolf at night --seed 42",
        reply_to=result,
        mentions_bot=True,
    )
    answer = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert "a wolf at night" in answer.content and "a fox" not in answer.content
    assert seeds_in(answer.content) == [42, 43, 44, 45]
    assert Image.open(io.BytesIO(answer.attachments[0].data)).size == (job.width, job.height)
    child = await job_for_message(bot, answer.id)
    assert child.kind == "reply" and child.parent_job_id == job.id
    assert child.requester_id == world.bob.id


async def test_empty_reply_rerolls(bot_process, standin, world):
    await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, prompt="a red kite", seed=5)
    reply = await standin.user_message(
        world.alice, world.general, f"<@{standin.bot_user.id}>", reply_to=result, mentions_bot=True
    )
    answer = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert "a red kite" in answer.content
    assert seeds_in(answer.content) != [5, 6, 7, 8]
    assert "ping" not in answer.content  # it was mentioned: no hint needed


async def test_reply_without_content_rerolls_and_says_how_to_prompt(bot_process, standin, world):
    await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, prompt="a green frog")
    # No mention and no message-content intent: Discord delivers the reply without its text.
    reply = await standin.user_message(
        world.alice, world.general, "a purple frog", reply_to=result, mentions_bot=False
    )
    status = await standin.wait_for_message(lambda m: m.reply_to_id == reply.id, timeout=30)
    assert "mention" in status.revisions[0]["content"].lower()
    answer = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert "a green frog" in answer.content


async def test_buttons_work_after_a_restart(bot_process, standin, world, tmp_path):
    bot = await bot_process.start()
    _, old = await imagine(standin, world.alice, world.general, prompt="an old castle", seed=3)
    job = await job_for_message(bot, old.id)
    await bot_process.stop()

    await bot_process.start()  # a new process on the same data dir, no memory of the message
    _, rerolled = await click_for_images(standin, world.alice, old, f"imagine:reroll:{job.id}")
    assert "an old castle" in rerolled.content
    assert len(seeds_in(rerolled.content)) == 4

    # An operator who wiped the data dir: the old buttons answer clearly instead of failing.
    await bot_process.stop()
    wiped = bot_process.settings.model_copy(update={"data_dir": tmp_path / "wiped"})
    await bot_process.start(wiped)
    gone = await standin.click(world.alice, old, f"imagine:reroll:{job.id}")
    answer = await gone.wait_response(5)
    assert answer.ephemeral and answer.content == t("job_not_found", "en-US")


class SlowEngine:
    """The real tiny engine, held up until the test lets it go (a long GPU batch)."""

    def __init__(self, engine):
        self.engine = engine
        self.started = threading.Event()
        self.release = threading.Event()

    def generate_batch(self, requests, progress=None, **options):
        self.started.set()
        self.release.wait(timeout=60)
        return self.engine.generate_batch(requests, progress, **options)

    def __getattr__(self, name):
        return getattr(self.engine, name)


async def test_job_interrupted_by_a_crash_is_finished_after_restart(
    bot_process, standin, world, tiny_engine_settings
):
    from engine import Engine

    slow = SlowEngine(Engine.load(tiny_engine_settings))
    bot = await bot_process.start(load_engine=lambda: slow)
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a phoenix", "seed": 8}
    )
    await ix.wait_ack(3)
    await asyncio.to_thread(slow.started.wait, 30)
    [job] = await bot.storage.unfinished_jobs()
    assert job.status == "running" and job.prompt == "a phoenix"
    await bot_process.kill()  # like kill -9: no graceful shutdown
    slow.release.set()

    bot = await bot_process.start()
    result = await standin.wait_for_message(
        lambda m: len(m.attachments) == 4 and "a phoenix" in m.content, timeout=60
    )
    assert seeds_in(result.content) == [8, 9, 10, 11]
    done = await job_for_message(bot, result.id)
    assert done.id == job.id and done.status == "done"


async def test_graceful_shutdown_finishes_the_running_batch(
    bot_process, standin, world, tiny_engine_settings
):
    from engine import Engine

    slow = SlowEngine(Engine.load(tiny_engine_settings))
    bot = await bot_process.start(load_engine=lambda: slow)
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a comet", "seed": 4}
    )
    await ix.wait_ack(3)
    await asyncio.to_thread(slow.started.wait, 30)
    storage = bot.storage
    stopping = asyncio.create_task(bot_process.stop())  # what SIGTERM does
    await asyncio.sleep(0.3)
    assert not stopping.done(), "shutdown must wait for the running batch"
    slow.release.set()
    await asyncio.wait_for(stopping, 60)
    result = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == 4, timeout=5
    )
    assert seeds_in(result.content) == [4, 5, 6, 7]
    del storage  # closed with the bot; the next start reads the same file
    bot = await bot_process.start()
    assert await bot.storage.unfinished_jobs() == []


async def test_allowed_channels_setting(bot_process, standin, world):
    await bot_process.start()
    ok = await standin.slash_command(
        world.mod, world.general, "imagine-settings", {"allowed_channels": f"<#{world.nsfw.id}>"}
    )
    await ok.wait_response(5)
    ix = await standin.slash_command(world.alice, world.general, "imagine", {"prompt": "a cat"})
    answer = await ix.wait_response(5)
    assert answer.ephemeral and f"<#{world.nsfw.id}>" in answer.content
    _, result = await imagine(standin, world.alice, world.nsfw, prompt="a cat")
    assert len(result.attachments) == 4


async def test_with_message_content_intent_replies_need_no_mention(bot_process, standin, world):
    settings = bot_process.settings.model_copy(update={"message_content_intent": True})
    await bot_process.start(settings)
    _, result = await imagine(standin, world.alice, world.general, prompt="a green frog")
    reply = await standin.user_message(
        world.alice, world.general, "a purple frog --seed 3", reply_to=result, mentions_bot=False
    )
    answer = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert "a purple frog" in answer.content and seeds_in(answer.content) == [3, 4, 5, 6]
    assert "mention" not in answer.revisions[0]["content"].lower()
