"""Slash commands: /imagine, /imagine-settings, /history, /info and the "Imagine info" menu."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.actions import Ask, handle_reply, is_age_restricted, start_from_interaction
from bot.blocklist import is_floor_term
from bot.i18n import COMMAND_TEXT, t
from bot.replies import is_blank
from engine import ASPECT_RATIOS
from lifecycle.storage import SAFETY_MODES

if TYPE_CHECKING:
    from bot.client import ImagineBot

log = logging.getLogger(__name__)

ASPECT_CHOICES = [app_commands.Choice(name=r, value=r) for r in ASPECT_RATIOS]
SAFETY_CHOICES = [app_commands.Choice(name=m, value=m) for m in sorted(SAFETY_MODES)]


def _split_terms(text: str | None) -> list[str]:
    return [term.strip() for term in (text or "").split(",") if term.strip()]


class Imagine(commands.Cog):
    """Everything users type."""

    def __init__(self, bot: ImagineBot):
        self.bot = bot
        self.info_menu = app_commands.ContextMenu(name="Imagine info", callback=self.info_message)
        bot.tree.add_command(self.info_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.info_menu.name, type=self.info_menu.type)

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

    @app_commands.command(name="history", description=COMMAND_TEXT["history"])
    async def history(self, interaction: discord.Interaction) -> None:
        jobs = await self.bot.storage.recent_jobs(interaction.user.id, limit=10)
        if not jobs:
            await interaction.response.send_message(
                "You have not made any images yet.", ephemeral=True
            )
            return
        lines = []
        for job in jobs:
            where = (
                render.message_link(job.guild_id, job.channel_id, job.result_message_id)
                if job.result_message_id
                else job.status
            )
            lines.append(f"`{job.id}` {render.shorten(job.prompt, 80)} — {where}")
        await interaction.response.send_message(
            "\n".join(lines)[: render.MESSAGE_LIMIT], ephemeral=True
        )

    @app_commands.command(name="info", description=COMMAND_TEXT["info"])
    @app_commands.describe(job="The job number shown under the images")
    async def info(self, interaction: discord.Interaction, job: int) -> None:
        found = await self.bot.storage.get_job(job)
        await self._send_info(interaction, found if _may_see(found, interaction) else None)

    async def info_message(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        # The menu is used on a message the user can see: the job's result there, or its
        # showcase post (which already shows the prompt and seeds).
        job = await self.bot.storage.job_by_message(message.id)
        if job is None:
            share = await self.bot.storage.share_by_message(message.id)
            job = await self.bot.storage.get_job(share.job_id) if share else None
        elif not _may_see(job, interaction):
            job = None
        await self._send_info(interaction, job)

    async def _send_info(self, interaction: discord.Interaction, job) -> None:
        if job is None:
            await interaction.response.send_message(
                "That is not one of my image sets.", ephemeral=True
            )
            return
        await interaction.response.send_message(
            render.info_text(job),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="imagine-settings", description=COMMAND_TEXT["imagine-settings"])
    @app_commands.guild_only()
    @app_commands.describe(
        showcase="Channel where ⭐ posts shared images",
        safety_mode="What to do with images the safety filter flags",
        allowed_channels="Channels (#mentions) where /imagine works; 'all' = everywhere",
        block="Words to add to the blocklist (comma separated)",
        unblock="Words to remove from the blocklist (comma separated)",
        per_user_limit="Most jobs one member may have waiting",
    )
    @app_commands.choices(safety_mode=SAFETY_CHOICES)
    async def settings(
        self,
        interaction: discord.Interaction,
        showcase: discord.TextChannel | None = None,
        safety_mode: app_commands.Choice[str] | None = None,
        allowed_channels: str | None = None,
        block: str | None = None,
        unblock: str | None = None,
        per_user_limit: app_commands.Range[int, 1, 50] | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        storage = self.bot.storage
        current = await storage.guild_settings(interaction.guild_id)
        changes: dict[str, object] = {}
        if showcase is not None:
            changes["showcase_channel_id"] = showcase.id
        if safety_mode is not None:
            changes["safety_mode"] = safety_mode.value
        if allowed_channels is not None:
            ids = (
                []
                if allowed_channels.strip().lower() == "all"
                else [
                    int(part.strip("<#>"))
                    for part in allowed_channels.split()
                    if part.strip("<#>").isdigit()
                ]
            )
            changes["allowed_channel_ids"] = ids
        if block:
            added = _split_terms(block)
            changes["blocklist_add"] = sorted({*current.blocklist_add, *added})
            changes["blocklist_remove"] = sorted(set(current.blocklist_remove) - set(added))
        if unblock:
            floor = [term for term in _split_terms(unblock) if is_floor_term(term)]
            if floor:
                await interaction.response.send_message(
                    t("floor_not_removable", interaction.locale, terms=", ".join(floor)),
                    ephemeral=True,
                )
                return
            removed = _split_terms(unblock)
            changes["blocklist_remove"] = sorted({*current.blocklist_remove, *removed})
            changes["blocklist_add"] = sorted(
                set(changes.get("blocklist_add", current.blocklist_add)) - set(removed)
            )
        if per_user_limit is not None:
            changes["per_user_limit"] = per_user_limit
        if changes:
            if not interaction.permissions.manage_guild:
                await interaction.response.send_message(
                    t("no_permission", interaction.locale), ephemeral=True
                )
                return
            current = await storage.update_guild_settings(interaction.guild_id, **changes)
            log.info(
                "guild %s settings changed by %s: %s",
                interaction.guild_id,
                interaction.user.id,
                sorted(changes),
            )
        await interaction.response.send_message(
            _settings_text(current, saved=bool(changes)), ephemeral=True
        )

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.reference is None:
            return
        try:
            await handle_reply(self.bot, message)
        except Exception:
            log.exception("reply %s could not be handled", message.id)
            await message.reply(
                "Something went wrong with that reply; please try again.", mention_author=False
            )


def _may_see(job, interaction: discord.Interaction) -> bool:
    """Who may read a job's parameters: its requester anywhere; others only in the channel it
    was made in, and a job from an age-restricted channel never outside one."""
    if job is None:
        return False
    if job.requester_id == interaction.user.id:
        return True
    if job.channel_id != interaction.channel_id:
        return False
    return not job.nsfw_channel or is_age_restricted(interaction.channel)


def _settings_text(settings, *, saved: bool) -> str:
    channels = ", ".join(f"<#{c}>" for c in settings.allowed_channel_ids) or "all channels"
    showcase = f"<#{settings.showcase_channel_id}>" if settings.showcase_channel_id else "not set"
    lines = [
        "Settings saved." if saved else "Settings for this server:",
        f"- showcase: {showcase}",
        f"- /imagine allowed in: {channels}",
        f"- safety filter: {settings.safety_mode}",
        f"- extra blocked words: {len(settings.blocklist_add)}; unblocked defaults: "
        f"{len(settings.blocklist_remove)}",
        f"- queued jobs per member: {settings.per_user_limit or 'default'}",
    ]
    return "\n".join(lines)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
