"""Optional models that cannot be loaded: the bot still starts, serves, and says why once.

The translator, the safety classifier and the preview VAE are optional. Offline (this test
session has HF_HUB_OFFLINE=1), with a wrong id or a missing folder, each is one warning naming
its setting, no traceback, and the bot serves without the feature.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from bot.i18n import t
from tests.bot.test_conversation_e2e import imagine

OPTIONAL_SETTINGS = ("IMAGINE_TRANSLATOR", "IMAGINE_SAFETY_MODEL", "IMAGINE_PREVIEW_VAE")


def with_engine(settings, **changes):
    engine = settings.engine.model_copy(update=changes)
    return settings.model_copy(update={"engine": engine})


def warnings_naming(caplog, setting: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.levelno >= logging.WARNING and setting in record.getMessage()
    ]


async def test_bot_serves_without_optional_models_that_cannot_load(
    bot_process, standin, world, bot_settings, tmp_path, caplog
):
    settings = with_engine(
        bot_settings,
        translator="Helsinki-NLP/opus-mt-zh-en",  # the default: a hub id, not in the cache
        safety_model=str(tmp_path / "no-such-classifier"),
        preview_vae="imagine-test/no-such-taesd",
    )
    caplog.set_level(logging.INFO)
    bot = await bot_process.start(settings)

    assert bot.translator is None and bot.safety is None
    for setting in OPTIONAL_SETTINGS:
        [warning] = warnings_naming(caplog, setting)
        assert warning.exc_info is None, f"{setting}: an expected failure has no traceback"
    [translator_warning] = warnings_naming(caplog, "IMAGINE_TRANSLATOR")
    assert "Helsinki-NLP/opus-mt-zh-en" in translator_warning.getMessage()
    assert "HF_HUB_OFFLINE" in translator_warning.getMessage()  # the reason
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    # Served as typed: a Chinese prompt too.
    _, message = await imagine(standin, world.alice, world.general, prompt="一只猫, 8k")
    assert len(message.attachments) == 4
    assert t("translation_unavailable", "en-US") in message.content  # the user is told
    _, message = await imagine(standin, world.alice, world.general, prompt="a red fox")
    assert len(message.attachments) == 4
    assert t("translation_unavailable", "en-US") not in message.content


class SlowTranslator:
    """Stands in for Translator: loading takes until the test says so."""

    release = threading.Event()

    def __init__(self, model: str) -> None:
        self.model_id = model
        self.enabled = True
        assert self.release.wait(30)


async def test_slow_optional_model_does_not_hold_up_start_up(
    bot_process, standin, world, bot_settings, monkeypatch, caplog
):
    import engine.translation
    from bot.client import ImagineBot

    monkeypatch.setattr(engine.translation, "Translator", SlowTranslator)
    monkeypatch.setattr(ImagineBot, "optional_model_wait_s", 0.3)
    SlowTranslator.release.clear()
    caplog.set_level(logging.INFO)
    try:
        bot = await bot_process.start(with_engine(bot_settings, translator="slow/translator"))
        assert bot.translator is None
        [warning] = warnings_naming(caplog, "IMAGINE_TRANSLATOR")
        assert "still loading" in warning.getMessage()
        _, message = await imagine(standin, world.alice, world.general, prompt="a red fox")
        assert len(message.attachments) == 4
    finally:
        SlowTranslator.release.set()
    # Taken into use once it is ready, without a restart.
    for _ in range(200):
        if bot.translator is not None:
            break
        await asyncio.sleep(0.05)
    assert isinstance(bot.translator, SlowTranslator)
    assert len(warnings_naming(caplog, "IMAGINE_TRANSLATOR")) == 1
