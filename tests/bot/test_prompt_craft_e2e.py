"""Prompt craft end to end: weights, long prompts and tiles through the real client and queue.

Real discord.py client, local Discord stand-in, tiny SDXL engine, real SQLite file.
"""

from __future__ import annotations

import numpy as np

from tests.bot.test_conversation_e2e import click_for_images, imagine, pixels
from tests.bot.test_imagine_e2e import job_for_message, seeds_in


async def test_weights_reach_the_model_and_info_shows_them_as_typed_and_encoded(
    bot_process, standin, world
):
    bot = await bot_process.start()
    _, weighted = await imagine(
        standin, world.alice, world.general, "a (red:1.4) fox, [blurry] snow", seed=21
    )
    _, plain = await imagine(standin, world.alice, world.general, "a red fox, blurry snow", seed=21)
    assert seeds_in(weighted.content) == seeds_in(plain.content) == [21, 22, 23, 24]
    assert not np.array_equal(
        pixels(weighted.attachments[0].data), pixels(plain.attachments[0].data)
    )
    assert "a (red:1.4) fox, [blurry] snow" in weighted.content  # shown as typed
    job = await job_for_message(bot, weighted.id)
    assert job.prompt == "a (red:1.4) fox, [blurry] snow"
    info = await standin.slash_command(world.alice, world.general, "info", {"job": job.id})
    text = (await info.wait_response(5)).content
    assert "prompt:          a (red:1.4) fox, [blurry] snow" in text
    assert "encoded as:      a (red)1.4 fox, (blurry)0.9091 snow" in text

    # A re-roll keeps the weights: same prompt, new seeds.
    _, again = await click_for_images(standin, world.bob, weighted, f"imagine:reroll:{job.id}")
    assert (await job_for_message(bot, again.id)).prompt == job.prompt


async def test_a_long_prompt_is_not_cut_and_bad_weights_get_a_clear_answer(
    bot_process, standin, world
):
    bot = await bot_process.start()
    long_prompt = " ".join(["a red cat"] * 40) + " with a hat"  # 123 tokens in the tiny vocab
    _, result = await imagine(standin, world.alice, world.general, long_prompt, seed=3)
    assert "cut" not in result.content  # no "Prompt was cut" note any more
    assert (await job_for_message(bot, result.id)).status == "done"

    bad = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a (red:40) fox"}
    )
    answer = await bad.wait_response(5)
    assert answer.ephemeral and "40" in answer.content and "0 to 3" in answer.content
    assert not answer.attachments
    # Unbalanced brackets are read literally: the job runs.
    _, literal = await imagine(standin, world.bob, world.general, "a (red fox", seed=4)
    assert len(literal.attachments) == 4


async def test_tile_mode_from_the_command_and_a_reply_and_its_rerolls(bot_process, standin, world):
    bot = await bot_process.start()
    _, tile = await imagine(standin, world.alice, world.general, "brick wall", seed=8, tile=True)
    _, plain = await imagine(standin, world.alice, world.general, "brick wall", seed=8)
    job = await job_for_message(bot, tile.id)
    assert job.tile and not (await job_for_message(bot, plain.id)).tile
    assert "tile" in tile.content
    assert not np.array_equal(pixels(tile.attachments[0].data), pixels(plain.attachments[0].data))

    # 🔄 on a tile makes tiles; the same seed gives the same pixels.
    _, reroll = await click_for_images(standin, world.alice, tile, f"imagine:reroll:{job.id}")
    assert (await job_for_message(bot, reroll.id)).tile

    # A reply with --tile turns a plain set into tiles; with the same seed, the tile's pixels.
    reply = await standin.user_message(
        world.alice, world.general, "--tile --seed 8", reply_to=plain, mentions_bot=True
    )
    made = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert (await job_for_message(bot, made.id)).tile
    for a, b in zip(made.attachments, tile.attachments, strict=True):
        assert np.array_equal(pixels(a.data), pixels(b.data))


async def test_results_link_to_their_source_and_info_lists_the_chain(bot_process, standin, world):
    bot = await bot_process.start()
    _, first = await imagine(standin, world.alice, world.general, "a red fox", seed=31)
    origin = await job_for_message(bot, first.id)
    _, reroll = await click_for_images(standin, world.bob, first, f"imagine:reroll:{origin.id}")
    rerolled = await job_for_message(bot, reroll.id)
    link = f"https://discord.com/channels/{world.guild.id}/{world.general.id}/{first.id}"
    assert f"re-roll of [job {origin.id}](<{link}>)" in reroll.content

    _, variation = await click_for_images(
        standin, world.alice, reroll, f"imagine:vary:{rerolled.id}:2"
    )
    varied = await job_for_message(bot, variation.id)
    reroll_link = f"https://discord.com/channels/{world.guild.id}/{world.general.id}/{reroll.id}"
    assert f"image 2 of [job {rerolled.id}](<{reroll_link}>)" in variation.content

    reply = await standin.user_message(
        world.alice, world.general, "a blue fox", reply_to=reroll, mentions_bot=True
    )
    answer = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert f"reply to [job {rerolled.id}](<{reroll_link}>)" in answer.content

    info = await standin.slash_command(world.alice, world.general, "info", {"job": varied.id})
    text = (await info.wait_response(5)).content
    chain = text.splitlines()[-1]
    assert chain == (
        f"Made from: [job {rerolled.id}](<{reroll_link}>) (re-roll) ← "
        f"[job {origin.id}](<{link}>) (/imagine)"
    )
    # The first /imagine has no source.
    first_info = await standin.slash_command(world.alice, world.general, "info", {"job": origin.id})
    assert "Made from" not in (await first_info.wait_response(5)).content


