"""Safety checker: a tiny ViT classifier built from config, biased to always/never flag."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

from engine.errors import ModelNotFound
from engine.safety import SafetyChecker, SafetyVerdict


def build_tiny_classifier(directory: Path, *, nsfw_bias: float, labels: dict[int, str]) -> Path:
    """Save a tiny random ViT whose classifier bias decides the label whatever the image."""
    config = ViTConfig(
        image_size=32,
        patch_size=16,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=labels,
        label2id={label: index for index, label in labels.items()},
    )
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        # Zero weights + a large bias: the logits are the bias, so the verdict is known.
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[1] = nsfw_bias
    model.save_pretrained(directory)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def always_flags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    labels = {0: "normal", 1: "nsfw"}
    return build_tiny_classifier(tmp_path_factory.mktemp("flags"), nsfw_bias=10.0, labels=labels)


@pytest.fixture(scope="module")
def never_flags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    labels = {0: "normal", 1: "nsfw"}
    return build_tiny_classifier(tmp_path_factory.mktemp("clean"), nsfw_bias=-10.0, labels=labels)


def images(count: int = 4) -> list[Image.Image]:
    colours = ["red", "green", "blue", "white"]
    return [Image.new("RGB", (64, 48), colours[i % len(colours)]) for i in range(count)]


def test_flags_unsafe_images(always_flags: Path) -> None:
    verdicts = SafetyChecker(str(always_flags)).check(images())
    assert len(verdicts) == 4
    for verdict in verdicts:
        assert verdict.flagged
        assert verdict.label == "nsfw"
        assert verdict.score > 0.99


def test_passes_safe_images(never_flags: Path) -> None:
    verdicts = SafetyChecker(str(never_flags)).check(images())
    assert [verdict.flagged for verdict in verdicts] == [False] * 4
    assert verdicts[0].label == "normal"
    assert verdicts[0].score > 0.99


def test_threshold_decides(tmp_path: Path) -> None:
    # bias 0 for both labels -> p(nsfw) == 0.5 exactly
    model_dir = build_tiny_classifier(tmp_path, nsfw_bias=0.0, labels={0: "normal", 1: "NSFW"})
    assert SafetyChecker(str(model_dir), threshold=0.5).check(images(1))[0].flagged
    verdict = SafetyChecker(str(model_dir), threshold=0.6).check(images(1))[0]
    assert not verdict.flagged


def test_label_names_are_case_insensitive(tmp_path: Path) -> None:
    model_dir = build_tiny_classifier(tmp_path, nsfw_bias=10.0, labels={0: "Neutral", 1: "Porn"})
    [verdict] = SafetyChecker(str(model_dir)).check(images(1))
    assert verdict == SafetyVerdict(flagged=True, label="Porn", score=verdict.score)


def test_grayscale_and_rgba_images_are_accepted(always_flags: Path) -> None:
    mixed = [Image.new("L", (40, 40), 128), Image.new("RGBA", (40, 40), (1, 2, 3, 4))]
    assert [v.flagged for v in SafetyChecker(str(always_flags)).check(mixed)] == [True, True]


def test_empty_setting_disables_checker() -> None:
    checker = SafetyChecker("")
    assert not checker.enabled
    assert checker.check(images(2)) == [SafetyVerdict(False, "", 0.0)] * 2


def test_no_images_no_work(always_flags: Path) -> None:
    assert SafetyChecker(str(always_flags)).check([]) == []


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        SafetyChecker(str(tmp_path / "missing"))
    assert "IMAGINE_SAFETY_MODEL" in info.value.user_message


def test_uncached_hub_id_offline_is_a_clear_error() -> None:
    with pytest.raises(ModelNotFound) as info:  # the test session is offline
        SafetyChecker("imagine-test/not-in-the-cache")
    message = info.value.user_message
    assert "IMAGINE_SAFETY_MODEL" in message and "HF_HUB_OFFLINE" in message


def test_broken_local_copy_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFound) as info:
        SafetyChecker(str(tmp_path))
    assert "IMAGINE_SAFETY_MODEL" in info.value.user_message


def test_bad_threshold_is_rejected() -> None:
    with pytest.raises(ValueError):
        SafetyChecker("", threshold=1.5)


def test_concurrent_checks(always_flags: Path) -> None:
    checker = SafetyChecker(str(always_flags))
    results: list[list[SafetyVerdict]] = []
    threads = [threading.Thread(target=lambda: results.append(checker.check(images(2))))]
    threads += [threading.Thread(target=lambda: results.append(checker.check(images(2))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2
    assert all(v.flagged for batch in results for v in batch)
