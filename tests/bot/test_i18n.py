"""Chinese strings: reply text by locale and the app-command Translator."""

from __future__ import annotations

import re
import string as string_module

import discord
import pytest
from discord import app_commands

from bot.i18n import (
    COMMAND_TEXT,
    COMMAND_TRANSLATIONS,
    MESSAGES,
    ImagineTranslator,
    language_for,
    t,
)

_HAN = re.compile(r"[\u4e00-\u9fff]")
# Discord's rule for chat-input command and option names.
_NAME = re.compile(r"^[-_\w]{1,32}$")
_NAMES = ("imagine", "prompt", "negative_prompt", "seed", "aspect_ratio", "raw")
_NAMES += ("imagine-settings", "history", "info")


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string_module.Formatter().parse(template) if name}


def test_every_message_has_all_three_languages_with_the_same_placeholders() -> None:
    for key, texts in MESSAGES.items():
        assert set(texts) == {"en-US", "zh-CN", "zh-TW"}, key
        english = placeholders(texts["en-US"])
        assert placeholders(texts["zh-CN"]) == english, key
        assert placeholders(texts["zh-TW"]) == english, key
        assert _HAN.search(texts["zh-CN"]) and _HAN.search(texts["zh-TW"]), key


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        (discord.Locale.chinese, "请输入提示词，描述你想画的内容。"),
        ("zh-CN", "请输入提示词，描述你想画的内容。"),
        (discord.Locale.taiwan_chinese, "請輸入提示詞，描述你想畫的內容。"),
        ("zh-TW", "請輸入提示詞，描述你想畫的內容。"),
        (discord.Locale.american_english, "Please give a prompt: describe what to draw."),
        (discord.Locale.japanese, "Please give a prompt: describe what to draw."),
        ("xx-YY", "Please give a prompt: describe what to draw."),
        (None, "Please give a prompt: describe what to draw."),
    ],
)
def test_locale_picks_the_language(locale: discord.Locale | str | None, expected: str) -> None:
    assert t("empty_prompt", locale) == expected


def test_language_for_variants() -> None:
    assert language_for("zh-HK") == "zh-TW"
    assert language_for("zh_Hant_TW") == "zh-TW"
    assert language_for("zh") == "zh-CN"
    assert language_for("en-GB") == "en-US"


def test_formatting() -> None:
    assert t("queued", "en-US", position=3, eta="20 s") == "#3 in queue, starts in about 20 s"
    assert t("queued", "zh-CN", position=3, eta="20 秒") == "排队第 3 位，约 20 秒 后开始"
    assert t("step_progress", "zh-TW", step=2, total=4) == "第 2/4 步"
    assert t("interpreted_as", "zh-CN", text="a cat") == "翻译为：a cat"
    link = "https://discord.com/channels/1/2/3"
    assert link in t("already_shared", discord.Locale.taiwan_chinese, link=link)


def test_unknown_key_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        t("no-such-key", "en-US")


def test_blocked_message_does_not_need_the_term() -> None:
    assert placeholders(MESSAGES["prompt_blocked"]["en-US"]) == set()


def test_command_texts_fit_discord_limits() -> None:
    for text in COMMAND_TEXT.values():
        assert len(text) <= 100
    for english, translations in COMMAND_TRANSLATIONS.items():
        for locale, text in translations.items():
            assert locale in ("zh-CN", "zh-TW")
            limit = 32 if english in _NAMES or english == "Imagine info" else 100
            assert 1 <= len(text) <= limit, text
            if english in _NAMES:
                assert _NAME.match(text) and text == text.lower(), text


def context(location: app_commands.TranslationContextLocation) -> app_commands.TranslationContext:
    return app_commands.TranslationContext(location=location, data=None)


async def test_translator_returns_chinese_names_and_none_otherwise() -> None:
    translator = ImagineTranslator()
    name = context(app_commands.TranslationContextLocation.command_name)
    imagine = app_commands.locale_str("imagine")
    assert await translator.translate(imagine, discord.Locale.chinese, name) == "画图"
    assert await translator.translate(imagine, discord.Locale.taiwan_chinese, name) == "畫圖"
    assert await translator.translate(imagine, discord.Locale.french, name) is None
    unknown = app_commands.locale_str("no such command")
    assert await translator.translate(unknown, discord.Locale.chinese, name) is None


async def test_translator_localises_a_real_command_tree() -> None:
    client = discord.Client(intents=discord.Intents.none())
    tree = app_commands.CommandTree(client)

    @tree.command(name="imagine", description=COMMAND_TEXT["imagine"])
    @app_commands.describe(
        prompt=COMMAND_TEXT["imagine.prompt"],
        raw=COMMAND_TEXT["imagine.raw"],
    )
    async def imagine(interaction: discord.Interaction, prompt: str, raw: bool = False) -> None:
        """Not called."""

    @tree.context_menu(name="Imagine info")
    async def imagine_info(interaction: discord.Interaction, message: discord.Message) -> None:
        """Not called."""

    translator = ImagineTranslator()
    await tree.set_translator(translator)
    command = tree.get_command("imagine")
    assert command is not None
    payload = await command.get_translated_payload(tree, translator)
    assert payload["name_localizations"] == {"zh-CN": "画图", "zh-TW": "畫圖"}
    assert payload["description_localizations"]["zh-CN"] == "根据提示词生成四张图片"
    options = {option["name"]: option for option in payload["options"]}
    assert options["prompt"]["name_localizations"] == {"zh-CN": "提示词", "zh-TW": "提示詞"}
    assert options["raw"]["description_localizations"]["zh-TW"] == "按原樣使用提示詞，不翻譯"

    menu = tree.get_command("Imagine info", type=discord.AppCommandType.message)
    assert menu is not None
    menu_payload = await menu.get_translated_payload(tree, translator)
    assert menu_payload["name_localizations"] == {"zh-CN": "画图信息", "zh-TW": "畫圖資訊"}
    await client.close()
