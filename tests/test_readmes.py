"""README.md and README.zh-CN.md name the same settings and commands, so they cannot drift.

The Chinese README is a translation: its prose, headings and table text are Chinese, but every
name a reader types or looks up is kept exactly as in English. Each README is reduced to sets of
such names, and the sets must be equal; a failure lists, per kind, what one file has and the
other lacks (``README.zh-CN.md lacks (settings): IMAGINE_STYLES``). The kinds:

- settings: every UPPER_SNAKE name anywhere in the text, prose and code alike (``IMAGINE_*``,
  ``DISCORD_*``, ``HF_*``, ``CUDA_VISIBLE_DEVICES``...). The name's edges are ASCII-only, so
  Chinese right next to it (``设置IMAGINE_MODEL为``) does not hide it, as ``\\b`` would;
- code-block lines: every line of every fenced code block, compared as a set of lines (not
  block by block), with ``# comments`` stripped (comments may be translated; a ``#`` inside
  quotes or a word is kept), runs of spaces collapsed and blank lines dropped;
- inline commands: inline code that starts with a command (``python``, ``pip``, ``bash``,
  ``docker``, ``redis-server``, ``hf``..., optionally after ``VAR=value``);
- slash commands and paths: inline code that starts with ``/`` (``/imagine``, ``/prefer suffix
  [text]``, ``/metrics``), options included;
- other inline code: every other inline code span (option names, ``--flags``, file paths, URLs,
  values, button labels, sample prompts): these are literals, never translated;
- links: link targets (files and URLs, also bare URLs in prose); in-page ``#anchors`` are not
  compared, since they follow the (translated) headings, but must resolve in their own file.

Inline code is found by its backticks, whatever punctuation surrounds it (``（`/imagine`）``, a
full-width comma), and a span that wraps onto the next line is one span (whitespace collapsed).
Besides the sets: the two files have the same heading outline (levels in order), and they link
each other at the top.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
EN_NAME = "README.md"
ZH_NAME = "README.zh-CN.md"

SETTING = re.compile(
    r"(?<![A-Za-z0-9_])[A-Z][A-Z0-9]*_(?:[A-Z0-9]+_)*(?:[A-Z0-9]+|\*)(?![A-Za-z0-9_])"
)
COMMANDS = (
    "apt",
    "apt-get",
    "bash",
    "curl",
    "docker",
    "export",
    "git",
    "hf",
    "huggingface-cli",
    "journalctl",
    "kill",
    "lint-imports",
    "pip",
    "pip3",
    "pytest",
    "python",
    "python3",
    "redis-cli",
    "redis-server",
    "ruff",
    "sh",
    "sudo",
    "systemctl",
    "uv",
)
COMMAND = re.compile(
    r"(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:" + "|".join(re.escape(c) for c in COMMANDS) + r")(?:\s|$)"
)
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
# An inline code span: a run of backticks, then anything up to a run of the same length, not
# across a blank line (CommonMark).
INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
BARE_URL = re.compile(r"https?://[^\s<>()\[\]`'\"，。；：、（）“”]+")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
KINDS = (
    "settings",
    "code-block lines",
    "inline commands",
    "slash commands and paths",
    "other inline code",
    "links",
)


def split_fences(text: str) -> tuple[str, list[list[str]]]:
    """The text without its fenced code blocks (each left as a blank line), and the blocks."""
    prose: list[str] = []
    blocks: list[list[str]] = []
    fence = None
    for line in text.splitlines():
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
            blocks.append([])
            prose.append("")
        elif fence is not None:
            closing = line.strip()
            if len(closing) >= len(fence) and closing == fence[0] * len(closing):
                fence = None
            else:
                blocks[-1].append(line)
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def strip_comment(line: str) -> str:
    """``line`` without a shell-style ``# comment``: a ``#`` at the start or after a space,
    outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def squeeze(text: str) -> str:
    return " ".join(text.split())


def inline_code(prose: str) -> list[str]:
    return [squeeze(m.group(2)) for m in INLINE_CODE.finditer(prose) if m.group(2).strip()]


def link_targets(prose: str) -> set[str]:
    """Link targets in prose (inline code removed): markdown links, autolinks, bare URLs."""
    plain = INLINE_CODE.sub(" ", prose)
    targets = {m.group(1) for m in LINK.finditer(plain)}
    targets |= {m.group(1) for m in AUTOLINK.finditer(plain)}
    rest = AUTOLINK.sub(" ", LINK.sub(" ", plain))
    targets |= {m.group(0).rstrip(".,;:!?") for m in BARE_URL.finditer(rest)}
    return targets


