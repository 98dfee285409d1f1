"""Styles end to end: /imagine style: with autocomplete, server limits, replies and /info.

Real discord.py client, local Discord stand-in, tiny SDXL engine with tiny style LoRAs (the
IMAGINE_STYLES file of ``tiny_styles_file``), real SQLite file.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.bot.test_conversation_e2e import click_for_images, imagine, pixels
from tests.bot.test_imagine_e2e import job_for_message


@pytest.fixture
def bot_settings(bot_settings, tiny_styles_file):
    engine = bot_settings.engine.model_copy(update={"styles": str(tiny_styles_file)})
    return bot_settings.model_copy(update={"engine": engine})


async def _suggested(standin, user, channel, typed: str) -> list[str]:
    typing = await standin.autocomplete(
        user, channel, "imagine", {"prompt": "a fox", "style": typed}, focused="style"
    )
    await typing.wait_ack(3)
    assert typing.ack_type == 8  # APPLICATION_COMMAND_AUTOCOMPLETE_RESULT
    return [choice["value"] for choice in typing.choices]


async def _refusal(standin, user, channel, **options) -> str:
    ix = await standin.slash_command(user, channel, "imagine", {"prompt": "a fox", **options})
    answer = await ix.wait_response(5)
    assert answer.ephemeral and not answer.attachments
    return answer.content


async def test_a_style_changes_the_pixels_and_travels_with_the_job(bot_process, standin, world):
    bot = await bot_process.start()
    assert [s.name for s in bot.styles] == ["ink", "neon", "velvet"]  # "broken" left out
    _, plain = await imagine(standin, world.alice, world.general, "a red fox", seed=5)
    _, inked = await imagine(standin, world.alice, world.general, "a red fox", seed=5, style="ink")
    assert not np.array_equal(pixels(plain.attachments[0].data), pixels(inked.attachments[0].data))
    job = await job_for_message(bot, inked.id)
    assert job.style == "ink" and job.prompt == "a red fox"  # the trigger is the style's
    assert job.guidance == bot.settings.engine.negative_guidance  # ink has negative words
    assert "style ink" in inked.content

    info = await standin.slash_command(world.alice, world.general, "info", {"job": job.id})
    assert "style:           ink" in (await info.wait_response(5)).content

    # A re-roll keeps the style; a reply with --seed 5 makes the same pixels again.
    _, again = await click_for_images(standin, world.bob, inked, f"imagine:reroll:{job.id}")
    assert (await job_for_message(bot, again.id)).style == "ink"
    reply = await standin.user_message(
        world.alice, world.general, "--seed 5", reply_to=inked, mentions_bot=True
    )
    same = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert (await job_for_message(bot, same.id)).style == "ink"
    for a, b in zip(same.attachments, inked.attachments, strict=True):
        assert np.array_equal(pixels(a.data), pixels(b.data))

    # --style changes it, --style none removes it (and --seed 5 is the plain set again).
    reply = await standin.user_message(
        world.alice, world.general, "--seed 5 --style none", reply_to=inked, mentions_bot=True
    )
    unstyled = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert (await job_for_message(bot, unstyled.id)).style == ""
    reply = await standin.user_message(
        world.alice, world.general, "--style neon", reply_to=plain, mentions_bot=True
    )
    neon = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert (await job_for_message(bot, neon.id)).style == "neon"


async def test_autocomplete_suggests_matching_styles_this_channel_offers(
    bot_process, standin, world
):
    await bot_process.start()
    assert await _suggested(standin, world.alice, world.general, "") == ["ink", "neon"]
    assert await _suggested(standin, world.alice, world.general, "N") == ["neon", "ink"]
    assert await _suggested(standin, world.alice, world.general, "eo") == ["neon"]
    assert await _suggested(standin, world.alice, world.general, "zzz") == []
    # nsfw_only styles are offered in age-restricted channels only.
    assert await _suggested(standin, world.alice, world.nsfw, "") == ["ink", "neon", "velvet"]

    # An admin limits the server to ink (and velvet); autocomplete follows.
    ix = await standin.slash_command(
        world.mod, world.general, "imagine-settings", {"styles": "ink, velvet"}
    )
    assert "styles offered: ink, velvet" in (await ix.wait_response(5)).content
    assert await _suggested(standin, world.alice, world.general, "") == ["ink"]
    assert await _suggested(standin, world.alice, world.nsfw, "") == ["ink", "velvet"]

    ix = await standin.slash_command(
        world.mod, world.general, "imagine-settings", {"styles": "ink, watercolour"}
    )
    answer = (await ix.wait_response(5)).content
    assert "Unknown style(s): watercolour" in answer and "ink, neon, velvet" in answer
    everything = {"styles": "all"}
    ix = await standin.slash_command(world.bob, world.general, "imagine-settings", everything)
    assert "Manage Server" in (await ix.wait_response(5)).content  # members may not change it
    assert await _suggested(standin, world.alice, world.general, "") == ["ink"]
    ix = await standin.slash_command(world.mod, world.general, "imagine-settings", everything)
    assert "styles offered: all" in (await ix.wait_response(5)).content
    assert await _suggested(standin, world.alice, world.general, "") == ["ink", "neon"]


async def test_a_submitted_style_is_checked_whatever_autocomplete_said(bot_process, standin, world):
    bot = await bot_process.start()
    answer = await _refusal(standin, world.alice, world.general, style="watercolour")
    assert "no style 'watercolour'" in answer and "ink, neon" in answer
    answer = await _refusal(standin, world.alice, world.general, style="velvet")
    assert "only offered in age-restricted channels" in answer
    _, velvet = await imagine(standin, world.alice, world.nsfw, "a red fox", style="VELVET")
    assert (await job_for_message(bot, velvet.id)).style == "velvet"  # as the file spells it
    ix = await standin.slash_command(
        world.mod, world.general, "imagine-settings", {"styles": "neon"}
    )
    await ix.wait_response(5)
    answer = await _refusal(standin, world.alice, world.general, style="ink")
    assert "no style 'ink'" in answer and "neon" in answer
    # The server's limit holds in its age-restricted channels too.
    answer = await _refusal(standin, world.alice, world.nsfw, style="velvet")
    assert "no style 'velvet'" in answer
