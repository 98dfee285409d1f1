"""Persistent buttons: the custom_id carries the job, so clicks work after restarts.

``imagine:<action>:<job_id>[:<index>]`` is parsed by discord.py's ``DynamicItem`` on every
click, whether or not this process ever sent the message; the job is then read from storage.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

if TYPE_CHECKING:
    from bot.client import ImagineBot

ACTIONS = (
    "reroll",
    "upscale",
    "vary",
    "subtle",
    "zoom2",
    "zoom15",
    "delete",
    "share",
    "cancel",
    "remix",
    "prompt",
    "promptpic",
)
#: Zoom Out buttons: how much each shrinks the picture.
ZOOMS = {"zoom2": 2.0, "zoom15": 1.5}

_LOOK: dict[str, tuple[str | None, str | None, discord.ButtonStyle]] = {
    # action: (emoji, label prefix, style)
    "reroll": ("🔄", None, discord.ButtonStyle.secondary),
    "upscale": (None, "U", discord.ButtonStyle.secondary),
    "vary": (None, "V", discord.ButtonStyle.secondary),  # Vary (Strong)
    "subtle": (None, "S", discord.ButtonStyle.secondary),  # Vary (Subtle)
    "zoom2": ("🔍", "Zoom Out 2x", discord.ButtonStyle.secondary),
    "zoom15": ("🔍", "Zoom Out 1.5x", discord.ButtonStyle.secondary),
    "delete": ("🗑️", None, discord.ButtonStyle.secondary),
    "share": ("⭐", None, discord.ButtonStyle.secondary),
    "cancel": (None, "Cancel", discord.ButtonStyle.danger),
    "remix": ("🎨", "Remix", discord.ButtonStyle.primary),
    "prompt": (None, None, discord.ButtonStyle.primary),  # /describe: /imagine prompt n
    "promptpic": ("🖼️", None, discord.ButtonStyle.secondary),  # ... with the picture
}


def custom_id(action: str, job_id: int, index: int | None = None) -> str:
    return f"imagine:{action}:{job_id}" + (f":{index}" if index is not None else "")


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=re.compile(r"imagine:(?P<action>[a-z][a-z0-9]*):(?P<job_id>\d+)(?::(?P<index>\d+))?"),
):
    """One button of a job's message; the click is handled by ``bot.actions.handle_button``."""

    def __init__(
        self,
        action: str,
        job_id: int,
        index: int | None = None,
        row: int | None = None,
        *,
        label: str | None = None,
    ):
        emoji, prefix, style = _LOOK[action]
        if label is None:
            numbered = prefix and index is not None and action not in ZOOMS
            label = f"{prefix}{index}" if numbered else prefix
        super().__init__(
            discord.ui.Button(
                style=style,
                emoji=emoji,
                label=label,
                custom_id=custom_id(action, job_id, index),
                row=row,
            )
        )
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> JobButton:
        action = match["action"]
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        index = int(match["index"]) if match["index"] else None
        return cls(action, int(match["job_id"]), index)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        bot: ImagineBot = interaction.client
        await bot.on_job_button(interaction, self.action, self.job_id, self.index)