def names(text: str) -> dict[str, set[str]]:
    """What a README names, by kind (see the module docstring)."""
    prose, blocks = split_fences(text)
    found: dict[str, set[str]] = {kind: set() for kind in KINDS}
    found["settings"] = set(SETTING.findall(text))
    for block in blocks:
        for line in block:
            line = squeeze(strip_comment(line))
            if line:
                found["code-block lines"].add(line)
    for span in inline_code(prose):
        if COMMAND.match(span):
            found["inline commands"].add(span)
        elif SETTING.fullmatch(span):
            continue  # a bare setting name: counted with the settings
        elif re.match(r"/[A-Za-z]", span):
            found["slash commands and paths"].add(span)
        else:
            found["other inline code"].add(span)
    found["links"] = {
        target
        for target in link_targets(prose)
        if not target.startswith("#") and target not in (EN_NAME, ZH_NAME)
    }
    return found


def differences(en: str, zh: str, en_name: str = EN_NAME, zh_name: str = ZH_NAME) -> list[str]:
    """One line per kind and file: what the other file names and this one lacks."""
    en_names, zh_names = names(en), names(zh)
    lines = []
    for kind in KINDS:
        for name, mine, theirs in (
            (zh_name, zh_names[kind], en_names[kind]),
            (en_name, en_names[kind], zh_names[kind]),
        ):
            if missing := sorted(theirs - mine):
                lines.append(f"{name} lacks ({kind}): " + ", ".join(missing))
    return lines


def headings(text: str) -> list[tuple[int, str]]:
    prose, _ = split_fences(text)
    return [
        (len(m.group(1)), m.group(2)) for line in prose.splitlines() if (m := HEADING.match(line))
    ]


def outline_difference(en: str, zh: str) -> str | None:
    """None when both have the same heading levels in the same order; else both outlines."""
    en_h, zh_h = headings(en), headings(zh)
    if [level for level, _ in en_h] == [level for level, _ in zh_h]:
        return None
    rows = [f"{EN_NAME} ({len(en_h)} headings) | {ZH_NAME} ({len(zh_h)} headings)"]
    for i in range(max(len(en_h), len(zh_h))):
        left = f"{'#' * en_h[i][0]} {en_h[i][1]}" if i < len(en_h) else "-"
        right = f"{'#' * zh_h[i][0]} {zh_h[i][1]}" if i < len(zh_h) else "-"
        rows.append(f"{left} | {right}")
    return "the sections differ (same levels in the same order expected):\n" + "\n".join(rows)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (full-width too) dropped, spaces
    to hyphens; Chinese characters stay."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_anchors(text: str) -> list[str]:
    anchors: set[str] = set()
    for _, title in headings(text):
        base = slug(INLINE_CODE.sub(lambda m: m.group(2), title))
        anchor, n = base, 0
        while anchor in anchors:
            n += 1
            anchor = f"{base}-{n}"
        anchors.add(anchor)
    prose, _ = split_fences(text)
    return sorted(
        target
        for target in link_targets(prose)
        if target.startswith("#") and unquote(target[1:]) not in anchors
    )


