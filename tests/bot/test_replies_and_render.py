"""Pure functions of the bot: reply parsing and message rendering."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot import render
from bot.buttons import JobButton, custom_id
from bot.replies import ReplyCommand, is_blank, parse_reply, strip_bot_mention
from lifecycle.storage import Job


def test_reply_text_is_a_new_prompt_with_flags_anywhere():
    command = parse_reply("a fox --seed 42 in the snow --ar 16:9")
    assert command.prompt == "a fox in the snow"
    assert command.seed == 42
    assert command.aspect_ratio == "16:9"
    assert command.negative_prompt is None and not command.raw


def test_reply_no_takes_everything_up_to_the_next_flag():
    command = parse_reply("a cat --no blurry, text, watermark --raw")
    assert command.prompt == "a cat"
    assert command.negative_prompt == "blurry, text, watermark"
    assert command.raw


def test_empty_or_again_reply_rerolls():
    for text in ("", "   ", "again", "🔄", "再来"):
        assert parse_reply(text).prompt is None, text
    only_seed = parse_reply("--seed 7")
    assert only_seed.prompt is None and only_seed.seed == 7


def test_bad_seed_is_reported_not_guessed():
    assert parse_reply("--seed abc").bad_seed == "abc"
    assert parse_reply(f"--seed {2**32}").bad_seed == str(2**32)
    assert parse_reply("--seed 4294967295").seed == 2**32 - 1


def test_only_the_bots_own_leading_mention_is_stripped():
    assert strip_bot_mention("<@123> a red car", 123) == "a red car"
    assert strip_bot_mention("<@!123>   a red car", 123) == "a red car"
    assert strip_bot_mention("<@999> a red car", 123) == "<@999> a red car"
    assert strip_bot_mention("a red <@123> car", 123) == "a red <@123> car"


def facts(**changes) -> Job:
    """A finished job as the result message shows it."""
    base = dict(
        id=7,
        kind="imagine",
        requester_id=42,
        channel_id=1,
        prompt="a red fox",
        seed=1,
        width=1024,
        height=1024,
        status="done",
        created_at=0.0,
        interpreted_prompt=None,
        negative_prompt="",
        seeds=(1, 2, 3, 4),
        steps=4,
        guidance=1.0,
    )
    base.update(changes)
    return Job(**base)


def test_result_text_shows_prompt_seeds_size_steps_time_and_requester():
    text = render.result_text(facts(), seconds=1.234)
    assert "a red fox" in text
    assert "Seeds 1 · 2 · 3 · 4" in text
    assert "1024×1024" in text and "4 steps" in text and "1.2 s" in text
    assert "<@42>" in text


def test_result_text_stays_within_discord_limit_for_huge_prompts():
    text = render.result_text(
        facts(
            prompt="word " * 3000,
            negative_prompt="bad " * 2000,
            interpreted_prompt="x " * 3000,
        ),
        notes=("n " * 500,),
    )
    assert len(text) <= 2000
    assert "…" in text


def test_result_text_escapes_mentions_and_markdown_in_prompts():
    text = render.result_text(facts(prompt="@everyone **bold**"))
    assert "@everyone" not in text.replace("@\u200beveryone", "")
    assert "**bold**" not in text


def test_interpreted_prompt_is_shown_in_the_users_language():
    text = render.result_text(facts(prompt="一只猫", interpreted_prompt="a cat", locale="zh-CN"))
    assert "a cat" in text and "一只猫" in text
    english = render.result_text(facts(prompt="一只猫", interpreted_prompt="a cat"))
    assert "Interpreted as" in english


def test_result_view_has_persistent_buttons_with_job_ids():
    view = render.result_view(7, 4)
    ids = [item.item.custom_id for item in view.children if isinstance(item, JobButton)]
    assert ids == (
        [custom_id("upscale", 7, i) for i in range(1, 5)]
        + [custom_id("reroll", 7)]
        + [custom_id("vary", 7, i) for i in range(1, 5)]
        + [custom_id("share", 7)]
        + [custom_id("subtle", 7, i) for i in range(1, 5)]
        + [custom_id("delete", 7)]
    )
    labels = [item.item.label for item in view.children]
    assert labels[:4] == ["U1", "U2", "U3", "U4"] and labels[10:14] == ["S1", "S2", "S3", "S4"]
    assert view.timeout is None
    assert all(len(i) <= 100 for i in ids)
    # Every id is one the persistent handler parses back into the same button.
    assert all(JobButton.__discord_ui_compiled_template__.fullmatch(i) for i in ids)


def test_single_image_view_has_the_image_tools():
    view = render.result_view(9, 1)
    shown = [(item.item.custom_id, item.item.label) for item in view.children]
    assert shown == [
        ("imagine:subtle:9:1", "Vary (Subtle)"),
        ("imagine:vary:9:1", "Vary (Strong)"),
        ("imagine:zoom2:9:1", "Zoom Out 2x"),
        ("imagine:zoom15:9:1", "Zoom Out 1.5x"),
        ("imagine:reroll:9", None),
        ("imagine:share:9", None),
        ("imagine:delete:9", None),
    ]


def test_derived_jobs_say_what_they_were_made_from_and_how_to_make_them_again():
    upscale = facts(
        kind="upscale",
        parent_job_id=3,
        parent_index=2,
        strength=0.3,
        count=1,
        seeds=(77,),
        width=2048,
        height=2048,
    )
    assert "upscaled 2× from image 2 of job 3" in render.result_text(upscale)
    info = render.info_text(upscale)
    assert "strength:        0.3" in info and "`--seed 77`" in info and "/imagine" not in info
    zoom = facts(kind="zoom", parent_job_id=3, parent_index=1, zoom=1.5, strength=None)
    assert "Zoom Out 1.5× of image 1 of job 3" in render.result_text(zoom)
    subtle = facts(kind="variation", parent_job_id=3, parent_index=4, strength=0.35)
    assert "Vary (Subtle) of image 4 of job 3" in render.info_text(subtle)


def test_info_text_has_everything_to_reproduce():
    text = render.info_text(facts(negative_prompt="blurry", guidance=1.5))
    for piece in (
        "a red fox",
        "blurry",
        "1, 2, 3, 4",
        "1024x1024",
        "steps:           4",
        "guidance:        1.5",
        "seed:1",
    ):
        assert piece in text, piece


def test_info_texts_reproduce_line_is_the_whole_imagine_command():
    text = render.info_text(facts(negative_prompt="blurry", width=1344, height=768))
    line = text.splitlines()[-1]
    assert line == (
        "Reproduce image 1: "
        "`/imagine prompt:a red fox negative_prompt:blurry seed:1 aspect_ratio:16:9`"
    )


def test_info_text_shows_the_prompt_as_typed_and_as_encoded():
    weighted = render.info_text(facts(prompt="a (red:1.3) fox", negative_prompt="[blurry]"))
    assert "prompt:          a (red:1.3) fox" in weighted
    assert "encoded as:      a (red)1.3 fox" in weighted
    assert "negative as:     (blurry)0.9091" in weighted
    plain = render.info_text(facts(prompt="a red fox"))
    assert "encoded as" not in plain and "negative as" not in plain
    # Translated prompts are encoded from the translation, their syntax kept.
    translated = render.info_text(
        facts(prompt="（红狐狸：1.2）", interpreted_prompt="(red fox:1.2)")
    )
    assert "encoded as:      (red fox)1.2" in translated


def test_tile_mode_is_part_of_the_recipe():
    job = facts(tile=True)
    assert "tile:True" in render.info_text(job)
    assert "tile:            yes" in render.info_text(job)
    assert "tile" not in render.info_text(facts())
    command = parse_reply("a brick wall --tile --seed 3")
    assert command.tile and command.prompt == "a brick wall" and command.seed == 3
    assert not parse_reply("a tiled floor").tile


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_reply_takes_any_text(text):
    command = parse_reply(text)
    assert isinstance(command, ReplyCommand)
    if command.prompt is not None:
        assert not is_blank(command.prompt) and command.prompt == command.prompt.strip()
    assert command.seed is None or 0 <= command.seed < 2**32
    assert command.strength is None or 0.1 <= command.strength <= 1.0
    assert command.strength is None or command.bad_strength is None or "--strength" in text


def test_reply_strength_is_a_decimal_from_a_tenth_to_one():
    assert parse_reply("a fox --strength 0.4").strength == 0.4
    assert parse_reply("--strength 1").strength == 1.0 and parse_reply("--strength .25").strength
    for bad in ("2", "0.05", "abc", "1e-1", "nan", "-0.5"):
        command = parse_reply(f"a fox --strength {bad}")
        assert command.strength is None and command.bad_strength == bad, bad


def test_a_prompt_with_nothing_printable_is_empty():
    for text in ("", "   ", "\u200b", "\u200b \u2060\u00ad", "\t\n"):
        assert is_blank(text), repr(text)
        assert parse_reply(text).prompt is None  # a reply: re-roll
    assert not is_blank("a") and not is_blank("猫") and not is_blank("\u200bfox")


def test_the_style_is_part_of_the_recipe():
    job = facts(style="ink")
    assert "style:ink" in render.info_text(job)  # the copyable /imagine line
    assert "style:           ink" in render.info_text(job)
    assert "style ink" in render.result_text(job)
    assert "style" not in render.info_text(facts()) + render.result_text(facts())
    command = parse_reply("a fox --style ink --seed 3")
    assert command.style == "ink" and command.prompt == "a fox" and command.seed == 3
    assert parse_reply("again --style None").style == ""  # none/off: no style
    assert parse_reply("a fox --style off").style == ""
    assert parse_reply("a stylish fox").style is None
    assert parse_reply("a fox --style").style is None  # nothing named: unchanged


def describe_job(**changes) -> Job:
    captions = ("a red fox", "@everyone **bold** fox", "a fox in `snow`", "fox")
    return facts(kind="describe", prompt="", seeds=(), captions=captions, uploaded=True, **changes)


def test_a_describe_result_numbers_its_prompts_like_its_buttons_and_escapes_them():
    job = describe_job()
    text = render.describe_text(job)
    lines = text.splitlines()
    assert lines[0].startswith("🔎 **Prompts for this picture**")
    assert lines[1] == "1️⃣ a red fox"
    assert "@everyone" not in lines[2] and r"\*\*bold\*\*" in lines[2]  # no ping, no markup
    assert lines[4] == "4️⃣ fox" and "job 7" in lines[5]
    ids = [item.custom_id for item in render.describe_view(job.id, 4).children]
    assert ids[:4] == [f"imagine:prompt:7:{i}" for i in range(1, 5)]
    assert ids[4:8] == [f"imagine:promptpic:7:{i}" for i in range(1, 5)]
    assert ids[8] == "imagine:delete:7"
    assert "<@42>" in render.describe_text(job, mention=True)


def test_a_hidden_prompt_is_not_shown_and_has_no_buttons():
    job = describe_job()
    text = render.describe_text(job, hidden={2})
    assert "bold" not in text and "not shown" in text.splitlines()[2]
    ids = [item.custom_id for item in render.describe_view(job.id, 4, hidden={2}).children]
    assert "imagine:prompt:7:2" not in ids and "imagine:promptpic:7:2" not in ids
    assert "imagine:prompt:7:3" in ids


def test_info_of_a_describe_job_lists_its_prompts():
    text = render.info_text(describe_job())
    assert text.startswith("Job 7 (describe) by <@42>")
    assert "prompt 1: a red fox" in text and "prompt 3: a fox in ˋsnowˋ" in text
    assert "seeds" not in text