async def prefer(standin, user, channel, sub: str, options: dict) -> str:
    ix = await standin.slash_command(user, channel, f"prefer {sub}", options)
    answer = await ix.wait_response(5)
    assert answer.ephemeral  # a user's presets are shown to nobody else
    return answer.content


async def test_presets_apply_to_typed_prompts_survive_a_restart_and_stay_their_owners(
    bot_process, standin, world
):
    bot = await bot_process.start()
    await prefer(standin, world.alice, world.general, "suffix", {"text": "film grain"})
    said = await prefer(
        standin, world.alice, world.general, "option set", {"name": "ink", "value": "ink wash"}
    )
    assert "--ink" in said
    await prefer(standin, world.alice, world.general, "aspect_ratio", {"value": "16:9"})
    bad = await prefer(standin, world.alice, world.general, "option set", {"name": "seed"})
    assert "reply flag" in bad
    listed = await prefer(standin, world.alice, world.general, "list", {})
    assert "film grain" in listed and "`--ink` → `ink wash`" in listed and "16:9" in listed

    await bot_process.stop()
    bot = await bot_process.start()  # presets are stored, not remembered

    _, mine = await imagine(standin, world.alice, world.general, "a fox --ink", seed=5)
    job = await job_for_message(bot, mine.id)
    assert job.prompt == "a fox ink wash, film grain"
    assert (job.width, job.height) == (80, 48)  # 16:9 at the tiny resolution
    assert "Your presets added: suffix “film grain”; --ink → “ink wash”; aspect ratio 16:9" in (
        mine.content
    )
    info = await standin.slash_command(world.bob, world.general, "info", {"job": job.id})
    assert "prompt:          a fox ink wash, film grain" in (await info.wait_response(5)).content

    # Bob's own prompt gets none of Alice's presets; his re-roll of her set keeps hers.
    _, his = await imagine(standin, world.bob, world.general, "a fox --ink", seed=5)
    theirs = await job_for_message(bot, his.id)
    assert theirs.prompt == "a fox --ink" and (theirs.width, theirs.height) == (64, 64)
    assert "presets" not in his.content
    _, reroll = await click_for_images(standin, world.bob, mine, f"imagine:reroll:{job.id}")
    assert (await job_for_message(bot, reroll.id)).prompt == job.prompt
    assert "presets" not in reroll.content  # nothing was added again

    # A reply with new text is typed: the replier's presets apply to it, once.
    reply = await standin.user_message(
        world.alice, world.general, "a cat --ink", reply_to=mine, mentions_bot=True
    )
    made = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert (await job_for_message(bot, made.id)).prompt == "a cat ink wash, film grain"

    assert "Removed 3 presets" in await prefer(standin, world.alice, world.general, "reset", {})
    _, plain = await imagine(standin, world.alice, world.general, "a fox --ink", seed=5)
    assert (await job_for_message(bot, plain.id)).prompt == "a fox --ink"


async def finished_sets(standin, user, count: int) -> list:
    """The result messages (four images each) of ``user``'s jobs, once there are ``count``."""

    def done() -> list | None:
        found = [
            m
            for m in standin.messages()
            if len(m.attachments) == 4 and f"asked by <@{user.id}>" in m.content
        ]
        return found if len(found) >= count else None

    return await standin.wait_until(done, f"{count} results", 90)


async def test_permutations_make_one_message_each_and_take_one_queue_place(
    bot_process, standin, world
):
    bot = await bot_process.start()
    # Four prompts; the per-user limit is 3, but one command's set takes one place.
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a {red, blue} {fox|cat}", "seed": 9}
    )
    await ix.wait_ack(3)
    results = await finished_sets(standin, world.alice, 4)
    jobs = [await job_for_message(bot, m.id) for m in results]
    assert sorted(j.prompt for j in jobs) == ["a blue cat", "a blue fox", "a red cat", "a red fox"]
    first = min(j.id for j in jobs)
    assert sorted(j.group_id or 0 for j in jobs) == [0, first, first, first]
    assert len({m.id for m in results}) == 4

    # Over IMAGINE_MAX_PROMPTS (4): refused, saying how many it would make; nothing queued.
    too_many = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a {red, blue, green} fox", "repeat": 2}
    )
    answer = await too_many.wait_response(5)
    assert answer.ephemeral and "6 prompts" in answer.content and "4" in answer.content
    written = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a fox --repeat x"}
    )
    assert "--repeat" in (await written.wait_response(5)).content

    # --repeat alone: the same prompt, new seeds, one message each.
    again = await standin.slash_command(
        world.bob, world.general, "imagine", {"prompt": "a boat --repeat 2", "seed": 77}
    )
    await again.wait_ack(3)
    boats = await finished_sets(standin, world.bob, 2)
    boat_jobs = [await job_for_message(bot, m.id) for m in boats]
    assert {j.prompt for j in boat_jobs} == {"a boat"}
    assert boat_jobs[0].seed != boat_jobs[1].seed
    assert 77 in {j.seed for j in boat_jobs}  # the seed given is the first run's
