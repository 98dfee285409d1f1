"""Chinese prompts and community-safety defaults, end to end through the Discord stand-in."""

from __future__ import annotations

import pytest

from bot.i18n import t
from tests.bot.test_conversation_e2e import click_for_images, imagine
from tests.bot.test_imagine_e2e import job_for_message, seeds_in
from tests.engine.test_safety import build_tiny_classifier
from tests.tiny_marian import build_tiny_marian

CHINESE = "一只戴礼帽的柴犬在埃菲尔铁塔前骑车"


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    return build_tiny_marian(tmp_path_factory.mktemp("marian"))


@pytest.fixture
def translating_settings(bot_settings, marian_dir):
    engine = bot_settings.engine.model_copy(update={"translator": str(marian_dir)})
    return bot_settings.model_copy(update={"engine": engine})


async def test_chinese_prompt_is_translated_shown_and_reused(
    bot_process, standin, world, translating_settings
):
    bot = await bot_process.start(translating_settings)
    _, result = await imagine(standin, world.alice, world.general, prompt=f"{CHINESE}, 8k")
    job = await job_for_message(bot, result.id)
    assert job.prompt == f"{CHINESE}, 8k"
    assert job.interpreted_prompt and job.interpreted_prompt != job.prompt
    assert job.interpreted_prompt.endswith(", 8k")  # the English part is kept as typed
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in job.interpreted_prompt)
    assert "Interpreted as" in result.content and CHINESE in result.content
    calls = bot.translator.model_calls

    _, rerolled = await click_for_images(standin, world.alice, result, f"imagine:reroll:{job.id}")
    child = await job_for_message(bot, rerolled.id)
    assert child.interpreted_prompt == job.interpreted_prompt
    assert bot.translator.model_calls == calls  # re-rolls reuse the stored translation


async def test_translated_text_is_what_the_text_encoders_get(
    bot_process, standin, world, translating_settings
):
    """The image equals one generated directly from the English interpretation."""
    from engine import GenerationRequest
    from tests.bot.test_imagine_e2e import same_picture

    bot = await bot_process.start(translating_settings)
    _, result = await imagine(standin, world.alice, world.general, prompt=CHINESE, seed=21)
    job = await job_for_message(bot, result.id)
    direct = GenerationRequest(prompt=job.interpreted_prompt, seed=21, width=64, height=64, count=1)
    [generated] = await bot.runner.generate_batch([direct])
    assert same_picture(result.attachments[0].data, generated.images[0].image)


async def test_raw_bypasses_translation(bot_process, standin, world, translating_settings):
    bot = await bot_process.start(translating_settings)
    calls = bot.translator.model_calls
    _, result = await imagine(standin, world.alice, world.general, prompt=CHINESE, raw=True)
    job = await job_for_message(bot, result.id)
    assert job.raw and job.interpreted_prompt is None
    assert "Interpreted as" not in result.content
    assert bot.translator.model_calls == calls


async def test_english_prompts_are_untouched(bot_process, standin, world, translating_settings):
    bot = await bot_process.start(translating_settings)
    calls = bot.translator.model_calls
    _, result = await imagine(standin, world.alice, world.general, prompt="a shiba on a bike")
    job = await job_for_message(bot, result.id)
    assert job.interpreted_prompt is None and bot.translator.model_calls == calls


async def test_chinese_locale_gets_chinese_commands_and_replies(bot_process, standin, world):
    await bot_process.start()
    imagine_command = next(c for c in standin.commands() if c["name"] == "imagine")
    assert imagine_command["name_localizations"]["zh-CN"] == "画图"
    assert imagine_command["name_localizations"]["zh-TW"] == "畫圖"
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": " "}, locale="zh-CN"
    )
    assert (await ix.wait_response(5)).content == t("empty_prompt", "zh-CN")
    assert t("empty_prompt", "zh-CN") != t("empty_prompt", "en-US")


async def test_blocked_prompt_is_refused_in_a_normal_channel_but_runs_in_nsfw(
    bot_process, standin, world
):
    bot = await bot_process.start()
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a NUDE statue"}
    )
    answer = await ix.wait_response(5)
    assert answer.ephemeral and answer.content == t("prompt_blocked", "en-US")
    assert await bot.storage.recent_jobs(world.alice.id) == []  # nothing stored or queued

    _, result = await imagine(standin, world.alice, world.nsfw, prompt="a NUDE statue")
    assert len(result.attachments) == 4


