"""/prefer: a user's own presets (suffix, options, default negative prompt and aspect ratio).

Every answer is ephemeral: a user's presets are shown to nobody else. What a preset added to
a job is part of that job (its prompt), shown wherever the job is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.imagine import ASPECT_CHOICES
from bot.i18n import COMMAND_TEXT
from bot.presets import MAX_OPTIONS, MAX_PRESET_CHARS, describe, option_name_problem
from bot.replies import is_blank

if TYPE_CHECKING:
    from bot.client import ImagineBot

Text = app_commands.Range[str, 0, MAX_PRESET_CHARS]


class Preferences(commands.Cog):
    """Sets, lists and resets the presets of whoever uses /prefer."""

    prefer = app_commands.Group(name="prefer", description=COMMAND_TEXT["prefer"])
    option = app_commands.Group(
        name="option", description=COMMAND_TEXT["prefer.option"], parent=prefer
    )

    def __init__(self, bot: ImagineBot):
        self.bot = bot

    async def _tell(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(
            text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    async def _set(self, interaction: discord.Interaction, name: str, value: str | None) -> None:
        value = None if value is None or is_blank(value) else value.strip()
        await self.bot.storage.set_preset(interaction.user.id, name, value)

    @prefer.command(name="suffix", description=COMMAND_TEXT["prefer.suffix"])
    @app_commands.describe(text="Added to the end of each of your new prompts (empty: none)")
    async def suffix(self, interaction: discord.Interaction, text: Text | None = None) -> None:
        await self._set(interaction, "suffix", text)
        done = "Suffix removed." if not text or is_blank(text) else "Suffix set."
        await self._tell(interaction, f"{done} It applies to prompts you type from now on.")

    @prefer.command(name="negative", description=COMMAND_TEXT["prefer.negative"])
    @app_commands.describe(text="Your negative prompt when you give none (empty: none)")
    async def negative(self, interaction: discord.Interaction, text: Text | None = None) -> None:
        await self._set(interaction, "negative", text)
        done = "removed" if not text or is_blank(text) else "set"
        await self._tell(interaction, f"Default negative prompt {done}.")

    @prefer.command(name="aspect_ratio", description=COMMAND_TEXT["prefer.aspect_ratio"])
    @app_commands.describe(value="Your aspect ratio when you choose none (empty: 1:1)")
    @app_commands.choices(value=ASPECT_CHOICES)
    async def aspect_ratio(
        self, interaction: discord.Interaction, value: app_commands.Choice[str] | None = None
    ) -> None:
        await self._set(interaction, "aspect_ratio", value.value if value else None)
        shown = value.value if value else "1:1"
        await self._tell(interaction, f"Your default aspect ratio is {shown}.")

    @option.command(name="set", description=COMMAND_TEXT["prefer.option.set"])
    @app_commands.describe(
        name="A word: --name in a prompt becomes the value",
        value="What --name stands for (empty: remove the option)",
    )
    async def option_set(
        self,
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 32],
        value: Text | None = None,
    ) -> None:
        name = name.strip().lower().removeprefix("--")
        problem = option_name_problem(name)
        if problem:
            await self._tell(interaction, problem)
            return
        presets = await self.bot.storage.presets(interaction.user.id)
        known = {option for option, _ in presets.options}
        if value and not is_blank(value) and name not in known and len(known) >= MAX_OPTIONS:
            await self._tell(
                interaction,
                f"You have {MAX_OPTIONS} options, the most there can be. Remove one first "
                "(`/prefer option set` with its name and no value).",
            )
            return
        await self._set(interaction, f"option:{name}", value)
        if not value or is_blank(value):
            await self._tell(interaction, f"Option `--{name}` removed.")
        else:
            await self._tell(interaction, f"`--{name}` in your prompts now stands for its value.")

    @prefer.command(name="list", description=COMMAND_TEXT["prefer.list"])
    async def list_presets(self, interaction: discord.Interaction) -> None:
        await self._tell(interaction, describe(await self.bot.storage.presets(interaction.user.id)))

    @prefer.command(name="reset", description=COMMAND_TEXT["prefer.reset"])
    async def reset(self, interaction: discord.Interaction) -> None:
        removed = await self.bot.storage.reset_presets(interaction.user.id)
        await self._tell(interaction, f"Removed {removed} preset{'s' if removed != 1 else ''}.")


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Preferences(bot))
