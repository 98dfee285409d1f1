"""/describe and the "Describe picture" message menu: four prompts for a picture."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.describing import start_describe
from bot.i18n import COMMAND_TEXT
from bot.uploads import first_picture

if TYPE_CHECKING:
    from bot.client import ImagineBot


class Describe(commands.Cog):
    """Starts a 'describe' job from an uploaded picture or a message that carries one."""

    def __init__(self, bot: ImagineBot):
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Describe picture", callback=self.describe_menu)
        bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="describe", description=COMMAND_TEXT["describe"])
    @app_commands.describe(picture=COMMAND_TEXT["describe.picture"])
    async def describe(self, interaction: discord.Interaction, picture: discord.Attachment) -> None:
        await start_describe(self.bot, interaction, picture)

    async def describe_menu(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        # The picture of any message the user can see: theirs, someone else's, the bot's own.
        await start_describe(self.bot, interaction, first_picture(message))


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Describe(bot))