async def test_admin_blocklist_additions_apply(bot_process, standin, world):
    await bot_process.start()
    refused = await standin.slash_command(
        world.alice, world.general, "imagine-settings", {"block": "dragon"}
    )
    assert (await refused.wait_response(5)).content == t("no_permission", "en-US")
    ok = await standin.slash_command(
        world.mod, world.general, "imagine-settings", {"block": "dragon, wyvern"}
    )
    assert "saved" in (await ok.wait_response(5)).content.lower()
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a red Ｄｒａｇｏｎ"}
    )  # full-width letters too
    assert (await ix.wait_response(5)).content == t("prompt_blocked", "en-US")


@pytest.fixture(scope="module")
def flagging_classifier(tmp_path_factory):
    return build_tiny_classifier(
        tmp_path_factory.mktemp("nsfw_cls"), nsfw_bias=20.0, labels={0: "normal", 1: "nsfw"}
    )


@pytest.fixture
def safety_settings(bot_settings, flagging_classifier):
    engine = bot_settings.engine.model_copy(update={"safety_model": str(flagging_classifier)})
    return bot_settings.model_copy(update={"engine": engine})


async def test_flagged_images_are_spoilered_or_withheld(
    bot_process, standin, world, safety_settings
):
    bot = await bot_process.start(safety_settings)
    _, result = await imagine(standin, world.alice, world.general, prompt="a beach")
    assert all(a.spoiler for a in result.attachments)
    assert "spoiler" in result.content.lower()

    # In an age-restricted channel the filter does not apply.
    _, free = await imagine(standin, world.alice, world.nsfw, prompt="a beach")
    assert not any(a.spoiler for a in free.attachments)

    await bot.storage.update_guild_settings(world.guild.id, safety_mode="withhold")
    ix = await standin.slash_command(world.alice, world.general, "imagine", {"prompt": "a park"})
    withheld = await standin.wait_for_message(
        lambda m: m.interaction is ix and "withheld" in m.content.lower(), timeout=60
    )
    assert withheld.attachments == [] or len(withheld.attachments) == 0
    assert len(seeds_in(withheld.content)) == 4


async def test_the_floor_holds_everywhere_and_cannot_be_unblocked(bot_process, standin, world):
    bot = await bot_process.start()
    floor = t("prompt_refused_floor", "en-US")
    refused = await standin.slash_command(
        world.mod, world.general, "imagine-settings", {"unblock": "l0li, dragon"}
    )
    answer = (await refused.wait_response(5)).content
    assert answer == t("floor_not_removable", "en-US", terms="l0li")
    assert (await bot.storage.guild_settings(world.guild.id)).blocklist_remove == ()

    dm = standin.add_dm_channel(world.alice)
    attempts = [
        (world.nsfw, {"prompt": "a l o l i character"}),
        (world.nsfw, {"prompt": "12yo girl, nude"}),
        (world.nsfw, {"prompt": "nude figure study", "negative_prompt": "adult, mature"}),
        (dm, {"prompt": "十二岁 裸 体"}),
    ]
    for channel, options in attempts:
        ix = await standin.slash_command(world.alice, channel, "imagine", options)
        answer = await ix.wait_response(5)
        assert answer.ephemeral and answer.content == floor, (options, answer.content)
    # Adults in an age-restricted channel are that channel's business.
    _, served = await imagine(standin, world.alice, world.nsfw, prompt="28 year old woman, nude")
    assert len(served.attachments) == 4

    # A reply turning a result into a floor prompt is refused the same way.
    reply = await standin.user_message(
        world.alice,
        world.nsfw,
        f"<@{standin.bot_user.id}> the same, but as a shota",
        reply_to=served,
        mentions_bot=True,
    )
    answer = await standin.wait_for_message(lambda m: m.reply_to_id == reply.id, timeout=10)
    assert answer.content == floor
    assert len(await bot.storage.recent_jobs(world.alice.id)) == 1
