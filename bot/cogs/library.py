"""Looking back at made images: /history, /info and the "Imagine info" message menu."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.actions import is_age_restricted
from bot.i18n import COMMAND_TEXT

if TYPE_CHECKING:
    from bot.client import ImagineBot


class Library(commands.Cog):
    """A user's own jobs and any job's parameters, for those who may see them."""

    def __init__(self, bot: ImagineBot):
        self.bot = bot
        self.info_menu = app_commands.ContextMenu(name="Imagine info", callback=self.info_message)
        bot.tree.add_command(self.info_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.info_menu.name, type=self.info_menu.type)

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
            what = job.prompt
            if job.kind == "describe":
                what = "🔎 /describe" + (f": {job.captions[0]}" if job.captions else "")
            lines.append(f"`{job.id}` {render.shorten(what, 80)} — {where}")
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
        chain = await self.bot.storage.sources(job.id)
        await interaction.response.send_message(
            render.info_text(job, chain),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
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


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Library(bot))
