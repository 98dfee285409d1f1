"""Making images: /imagine, and replies to the bot's messages that carry a new prompt."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.actions import Ask, handle_reply, start_from_interaction
from bot.errors import explain
from bot.i18n import COMMAND_TEXT, t
from bot.render import escape_user_text
from bot.replies import is_blank
from engine import ASPECT_RATIOS

if TYPE_CHECKING:
    from bot.client import ImagineBot

log = logging.getLogger(__name__)

ASPECT_CHOICES = [app_commands.Choice(name=r, value=r) for r in ASPECT_RATIOS]


class Imagine(commands.Cog):
    """Starts generations from the command and from replies."""

    def __init__(self, bot: ImagineBot):
        self.bot = bot

    @app_commands.command(name="imagine", description=COMMAND_TEXT["imagine"])
    @app_commands.describe(
        prompt=COMMAND_TEXT["imagine.prompt"],
        negative_prompt=COMMAND_TEXT["imagine.negative_prompt"],
        seed=COMMAND_TEXT["imagine.seed"],
        aspect_ratio=COMMAND_TEXT["imagine.aspect_ratio"],
        raw=COMMAND_TEXT["imagine.raw"],
    )
    @app_commands.choices(aspect_ratio=ASPECT_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 6000],
        negative_prompt: app_commands.Range[str, 0, 6000] | None = None,
        seed: app_commands.Range[int, 0, 2**32 - 1] | None = None,
        aspect_ratio: app_commands.Choice[str] | None = None,
        raw: bool = False,
    ) -> None:
        if is_blank(prompt):
            await interaction.response.send_message(
                t("empty_prompt", interaction.locale), ephemeral=True
            )
            return
        ask = Ask(
            prompt=prompt.strip(),
            negative_prompt=(negative_prompt or "").strip(),
            seed=seed,
            aspect_ratio=aspect_ratio.value if aspect_ratio else "1:1",
            raw=raw,
        )
        await start_from_interaction(self.bot, interaction, ask)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.reference is None:
            return
        try:
            await handle_reply(self.bot, message)
        except Exception as exc:
            locale = message.guild.preferred_locale if message.guild else None
            text = explain(exc, locale, context=f"reply {message.id}")
            with contextlib.suppress(discord.HTTPException):
                await message.reply(escape_user_text(text), mention_author=False)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