def read(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


# --- the READMEs -----------------------------------------------------------------------------


def test_readmes_name_the_same_settings_and_commands() -> None:
    problems = differences(read(EN_NAME), read(ZH_NAME))
    assert not problems, (
        "README.md and README.zh-CN.md must name the same settings, commands and literals "
        "(translate the prose, keep these as in English):\n" + "\n".join(problems)
    )


def test_readmes_have_the_same_sections() -> None:
    problem = outline_difference(read(EN_NAME), read(ZH_NAME))
    assert problem is None, problem


@pytest.mark.parametrize("name", [EN_NAME, ZH_NAME])
def test_in_page_links_resolve(name: str) -> None:
    assert broken_anchors(read(name)) == [], f"{name}: links to headings it does not have"


def test_readmes_link_each_other_at_the_top() -> None:
    en_top = "\n".join(read(EN_NAME).splitlines()[:5])
    zh_top = "\n".join(read(ZH_NAME).splitlines()[:5])
    assert f"]({ZH_NAME})" in en_top, f"{EN_NAME} must link {ZH_NAME} under its title"
    assert f"]({EN_NAME})" in zh_top, f"{ZH_NAME} must link {EN_NAME} under its title"


def test_the_readmes_name_what_the_test_looks_for() -> None:
    """Guards the extraction against matching nothing: the real files yield the known names."""
    for name in (EN_NAME, ZH_NAME):
        found = names(read(name))
        assert {"DISCORD_TOKEN", "IMAGINE_MODEL", "HF_ENDPOINT", "HF_HUB_OFFLINE"} <= found[
            "settings"
        ], name
        assert "bash .ci/run" in found["code-block lines"], name
        assert "export HF_ENDPOINT=https://hf-mirror.com" in found["code-block lines"], name
        assert "python -m engine.worker" in found["inline commands"], name
        assert {
            "/imagine",
            "/prefer suffix [text]",
            "/imagine-settings showcase:#channel",
        } <= found["slash commands and paths"], name
        assert "HF_ENDPOINT=https://hf-mirror.com" in found["other inline code"], name
        assert "docs/architecture.md" in found["links"], name


# --- the extraction itself -------------------------------------------------------------------

SAMPLE_EN = """# Sample

English | [简体中文](README.zh-CN.md)

## Settings

Set `IMAGINE_STYLES` and run `/describe image:<file>`, or `python -m bot --check`; see
[the docs](docs/x.md) and <https://example.com/a>. HF_ENDPOINT picks the mirror, and
`/imagine-settings
showcase:#channel` sets the channel.

```bash
export HF_ENDPOINT=https://hf-mirror.com  # the mirror
hf download some/model --include "#kept"
```
"""

SAMPLE_ZH = """# 示例

[English](README.md) | 简体中文

## 设置

设置`IMAGINE_STYLES`，然后运行`/describe image:<file>`，或者（`python -m bot --check`）；
见[文档](docs/x.md)和<https://example.com/a>。用HF_ENDPOINT选择镜像，
`/imagine-settings showcase:#channel`设置频道。

```bash
export HF_ENDPOINT=https://hf-mirror.com  # 镜像站
# 下载模型
hf download some/model --include "#kept"
```
"""


def test_extraction_finds_names_in_both_languages() -> None:
    expected = {
        "settings": {"IMAGINE_STYLES", "HF_ENDPOINT"},
        "code-block lines": {
            "export HF_ENDPOINT=https://hf-mirror.com",
            'hf download some/model --include "#kept"',
        },
        "inline commands": {"python -m bot --check"},
        "slash commands and paths": {
            "/describe image:<file>",
            "/imagine-settings showcase:#channel",
        },
        "other inline code": set(),
        "links": {"docs/x.md", "https://example.com/a"},
    }
    assert names(SAMPLE_EN) == expected
    assert names(SAMPLE_ZH) == expected
    assert differences(SAMPLE_EN, SAMPLE_ZH) == []


def test_a_missing_name_fails_and_says_which() -> None:
    zh = SAMPLE_ZH.replace("设置`IMAGINE_STYLES`，然后运行`/describe image:<file>`，", "")
    assert differences(SAMPLE_EN, zh) == [
        "README.zh-CN.md lacks (settings): IMAGINE_STYLES",
        "README.zh-CN.md lacks (slash commands and paths): /describe image:<file>",
    ]
    assert differences(zh, SAMPLE_ZH, en_name="README.md") == [
        "README.md lacks (settings): IMAGINE_STYLES",
        "README.md lacks (slash commands and paths): /describe image:<file>",
    ]


def test_a_translated_command_or_link_fails() -> None:
    zh = SAMPLE_ZH.replace("hf download some/model", "hf 下载 some/model").replace(
        "docs/x.md", "docs/x.zh-CN.md"
    )
    assert differences(SAMPLE_EN, zh) == [
        'README.zh-CN.md lacks (code-block lines): hf download some/model --include "#kept"',
        'README.md lacks (code-block lines): hf 下载 some/model --include "#kept"',
        "README.zh-CN.md lacks (links): docs/x.md",
        "README.md lacks (links): docs/x.zh-CN.md",
    ]


def test_a_setting_glued_to_chinese_text_is_found() -> None:
    assert names("把IMAGINE_MODEL设为本地文件夹，HF_*也行。")["settings"] == {
        "IMAGINE_MODEL",
        "HF_*",
    }
    assert names("MY_IMAGINE_X and IMAGINE_Xy and aIMAGINE_X")["settings"] == {"MY_IMAGINE_X"}


def test_outline_and_anchor_checks() -> None:
    assert outline_difference(SAMPLE_EN, SAMPLE_ZH) is None
    extra = SAMPLE_EN + "\n## Styles\n\nText.\n"
    problem = outline_difference(extra, SAMPLE_ZH)
    assert problem is not None
    assert "## Styles | -" in problem
    assert broken_anchors("## 提示词语法\n\n见[语法](#提示词语法)。\n") == []
    assert (
        broken_anchors(
            "## Hugging Face Hub、镜像与离线使用\n\n[x](#hugging-face-hub镜像与离线使用)"
        )
        == []
    )
    assert broken_anchors("## Prompt syntax\n\nSee [it](#prompt-syntax), [gone](#styles).") == [
        "#styles"
    ]
