"""Showcase posts deleted in Discord (by a moderator, or any bulk delete) leave the gallery."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

if TYPE_CHECKING:
    from bot.client import ImagineBot
    from gallery.listing import GalleryListing

log = logging.getLogger(__name__)


class Showcase(commands.Cog):
    """Forgets the share of every showcase post that is deleted, however it was deleted."""

    def __init__(self, listing: GalleryListing):
        self.listing = listing

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.listing.post_deleted(payload.message_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in payload.message_ids:
            await self.listing.post_deleted(message_id)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Showcase(bot.gallery))
