"""Simplified (zh-CN) and Traditional (zh-TW) Chinese for commands and replies.

Two pieces:

* ``ImagineTranslator``: a ``discord.app_commands.Translator``. discord.py asks it, at
  ``CommandTree.sync``, for every command/option name and description in every locale; it
  answers from ``COMMAND_TRANSLATIONS``, keyed by the English string (the ``locale_str``
  message), and returns None for anything else so Discord shows the English.
* ``t(key, locale, **kw)``: user-facing reply text in the interaction's locale; English for any
  other locale.

The English command texts the cogs should use are in ``COMMAND_TEXT`` so the keys match.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

log = logging.getLogger(__name__)

ENGLISH = "en-US"
SIMPLIFIED = "zh-CN"
TRADITIONAL = "zh-TW"

# English names and descriptions for the cogs (Discord: names <= 32, descriptions <= 100).
COMMAND_TEXT: dict[str, str] = {
    "imagine": "Create four images from a prompt",
    "imagine.prompt": "What to draw, in English or Chinese",
    "imagine.negative_prompt": "What to keep out of the images",
    "imagine.seed": "Seed for repeatable results (random when empty)",
    "imagine.aspect_ratio": "Image shape, width:height",
    "imagine.raw": "Use the prompt exactly as typed, without translation",
    "imagine.image": "A picture to start from (PNG, JPEG or WebP)",
    "imagine.strength": "How far to move away from the picture: 0.1 close to 1.0 free (0.6)",
    "imagine.tile": "Make seamless textures: the images tile when laid side by side",
    "imagine.repeat": "Run the prompt this many times, each a set of its own (like --repeat)",
    "imagine.style": "A style the server's operator curated (type to search)",
    "imagine-settings": "Imagine settings for this server (needs Manage Server)",
    "prefer": "Your own presets for the prompts you type (only you see them)",
    "prefer.suffix": "Text added to the end of each of your new prompts",
    "prefer.negative": "Your negative prompt when you give none",
    "prefer.aspect_ratio": "Your aspect ratio when you choose none",
    "prefer.option": "Shortcuts: --name in a prompt becomes its value",
    "prefer.option.set": "Set (or, with no value, remove) a shortcut --name",
    "prefer.list": "Show your presets (only to you)",
    "prefer.reset": "Remove all your presets",
    "history": "Your recent images",
    "info": "Full parameters of a job, to reproduce it",
    "describe": "Four prompts for a picture, to /imagine from",
    "describe.picture": "The picture to describe (PNG, JPEG or WebP)",
}

# English string -> {locale: translation}. Names: Discord allows Chinese characters in command
# and option names (they must match ^[-_\p{L}\p{N}]{1,32}$ and be lowercase where the script has
# case). Context-menu names may contain spaces.
COMMAND_TRANSLATIONS: dict[str, dict[str, str]] = {
    # names
    "imagine": {SIMPLIFIED: "画图", TRADITIONAL: "畫圖"},
    "prompt": {SIMPLIFIED: "提示词", TRADITIONAL: "提示詞"},
    "negative_prompt": {SIMPLIFIED: "反向提示词", TRADITIONAL: "反向提示詞"},
    "seed": {SIMPLIFIED: "种子", TRADITIONAL: "種子"},
    "aspect_ratio": {SIMPLIFIED: "宽高比", TRADITIONAL: "寬高比"},
    "raw": {SIMPLIFIED: "原文", TRADITIONAL: "原文"},
    "tile": {SIMPLIFIED: "平铺", TRADITIONAL: "平鋪"},
    "repeat": {SIMPLIFIED: "重复", TRADITIONAL: "重複"},
    "imagine-settings": {SIMPLIFIED: "画图设置", TRADITIONAL: "畫圖設定"},
    "history": {SIMPLIFIED: "历史记录", TRADITIONAL: "歷史紀錄"},
    "info": {SIMPLIFIED: "信息", TRADITIONAL: "資訊"},
    "Imagine info": {SIMPLIFIED: "画图信息", TRADITIONAL: "畫圖資訊"},
    "describe": {SIMPLIFIED: "看图写词", TRADITIONAL: "看圖寫詞"},
    "picture": {SIMPLIFIED: "图片", TRADITIONAL: "圖片"},
    "Describe picture": {SIMPLIFIED: "看图写提示词", TRADITIONAL: "看圖寫提示詞"},
    COMMAND_TEXT["describe"]: {
        SIMPLIFIED: "为一张图片写出四条提示词，可直接用来画图",
        TRADITIONAL: "為一張圖片寫出四條提示詞，可直接用來畫圖",
    },
    COMMAND_TEXT["describe.picture"]: {
        SIMPLIFIED: "要描述的图片（PNG、JPEG 或 WebP）",
        TRADITIONAL: "要描述的圖片（PNG、JPEG 或 WebP）",
    },
    # descriptions
    COMMAND_TEXT["imagine"]: {
        SIMPLIFIED: "根据提示词生成四张图片",
        TRADITIONAL: "根據提示詞生成四張圖片",
    },
    COMMAND_TEXT["imagine.prompt"]: {
        SIMPLIFIED: "要画的内容，中文或英文均可",
        TRADITIONAL: "要畫的內容，中文或英文皆可",
    },
    COMMAND_TEXT["imagine.negative_prompt"]: {
        SIMPLIFIED: "不希望出现在图片中的内容",
        TRADITIONAL: "不希望出現在圖片中的內容",
    },
    COMMAND_TEXT["imagine.seed"]: {
        SIMPLIFIED: "随机种子，用于复现结果（留空则随机）",
        TRADITIONAL: "隨機種子，用於重現結果（留空則隨機）",
    },
    COMMAND_TEXT["imagine.aspect_ratio"]: {
        SIMPLIFIED: "图片宽高比（宽:高）",
        TRADITIONAL: "圖片寬高比（寬:高）",
    },
    COMMAND_TEXT["imagine.raw"]: {
        SIMPLIFIED: "按原样使用提示词，不翻译",
        TRADITIONAL: "按原樣使用提示詞，不翻譯",
    },
    COMMAND_TEXT["imagine.image"]: {
        SIMPLIFIED: "作为起点的图片（PNG、JPEG 或 WebP）",
        TRADITIONAL: "作為起點的圖片（PNG、JPEG 或 WebP）",
    },
    COMMAND_TEXT["imagine.strength"]: {
        SIMPLIFIED: "偏离图片的程度：0.1 贴近原图，1.0 自由发挥（默认 0.6）",
        TRADITIONAL: "偏離圖片的程度：0.1 貼近原圖，1.0 自由發揮（預設 0.6）",
    },
    COMMAND_TEXT["imagine.repeat"]: {
        SIMPLIFIED: "把提示词运行这么多次，每次单独一组（同 --repeat）",
        TRADITIONAL: "把提示詞執行這麼多次，每次單獨一組（同 --repeat）",
    },
    COMMAND_TEXT["imagine.style"]: {
        SIMPLIFIED: "机器人管理员精选的风格（输入文字搜索）",
        TRADITIONAL: "機器人管理員精選的風格（輸入文字搜尋）",
    },
    COMMAND_TEXT["imagine.tile"]: {
        SIMPLIFIED: "生成无缝贴图：图片左右上下拼接不留接缝",
        TRADITIONAL: "生成無縫貼圖：圖片左右上下拼接不留接縫",
    },
    COMMAND_TEXT["prefer"]: {
        SIMPLIFIED: "你自己的提示词预设（只有你能看到）",
        TRADITIONAL: "你自己的提示詞預設（只有你能看到）",
    },
    COMMAND_TEXT["prefer.suffix"]: {
        SIMPLIFIED: "自动加在你每条新提示词末尾的文字",
        TRADITIONAL: "自動加在你每條新提示詞末尾的文字",
    },
    COMMAND_TEXT["prefer.negative"]: {
        SIMPLIFIED: "你未填写时使用的反向提示词",
        TRADITIONAL: "你未填寫時使用的反向提示詞",
    },
    COMMAND_TEXT["prefer.aspect_ratio"]: {
        SIMPLIFIED: "你未选择时使用的宽高比",
        TRADITIONAL: "你未選擇時使用的寬高比",
    },
    COMMAND_TEXT["prefer.option"]: {
        SIMPLIFIED: "快捷词：提示词中的 --名称 会替换为其内容",
        TRADITIONAL: "快捷詞：提示詞中的 --名稱 會替換為其內容",
    },
    COMMAND_TEXT["prefer.option.set"]: {
        SIMPLIFIED: "设置（不填内容则删除）快捷词 --名称",
        TRADITIONAL: "設定（不填內容則刪除）快捷詞 --名稱",
    },
    COMMAND_TEXT["prefer.list"]: {
        SIMPLIFIED: "查看你的预设（仅你可见）",
        TRADITIONAL: "查看你的預設（僅你可見）",
    },
    COMMAND_TEXT["prefer.reset"]: {
        SIMPLIFIED: "删除你的所有预设",
        TRADITIONAL: "刪除你的所有預設",
    },
    COMMAND_TEXT["imagine-settings"]: {
        SIMPLIFIED: "本服务器的画图设置（需要“管理服务器”权限）",
        TRADITIONAL: "本伺服器的畫圖設定（需要「管理伺服器」權限）",
    },
    COMMAND_TEXT["history"]: {
        SIMPLIFIED: "你最近生成的图片",
        TRADITIONAL: "你最近生成的圖片",
    },
    COMMAND_TEXT["info"]: {
        SIMPLIFIED: "查看任务的完整参数，以便复现",
        TRADITIONAL: "查看任務的完整參數，以便重現",
    },
}

# Reply strings: key -> {locale: text}. Placeholders use str.format names.
MESSAGES: dict[str, dict[str, str]] = {
    "empty_prompt": {
        ENGLISH: "Please give a prompt: describe what to draw.",
        SIMPLIFIED: "请输入提示词，描述你想画的内容。",
        TRADITIONAL: "請輸入提示詞，描述你想畫的內容。",
    },
    # The matched term is deliberately not echoed (it is logged for moderators): repeating an
    # explicit word back, even ephemerally, helps nobody, and admins can see and adjust the list.
    "prompt_blocked": {
        ENGLISH: "This prompt contains a term that is blocked on this server. Please rephrase it.",
        SIMPLIFIED: "提示词中包含本服务器禁止的词语，请修改后重试。",
        TRADITIONAL: "提示詞中包含本伺服器禁止的詞語，請修改後重試。",
    },
    "queue_full": {
        ENGLISH: "The queue is full right now. Please try again in a minute.",
        SIMPLIFIED: "队列已满，请稍后再试。",
        TRADITIONAL: "佇列已滿，請稍後再試。",
    },
    "user_limit": {
        ENGLISH: "You already have {limit} jobs waiting. Please wait for one to finish.",
        SIMPLIFIED: "你已有 {limit} 个任务在排队，请等其中一个完成后再试。",
        TRADITIONAL: "你已有 {limit} 個任務在排隊，請等其中一個完成後再試。",
    },
    "not_yours": {
        ENGLISH: "Only the person who made these images can do that.",
        SIMPLIFIED: "只有生成这些图片的人才能进行此操作。",
        TRADITIONAL: "只有生成這些圖片的人才能進行此操作。",
    },
    "job_not_found": {
        ENGLISH: "I can't find that job any more.",
        SIMPLIFIED: "找不到这个任务了。",
        TRADITIONAL: "找不到這個任務了。",
    },
    "generation_failed": {
        ENGLISH: "Something went wrong while making the images. Please try again.",
        SIMPLIFIED: "生成图片时出错了，请重试。",
        TRADITIONAL: "生成圖片時出錯了，請重試。",
    },
    "something_wrong": {
        ENGLISH: "Something went wrong on my side. It has been logged; please try again.",
        SIMPLIFIED: "我这边出了点问题，已记录下来，请重试。",
        TRADITIONAL: "我這邊出了點問題，已記錄下來，請重試。",
    },
    "not_here": {
        ENGLISH: "You cannot use this command here.",
        SIMPLIFIED: "你不能在这里使用这个命令。",
        TRADITIONAL: "你不能在這裡使用這個命令。",
    },
    "interpreted_as": {
        ENGLISH: "Interpreted as: {text}",
        SIMPLIFIED: "翻译为：{text}",
        TRADITIONAL: "翻譯為：{text}",
    },
    "translation_bypass_hint": {
        ENGLISH: "Add --raw (or set raw to True) to use your prompt exactly as typed.",
        SIMPLIFIED: "加上 --raw（或将“原文”设为 True）即可按原样使用提示词，不翻译。",
        TRADITIONAL: "加上 --raw（或將「原文」設為 True）即可按原樣使用提示詞，不翻譯。",
    },
    "showcase_not_set": {
        ENGLISH: "This server has no showcase channel yet. "
        "An admin can set one in /imagine-settings.",
        SIMPLIFIED: "本服务器尚未设置展示频道，管理员可以在 /imagine-settings 中设置。",
        TRADITIONAL: "本伺服器尚未設定展示頻道，管理員可以在 /imagine-settings 中設定。",
    },
    "already_shared": {
        ENGLISH: "Already shared: {link}",
        SIMPLIFIED: "已经分享过了：{link}",
        TRADITIONAL: "已經分享過了：{link}",
    },
    "shared": {
        ENGLISH: "Shared to the showcase: {link}",
        SIMPLIFIED: "已分享到展示频道：{link}",
        TRADITIONAL: "已分享到展示頻道：{link}",
    },
    "settings_saved": {
        ENGLISH: "Settings saved.",
        SIMPLIFIED: "设置已保存。",
        TRADITIONAL: "設定已儲存。",
    },
    "no_permission": {
        ENGLISH: "You need the Manage Server permission to do that.",
        SIMPLIFIED: "你需要“管理服务器”权限才能进行此操作。",
        TRADITIONAL: "你需要「管理伺服器」權限才能進行此操作。",
    },
    "image_withheld": {
        ENGLISH: "Images withheld by the safety filter: {count}",
        SIMPLIFIED: "被安全过滤器隐藏的图片：{count} 张",
        TRADITIONAL: "被安全過濾器隱藏的圖片：{count} 張",
    },
    # The floor (sexual content involving minors) is the same everywhere and cannot be changed
    # by any server, so it gets its own answer rather than "blocked on this server".
    "prompt_refused_floor": {
        ENGLISH: "This prompt cannot be used anywhere: sexual content involving minors is "
        "never generated.",
        SIMPLIFIED: "此提示词在任何地方都不能使用：绝不生成涉及未成年人的性内容。",
        TRADITIONAL: "此提示詞在任何地方都不能使用：絕不生成涉及未成年人的性內容。",
    },
    "translation_unavailable": {
        ENGLISH: "Translation is not available, so your prompt was used as typed.",
        SIMPLIFIED: "翻译功能不可用，已按原文使用你的提示词。",
        TRADITIONAL: "翻譯功能不可用，已按原文使用你的提示詞。",
    },
    "translation_cut": {
        ENGLISH: "Only the first {limit} characters were translated; the rest was left out.",
        SIMPLIFIED: "只翻译了前 {limit} 个字符，其余部分已省略。",
        TRADITIONAL: "只翻譯了前 {limit} 個字元，其餘部分已省略。",
    },
    "preset_added": {
        ENGLISH: "Your presets added: {what}",
        SIMPLIFIED: "你的预设添加了：{what}",
        TRADITIONAL: "你的預設加入了：{what}",
    },
    "images_purged": {
        ENGLISH: "The images of this set are no longer stored (old sets are cleaned up). "
        "Use 🔄 or /imagine with its seed to make them again.",
        SIMPLIFIED: "这组图片已不再保存（旧图片会被定期清理）。"
        "可以用 🔄 或带种子的 /imagine 重新生成。",
        TRADITIONAL: "這組圖片已不再保存（舊圖片會被定期清理）。"
        "可以用 🔄 或帶種子的 /imagine 重新生成。",
    },
    "upload_refused": {
        ENGLISH: "The safety filter refused that picture: it cannot be used as an image prompt.",
        SIMPLIFIED: "安全过滤器拒绝了这张图片：它不能用作图片提示。",
        TRADITIONAL: "安全過濾器拒絕了這張圖片：它不能用作圖片提示。",
    },
    "upload_unreadable": {
        ENGLISH: "That picture could not be downloaded from Discord. Please try again.",
        SIMPLIFIED: "无法从 Discord 下载这张图片，请重试。",
        TRADITIONAL: "無法從 Discord 下載這張圖片，請重試。",
    },
    "image_not_available": {
        ENGLISH: "That image is not available.",
        SIMPLIFIED: "这张图片不可用。",
        TRADITIONAL: "這張圖片不可用。",
    },
    "share_not_allowed": {
        ENGLISH: "Only the person who made these images (or a moderator) can share them.",
        SIMPLIFIED: "只有生成这些图片的人（或管理员）才能分享。",
        TRADITIONAL: "只有生成這些圖片的人（或管理員）才能分享。",
    },
    # The Remix form (Discord: title <= 45, labels <= 45, option descriptions <= 100).
    "remix_title": {ENGLISH: "Remix", SIMPLIFIED: "混搭重绘", TRADITIONAL: "混搭重繪"},
    "remix_prompt": {ENGLISH: "Prompt", SIMPLIFIED: "提示词", TRADITIONAL: "提示詞"},
    "remix_negative": {
        ENGLISH: "Negative prompt",
        SIMPLIFIED: "反向提示词",
        TRADITIONAL: "反向提示詞",
    },
    "remix_seed": {ENGLISH: "Seed", SIMPLIFIED: "种子", TRADITIONAL: "種子"},
    "remix_new_seeds": {ENGLISH: "New seeds", SIMPLIFIED: "新种子", TRADITIONAL: "新種子"},
    "remix_new_seeds_hint": {
        ENGLISH: "Four new images from your prompt",
        SIMPLIFIED: "用你的提示词生成四张新图片",
        TRADITIONAL: "用你的提示詞生成四張新圖片",
    },
    "remix_same_seed": {
        ENGLISH: "Same seed ({seed})",
        SIMPLIFIED: "相同种子（{seed}）",
        TRADITIONAL: "相同種子（{seed}）",
    },
    "remix_same_seed_hint": {
        ENGLISH: "With the prompt unchanged: the original images again",
        SIMPLIFIED: "提示词不变时：再次生成原来的图片",
        TRADITIONAL: "提示詞不變時：再次生成原來的圖片",
    },
    "remix_elsewhere": {
        ENGLISH: "I can't post images in this channel. Run it in {where}:\n{command}",
        SIMPLIFIED: "我无法在此频道发送图片。请在 {where} 运行：\n{command}",
        TRADITIONAL: "我無法在此頻道傳送圖片。請在 {where} 執行：\n{command}",
    },
    "remix_anywhere": {
        ENGLISH: "a channel where I may post images",
        SIMPLIFIED: "我可以发送图片的频道",
        TRADITIONAL: "我可以傳送圖片的頻道",
    },
    "gallery_unavailable": {
        ENGLISH: "The gallery is not available on this bot: its operator has not set "
        "IMAGINE_GALLERY_PORT. Nothing was changed.",
        SIMPLIFIED: "此机器人未启用图库：运营者尚未设置 IMAGINE_GALLERY_PORT。设置未更改。",
        TRADITIONAL: "此機器人未啟用圖庫：營運者尚未設定 IMAGINE_GALLERY_PORT。設定未變更。",
    },
    "share_nsfw": {
        ENGLISH: "Images made in an age-restricted channel can only be shared to an "
        "age-restricted showcase channel.",
        SIMPLIFIED: "在年龄限制频道生成的图片只能分享到年龄限制的展示频道。",
        TRADITIONAL: "在年齡限制頻道生成的圖片只能分享到年齡限制的展示頻道。",
    },
    "share_in_servers": {
        ENGLISH: "Sharing works in servers only.",
        SIMPLIFIED: "分享功能只能在服务器中使用。",
        TRADITIONAL: "分享功能只能在伺服器中使用。",
    },
    "floor_not_removable": {
        ENGLISH: "These words are part of the safety floor and cannot be unblocked: {terms}",
        SIMPLIFIED: "这些词属于安全底线，不能解除屏蔽：{terms}",
        TRADITIONAL: "這些詞屬於安全底線，不能解除封鎖：{terms}",
    },
    "generation_timed_out": {
        ENGLISH: "The GPU did not finish this job in time. The bot is restarting; please try "
        "again in a minute.",
        SIMPLIFIED: "GPU 未能及时完成此任务，机器人正在重启，请稍后再试。",
        TRADITIONAL: "GPU 未能及時完成此任務，機器人正在重新啟動，請稍後再試。",
    },
    "cancelled": {
        ENGLISH: "Cancelled.",
        SIMPLIFIED: "已取消。",
        TRADITIONAL: "已取消。",
    },
    "queued": {
        ENGLISH: "#{position} in queue, starts in about {eta}",
        SIMPLIFIED: "排队第 {position} 位，约 {eta} 后开始",
        TRADITIONAL: "排隊第 {position} 位，約 {eta} 後開始",
    },
    "waiting_for_worker": {
        ENGLISH: "#{position} in queue, waiting for a GPU worker to come online",
        SIMPLIFIED: "排队第 {position} 位，正在等待 GPU 工作进程上线",
        TRADITIONAL: "排隊第 {position} 位，正在等待 GPU 工作程序上線",
    },
    "step_progress": {
        ENGLISH: "step {step}/{total}",
        SIMPLIFIED: "第 {step}/{total} 步",
        TRADITIONAL: "第 {step}/{total} 步",
    },
    "describe_off": {
        ENGLISH: "Describing pictures is not set up on this bot (the operator can turn it on "
        "with IMAGINE_DESCRIBE_MODEL).",
        SIMPLIFIED: "本机器人没有开启看图写词功能（管理员可以用 IMAGINE_DESCRIBE_MODEL 开启）。",
        TRADITIONAL: "本機器人沒有開啟看圖寫詞功能（管理員可以用 IMAGINE_DESCRIBE_MODEL 開啟）。",
    },
    "describe_no_picture": {
        ENGLISH: "That message has no picture to describe.",
        SIMPLIFIED: "这条消息里没有可以描述的图片。",
        TRADITIONAL: "這則訊息裡沒有可以描述的圖片。",
    },
    "describe_title": {
        ENGLISH: "Prompts for this picture",
        SIMPLIFIED: "这张图片的提示词",
        TRADITIONAL: "這張圖片的提示詞",
    },
    "describe_hint": {
        ENGLISH: "1-4: /imagine that prompt · 🖼 1-4: with the picture as an image prompt",
        SIMPLIFIED: "1-4：用这条提示词画图 · 🖼 1-4：同时以这张图片作为图片提示",
        TRADITIONAL: "1-4：用這條提示詞畫圖 · 🖼 1-4：同時以這張圖片作為圖片提示",
    },
    "describe_hidden": {
        ENGLISH: "(not shown: it has words this server blocks)",
        SIMPLIFIED: "（未显示：其中有本服务器屏蔽的词）",
        TRADITIONAL: "（未顯示：其中有本伺服器封鎖的詞）",
    },
    "describe_reply": {
        ENGLISH: "Pick one of the prompts with the buttons 1-4 (🖼: with the picture), or "
        "run /describe again.",
        SIMPLIFIED: "请用按钮 1-4 选择一条提示词（🖼：连同图片），或重新运行 /describe。",
        TRADITIONAL: "請用按鈕 1-4 選擇一條提示詞（🖼：連同圖片），或重新執行 /describe。",
    },
    "suggestion_gone": {
        ENGLISH: "That prompt is not available.",
        SIMPLIFIED: "这条提示词不可用。",
        TRADITIONAL: "這條提示詞不可用。",
    },
    "picture_purged": {
        ENGLISH: "The picture is no longer stored (old pictures are cleaned up). Use the "
        "button without 🖼, or /describe it again.",
        SIMPLIFIED: "这张图片已不再保存（旧图片会被定期清理）。"
        "请用不带 🖼 的按钮，或重新 /describe。",
        TRADITIONAL: "這張圖片已不再保存（舊圖片會被定期清理）。"
        "請用不帶 🖼 的按鈕，或重新 /describe。",
    },
}


def language_for(locale: discord.Locale | str | None) -> str:
    """Map a Discord locale (``discord.Locale`` or its value, e.g. ``"zh-TW"``) to the language
    whose strings we have: ``"zh-CN"``, ``"zh-TW"`` or ``"en-US"``."""
    if locale is None:
        return ENGLISH
    value = locale.value if isinstance(locale, discord.Locale) else str(locale)
    value = value.replace("_", "-").casefold()
    if value in ("zh-tw", "zh-hk", "zh-mo", "zh-hant") or value.startswith("zh-hant"):
        return TRADITIONAL
    if value == "zh" or value.startswith("zh-"):
        return SIMPLIFIED
    return ENGLISH


def t(key: str, locale: discord.Locale | str | None = None, **kw: Any) -> str:
    """Reply text for ``key`` in ``locale`` (English when we have no such language).

    Args:
        key: one of ``MESSAGES``; an unknown key is a programming error (KeyError).
        locale: ``interaction.locale`` (or ``guild.preferred_locale``), or its string value.
        **kw: values for the placeholders, e.g. ``t("queued", loc, position=2, eta="10 s")``.
    """
    texts = MESSAGES[key]
    template = texts.get(language_for(locale)) or texts[ENGLISH]
    return template.format(**kw)


class ImagineTranslator(app_commands.Translator):
    """Answers discord.py's translation requests for command names and descriptions.

    Set it with ``await bot.tree.set_translator(ImagineTranslator())`` before ``tree.sync()``.
    """

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        """Return the Chinese for ``string`` in zh-CN/zh-TW, or None (Discord shows English)."""
        translations = COMMAND_TRANSLATIONS.get(string.message)
        if translations is None:
            return None
        return translations.get(locale.value)
