"""Presets applied to a typed prompt (pure: no Discord)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.presets import apply_presets, describe, option_name_problem
from lifecycle.storage import Presets

FILM = Presets(
    user_id=1,
    suffix="shot on --film",
    negative="blurry",
    aspect_ratio="3:2",
    options=(("film", "kodak portra 400"), ("ink", "ink wash painting")),
)


def test_suffix_options_and_defaults():
    applied = apply_presets("a fox in the snow, --ink", "", None, FILM)
    assert applied.prompt == "a fox in the snow, ink wash painting, shot on kodak portra 400"
    assert (applied.negative_prompt, applied.aspect_ratio) == ("blurry", "3:2")
    assert applied.added == (
        "suffix “shot on --film”",
        "--film → “kodak portra 400”",
        "--ink → “ink wash painting”",
        "negative prompt “blurry”",
        "aspect ratio 3:2",
    )


def test_what_the_user_gave_wins_over_defaults_and_longer_flags_stay():
    applied = apply_presets("a fox --films --inky", "text", "1:1", FILM)
    assert applied.prompt == "a fox --films --inky, shot on kodak portra 400"
    assert (applied.negative_prompt, applied.aspect_ratio) == ("text", "1:1")


def test_no_presets_change_nothing():
    applied = apply_presets("a fox\nin snow --film", "", None, Presets(user_id=1))
    assert applied.prompt == "a fox\nin snow --film" and applied.added == ()
    assert applied.aspect_ratio is None


def test_option_names():
    assert option_name_problem("film") is None and option_name_problem("my-look_2") is None
    for bad in ("Film", "2x", "", "a b", "x" * 33, "seed", "ar", "tile", "repeat"):
        assert option_name_problem(bad), bad


def test_list_shows_every_preset_and_escapes_backticks():
    text = describe(Presets(user_id=1, suffix="a `b`", options=(("x", "y"),)))
    assert "suffix: `a 'b'`" in text and "`--x` → `y`" in text
    assert "no presets" in describe(Presets(user_id=1))


@settings(max_examples=300, deadline=None)
@given(
    st.text(),
    st.text(max_size=40),
    st.lists(
        st.tuples(st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True), st.text()), max_size=4
    ),
)
def test_any_prompt_and_presets_give_a_prompt(prompt, suffix, options):
    presets = Presets(user_id=1, suffix=suffix, options=tuple(options))
    applied = apply_presets(prompt, "", None, presets)
    assert isinstance(applied.prompt, str)
    if not suffix and "--" not in prompt:
        assert applied.prompt == prompt.strip()
