"""Prompt translation: detection, mixed prompts, opencc, cache, bypass, disabled setting.

Uses a tiny random-weight MarianMT model (tests/tiny_marian.py): its output is gibberish, so
these tests check the mechanism, not translation quality.
"""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import pytest

from engine.errors import ModelNotFound
from engine.translation import Interpretation, Translator, needs_translation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_marian import build_tiny_marian


@pytest.fixture(scope="module")
def tiny_marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_marian(tmp_path_factory.mktemp("tiny_marian"))


@pytest.fixture
def translator(tiny_marian_dir: Path) -> Translator:
    # Small beams and tokens keep the tests fast; the code path is the same.
    return Translator(str(tiny_marian_dir), num_beams=2, max_new_tokens=8)


class RecordingTranslator:
    """Wraps a Translator's model call to record exactly which segments reach the model."""

    def __init__(self, translator: Translator) -> None:
        self.calls: list[list[str]] = []
        self._generate = translator._generate
        translator._generate = self  # type: ignore[method-assign]

    def __call__(self, segments: list[str]) -> list[str]:
        self.calls.append(list(segments))
        return [f"EN{i}" for i, _ in enumerate(segments)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat in a hat", False),
        ("8k, ultra detailed, (masterpiece:1.2)", False),
        ("café déjà vu", False),
        ("", False),
        ("赛博朋克 city", True),
        ("貓", True),
        ("ねこ", True),
        ("カタカナ", True),
        ("고양이", True),
        ("𠀀", True),  # CJK extension B
    ],
)
def test_needs_translation(text: str, expected: bool) -> None:
    assert needs_translation(text) is expected


def test_chinese_prompt_is_translated_by_the_model(translator: Translator) -> None:
    result = translator.interpret("一只戴礼帽的柴犬")
    assert isinstance(result, Interpretation)
    assert result.original == "一只戴礼帽的柴犬"
    assert result.translated is True
    assert result.text
    assert not needs_translation(result.text)
    assert result.text.isascii()
    assert translator.model_calls == 1


def test_english_prompt_is_untouched_and_model_not_called(translator: Translator) -> None:
    result = translator.interpret("a shiba inu in a top hat, 8k")
    assert result == Interpretation(
        "a shiba inu in a top hat, 8k", "a shiba inu in a top hat, 8k", False
    )
    assert translator.model_calls == 0


def test_raw_bypass_skips_translation(translator: Translator) -> None:
    result = translator.interpret("赛博朋克 city", raw=True)
    assert result == Interpretation("赛博朋克 city", "赛博朋克 city", False)
    assert translator.model_calls == 0


def test_mixed_prompt_keeps_english_parts_verbatim(translator: Translator) -> None:
    recorder = RecordingTranslator(translator)
    result = translator.interpret("赛博朋克 city, 8k, 霓虹灯, (masterpiece:1.2)")
    assert recorder.calls == [["赛博朋克", "霓虹灯"]]
    assert result.text == "EN0 city, 8k, EN1, (masterpiece:1.2)"
    assert result.translated


def test_weight_syntax_survives_translation(translator: Translator) -> None:
    # Only the words are translated: A1111 weights, compel's ++ and multi-prompt weights stay,
    # full-width brackets and colons included (a Chinese keyboard types those).
    recorder = RecordingTranslator(translator)
    result = translator.interpret("（红狐狸：1.3），[模糊]，猫++, 雪:: 森林::0.5")
    assert recorder.calls == [["红狐狸", "模糊", "猫", "雪", "森林"]]
    assert result.text == "(EN0:1.3), [EN1], EN2++, EN3:: EN4::0.5"


def test_full_width_punctuation_and_letters_become_ascii(translator: Translator) -> None:
    recorder = RecordingTranslator(translator)
    result = translator.interpret("猫，ＳＤＸＬ、狗。")
    assert recorder.calls == [["猫", "狗"]]
    assert result.text == "EN0, SDXL, EN1."


def test_cjk_words_separated_by_spaces_form_one_segment(translator: Translator) -> None:
    recorder = RecordingTranslator(translator)
    translator.interpret("赛博朋克 城市 夜晚 neon")
    assert recorder.calls == [["赛博朋克 城市 夜晚"]]


def test_translation_is_spaced_from_adjacent_english(translator: Translator) -> None:
    RecordingTranslator(translator)
    assert translator.interpret("a猫in the park").text == "a EN0 in the park"


def test_traditional_chinese_is_converted_to_simplified_first(translator: Translator) -> None:
    recorder = RecordingTranslator(translator)
    translator.interpret("賽博龐克 城市, 貓")
    assert recorder.calls == [["赛博庞克 城市", "猫"]]


def test_traditional_and_simplified_share_a_cache_entry(translator: Translator) -> None:
    recorder = RecordingTranslator(translator)
    first = translator.interpret("貓")
    second = translator.interpret("猫")
    assert len(recorder.calls) == 1
    assert first.text == second.text


def test_cache_hit_avoids_a_second_model_call(translator: Translator) -> None:
    first = translator.interpret("赛博朋克 city")
    second = translator.interpret("赛博朋克  city")  # same segment, other spacing
    third = translator.interpret("8k, 赛博朋克")
    assert translator.model_calls == 1
    assert first.text == second.text
    assert third.text.startswith("8k, ")


def test_only_misses_reach_the_model_in_one_batch(translator: Translator) -> None:
    recorder = RecordingTranslator(translator)
    translator.interpret("猫")
    translator.interpret("猫, 狗, 龙, 狗")
    assert recorder.calls == [["猫"], ["狗", "龙"]]


def test_cache_is_bounded(tiny_marian_dir: Path) -> None:
    translator = Translator(str(tiny_marian_dir), num_beams=1, max_new_tokens=2, cache_size=2)
    recorder = RecordingTranslator(translator)
    for prompt in ("猫", "狗", "龙", "猫"):
        translator.interpret(prompt)
    # "猫" was evicted by "龙", so it reaches the model twice.
    assert recorder.calls == [["猫"], ["狗"], ["龙"], ["猫"]]


def test_empty_setting_disables_translation() -> None:
    translator = Translator("")
    assert not translator.enabled
    assert translator.interpret("赛博朋克 city") == Interpretation(
        "赛博朋克 city", "赛博朋克 city", False
    )


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        Translator(str(tmp_path / "no-such-model"))
    assert "IMAGINE_TRANSLATOR" in info.value.user_message


def test_uncached_hub_id_offline_is_a_clear_error() -> None:
    # The test session is offline (HF_HUB_OFFLINE=1): transformers used to end in a TypeError
    # here, which start-up did not expect.
    with pytest.raises(ModelNotFound) as info:
        Translator("imagine-test/not-in-the-cache")
    message = info.value.user_message
    assert "IMAGINE_TRANSLATOR" in message and "HF_HUB_OFFLINE" in message


def test_incomplete_local_copy_is_a_clear_error(tiny_marian_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "marian-without-tokenizer"
    shutil.copytree(tiny_marian_dir, broken)
    for name in ("source.spm", "target.spm", "vocab.json"):
        (broken / name).unlink()
    with pytest.raises(ModelNotFound) as info:  # transformers raises a TypeError
        Translator(str(broken))
    assert "IMAGINE_TRANSLATOR" in info.value.user_message
    assert isinstance(info.value.__cause__, TypeError)


def test_concurrent_calls_are_safe(translator: Translator) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(translator.interpret("一只猫, 8k").text)
        except BaseException as exc:  # re-raised below in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 1
    assert translator.model_calls == 1
