"""Privacy: who sees a job's parameters, which message a button may act on, who may share,
and that nothing the bot posts pings anyone it should not. Real bot, stand-in, tiny engine."""

from __future__ import annotations

import io

from PIL import Image

from bot.i18n import t
from tests.bot.test_conversation_e2e import click_for_images, imagine
from tests.bot.test_imagine_e2e import job_for_message

NOT_FOUND = "That is not one of my image sets."


async def info_answer(standin, user, channel, job_id: int) -> str:
    ix = await standin.slash_command(user, channel, "info", {"job": job_id})
    answer = await ix.wait_response(5)
    assert answer.ephemeral
    return answer.content


async def test_info_is_for_the_requester_and_the_channel_it_was_made_in(
    bot_process, standin, world
):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, prompt="a secret garden")
    job = await job_for_message(bot, result.id)
    _, late = await imagine(standin, world.alice, world.nsfw, prompt="a midnight party")
    late_job = await job_for_message(bot, late.id)
    dm = standin.add_dm_channel(world.alice)
    _, private = await imagine(standin, world.alice, dm, prompt="a diary page")
    dm_job = await job_for_message(bot, private.id)

    assert "a secret garden" in await info_answer(standin, world.bob, world.general, job.id)
    assert await info_answer(standin, world.bob, world.showcase, job.id) == NOT_FOUND
    assert await info_answer(standin, world.bob, world.general, late_job.id) == NOT_FOUND
    assert "a midnight party" in await info_answer(standin, world.bob, world.nsfw, late_job.id)
    assert await info_answer(standin, world.bob, world.general, dm_job.id) == NOT_FOUND
    bob_dm = standin.add_dm_channel(world.bob)
    assert await info_answer(standin, world.bob, bob_dm, dm_job.id) == NOT_FOUND
    # The requester sees their own jobs anywhere.
    assert "a diary page" in await info_answer(standin, world.alice, world.general, dm_job.id)
    # Unknown and hidden jobs get the same answer: ids cannot be probed.
    assert await info_answer(standin, world.bob, world.general, 10_000) == NOT_FOUND


async def test_a_button_acts_only_on_the_job_of_its_own_message(
    bot_process, standin, world, tmp_path
):
    bot = await bot_process.start()
    await bot.storage.update_guild_settings(world.guild.id, showcase_channel_id=world.showcase.id)
    _, old = await imagine(standin, world.alice, world.general, prompt="alice's fox")
    old_job = await job_for_message(bot, old.id)
    await bot_process.stop()

    # The operator starts over with a new data dir: job ids count from 1 again, so the old
    # message's buttons now name somebody else's job (Bob's, made in a DM).
    fresh = bot_process.settings.model_copy(update={"data_dir": tmp_path / "fresh"})
    bot = await bot_process.start(fresh)
    await bot.storage.update_guild_settings(world.guild.id, showcase_channel_id=world.showcase.id)
    dm = standin.add_dm_channel(world.bob)
    _, private = await imagine(standin, world.bob, dm, prompt="bob's private owl")
    bobs_job = await job_for_message(bot, private.id)
    assert bobs_job.id == old_job.id

    for button in (f"imagine:upscale:{old_job.id}:1", f"imagine:share:{old_job.id}"):
        ix = await standin.click(world.alice, old, button)
        answer = await ix.wait_response(5)
        assert answer.ephemeral and answer.content == t("job_not_found", "en-US")
    ix = await standin.click(world.alice, old, f"imagine:delete:{old_job.id}")
    assert (await ix.wait_response(5)).content == t("job_not_found", "en-US")
    assert not old.deleted
    assert (await bot.storage.get_job(bobs_job.id)).result_message_id == private.id
    assert not [m for m in standin.messages() if "private owl" in m.content and m is not private]


async def test_share_rules(bot_process, standin, world):
    bot = await bot_process.start()
    await bot.storage.update_guild_settings(world.guild.id, showcase_channel_id=world.showcase.id)
    _, result = await imagine(standin, world.alice, world.general, prompt="a lighthouse")
    job = await job_for_message(bot, result.id)
    star = f"imagine:share:{job.id}"

    nosy = await standin.click(world.bob, result, star)
    assert (await nosy.wait_response(5)).content == t("share_not_allowed", "en-US")
    assert not [m for m in standin.messages(channel=world.showcase) if m.attachments]

    mod = await standin.click(world.mod, result, star)
    await mod.wait_ack(3)
    posted = await standin.wait_for_message(
        lambda m: len(m.attachments) == 4, channel=world.showcase, timeout=10
    )
    await standin.wait_for_message(
        lambda m: m.interaction is mod and "showcase" in m.content.lower(), timeout=10
    )
    assert (await bot.storage.share_by_message(posted.id)).job_id == job.id
    # The showcase post counts as the job's message: the info menu works there.
    menu = await standin.context_menu(world.bob, posted, "Imagine info")
    assert "a lighthouse" in (await menu.wait_response(5)).content

    # A job from an age-restricted channel never goes to an ordinary showcase.
    _, late = await imagine(standin, world.alice, world.nsfw, prompt="a night owl")
    late_job = await job_for_message(bot, late.id)
    refused = await standin.click(world.alice, late, f"imagine:share:{late_job.id}")
    assert (await refused.wait_response(5)).content == t("share_nsfw", "en-US")
    assert await bot.storage.get_share(late_job.id, 0) is None
    assert len([m for m in standin.messages(channel=world.showcase) if m.attachments]) == 1


async def test_nothing_the_bot_posts_pings_unasked(bot_process, standin, world):
    await bot_process.start()
    assert_no_ping = _no_ping_checker(standin)
    _, result = await imagine(standin, world.alice, world.general, prompt="@everyone look <@&1>")
    assert "@everyone" not in result.content.replace("@\u200beveryone", "")
    reply = await standin.user_message(
        world.bob,
        world.general,
        f"<@{standin.bot_user.id}> a fox --ar @everyone",
        reply_to=result,
        mentions_bot=True,
    )
    answer = await standin.wait_for_message(lambda m: m.reply_to_id == reply.id, timeout=30)
    assert "aspect ratio" in answer.content.lower()
    assert "@everyone" not in answer.content.replace("@\u200beveryone", "")
    assert_no_ping()


def _no_ping_checker(standin):
    def check() -> None:
        posted = [m for m in standin.messages() if m.author.id == standin.bot_user.id]
        assert posted
        for message in posted:
            if message.content:
                # Sent with explicit allowed_mentions (the client-wide "none"), pinging nobody.
                assert message.allowed_mentions is not None, message.content
                assert "everyone" not in (message.allowed_mentions.get("parse") or [])
            assert message.mentions == [], (message.content, message.mentions)

    return check


async def test_dms_are_ordinary_channels(bot_process, standin, world):
    bot = await bot_process.start()
    dm = standin.add_dm_channel(world.alice)
    ix = await standin.slash_command(world.alice, dm, "imagine", {"prompt": "a nude statue"})
    answer = await ix.wait_response(5)
    assert answer.ephemeral and answer.content == t("prompt_blocked", "en-US")
    assert await bot.storage.recent_jobs(world.alice.id) == []
    _, result = await imagine(standin, world.alice, dm, prompt="a marble statue")
    job = await job_for_message(bot, result.id)
    assert job.nsfw_channel is False
    _, single = await click_for_images(
        standin, world.alice, result, f"imagine:upscale:{job.id}:1", count=1
    )
    assert Image.open(io.BytesIO(single.attachments[0].data)).size == (
        job.width * 2,
        job.height * 2,
    )
