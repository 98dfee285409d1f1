"""Making images: /imagine, and replies to the bot's messages that carry a new prompt."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.actions import (
    Ask,
    handle_reply,
    is_age_restricted,
    reject,
    start_from_interaction,
    start_set_from_interaction,
)
from bot.errors import explain
from bot.i18n import COMMAND_TEXT, t
from bot.permutations import PermutationError, expand, split_repeat
from bot.render import escape_user_text, shorten
from bot.replies import is_blank
from bot.uploads import read_upload
from engine import ASPECT_RATIOS
from engine.requests import MAX_STRENGTH, MIN_STRENGTH
from engine.styles import Style
from engine.uploads import IMAGE_PROMPT_STRENGTH
from lifecycle.service import JobRejected

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
        image=COMMAND_TEXT["imagine.image"],
        strength=COMMAND_TEXT["imagine.strength"],
        tile=COMMAND_TEXT["imagine.tile"],
        repeat=COMMAND_TEXT["imagine.repeat"],
        style=COMMAND_TEXT["imagine.style"],
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
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, MIN_STRENGTH, MAX_STRENGTH] | None = None,
        tile: bool = False,
        repeat: app_commands.Range[int, 1, 25] | None = None,
        style: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        if is_blank(prompt):
            await interaction.response.send_message(
                t("empty_prompt", interaction.locale), ephemeral=True
            )
            return
        try:
            prompts = self._prompts(prompt, repeat)
        except PermutationError as exc:
            await interaction.response.send_message(exc.user_message, ephemeral=True)
            return
        ask = Ask(
            prompt=prompts[0],
            negative_prompt=(negative_prompt or "").strip(),
            seed=seed,
            aspect_ratio=aspect_ratio.value if aspect_ratio else None,
            raw=raw,
            tile=tile,
            typed=True,
            style=(style or "").strip(),
        )
        if image is not None:
            # Downloading and fitting the picture may take a moment: acknowledge first.
            await interaction.response.defer(thinking=True)
            try:
                fitted = await read_upload(
                    image,
                    self.bot.settings.engine.resolution,
                    aspect_ratio.value if aspect_ratio else None,
                    str(interaction.locale),
                )
            except JobRejected as exc:
                await reject(interaction, exc.user_message)
                return
            ask = dataclasses.replace(
                ask,
                upload=fitted.png,
                size=(fitted.width, fitted.height),
                strength=strength if strength is not None else IMAGE_PROMPT_STRENGTH,
            )
        if len(prompts) == 1:
            await start_from_interaction(self.bot, interaction, ask)
        else:
            # A repeated prompt makes new images: the seed given (if any) is its first run's.
            asks = [
                dataclasses.replace(
                    ask, prompt=text, seed=ask.seed if text not in prompts[:i] else None
                )
                for i, text in enumerate(prompts)
            ]
            await start_set_from_interaction(self.bot, interaction, asks)

    @imagine.autocomplete("style")
    async def _style_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """The styles this channel offers whose names contain what was typed (at most 25).
        Only a suggestion: ``submit`` checks the style that is sent."""
        allowed: tuple[str, ...] = ()
        if interaction.guild_id is not None:
            allowed = (await self.bot.storage.guild_settings(interaction.guild_id)).allowed_styles
        nsfw = is_age_restricted(interaction.channel)
        return [
            app_commands.Choice(name=_choice_name(s), value=s.name)
            for s in self.bot.styles.suggest(current, allowed, nsfw=nsfw)
        ]

    def _prompts(self, prompt: str, repeat: int | None) -> list[str]:
        """The prompts one /imagine makes: its permutations ``{a, b}`` (or ``{a|b}``) times
        ``--repeat`` (the option, or written in the prompt).

        Raises:
            PermutationError: over ``IMAGINE_MAX_PROMPTS``, or a bad ``--repeat``.
        """
        text, written = split_repeat(prompt.strip())
        times = repeat if repeat is not None else written if written is not None else 1
        expanded = expand(text, repeat=times, limit=self.bot.settings.max_prompts)
        if any(is_blank(p) for p in expanded):
            raise PermutationError("One of the prompts this makes is empty: fill every option.")
        return [p.strip() for p in expanded]

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


def _choice_name(style: Style) -> str:
    """What the autocomplete list shows: the name, and the trigger words it adds."""
    if not style.trigger:
        return style.name
    return shorten(f"{style.name} · {style.trigger}", 100)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
