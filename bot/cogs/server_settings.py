"""A server's own rules: /imagine-settings (showcase, gallery, safety, channels, blocklist,
limits)."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.blocklist import is_floor_term
from bot.i18n import COMMAND_TEXT, t
from bot.render import escape_user_text
from lifecycle.storage import SAFETY_MODES, GuildSettings

if TYPE_CHECKING:
    from bot.client import ImagineBot

log = logging.getLogger(__name__)

SAFETY_CHOICES = [app_commands.Choice(name=m, value=m) for m in sorted(SAFETY_MODES)]
ON_OFF = [app_commands.Choice(name="on", value="on"), app_commands.Choice(name="off", value="off")]


def new_gallery_slug() -> str:
    """The secret part of a gallery's address: 128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


def _split_terms(text: str | None) -> list[str]:
    return [term.strip() for term in (text or "").split(",") if term.strip()]


class ServerSettings(commands.Cog):
    """Shows a server's settings to anyone; changes them for members with Manage Server."""

    def __init__(self, bot: ImagineBot):
        self.bot = bot

    @app_commands.command(name="imagine-settings", description=COMMAND_TEXT["imagine-settings"])
    @app_commands.guild_only()
    @app_commands.describe(
        showcase="Channel where ⭐ posts shared images",
        gallery="A public web page of this server's ⭐-shared images (admins see its address)",
        safety_mode="What to do with images the safety filter flags",
        allowed_channels="Channels (#mentions) where /imagine works; 'all' = everywhere",
        block="Words to add to the blocklist (comma separated)",
        unblock="Words to remove from the blocklist (comma separated)",
        per_user_limit="Most jobs one member may have waiting",
        styles="Styles /imagine offers here (names, comma separated); 'all' = every style",
    )
    @app_commands.choices(safety_mode=SAFETY_CHOICES, gallery=ON_OFF)
    async def settings(
        self,
        interaction: discord.Interaction,
        showcase: discord.TextChannel | None = None,
        gallery: app_commands.Choice[str] | None = None,
        safety_mode: app_commands.Choice[str] | None = None,
        allowed_channels: str | None = None,
        block: str | None = None,
        unblock: str | None = None,
        per_user_limit: app_commands.Range[int, 1, 50] | None = None,
        styles: str | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        storage = self.bot.storage
        current = await storage.guild_settings(interaction.guild_id)
        changes: dict[str, object] = {}
        if showcase is not None:
            changes["showcase_channel_id"] = showcase.id
        if gallery is not None:
            if gallery.value == "on" and not self.bot.settings.gallery_enabled:
                await interaction.response.send_message(
                    t("gallery_unavailable", interaction.locale), ephemeral=True
                )
                return
            changes["gallery_enabled"] = gallery.value == "on"
            if gallery.value == "on" and not current.gallery_slug:
                changes["gallery_slug"] = new_gallery_slug()
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
        if styles is not None:
            chosen, problem = self._styles(styles)
            if problem:
                await interaction.response.send_message(problem, ephemeral=True)
                return
            changes["allowed_styles"] = chosen
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
        address = (
            self.bot.settings.gallery_address(current.gallery_slug)
            if current.gallery_slug and interaction.permissions.manage_guild
            else None
        )
        await interaction.response.send_message(
            _settings_text(current, saved=bool(changes), gallery_address=address),
            ephemeral=True,
        )

    def _styles(self, text: str) -> tuple[list[str], str | None]:
        """The style names an admin typed, as the catalog spells them, or what is wrong."""
        if text.strip().lower() == "all":
            return [], None
        names = _split_terms(text.replace(" ", ","))
        found = [self.bot.styles.get(name) for name in names]
        unknown = [name for name, style in zip(names, found, strict=True) if style is None]
        if unknown or not names:
            known = ", ".join(s.name for s in self.bot.styles) or "none are configured"
            what = ", ".join(unknown) if unknown else "(nothing)"
            return [], escape_user_text(
                f"Unknown style(s): {what}. The styles are: {known} (or 'all')."
            )
        return sorted({s.name for s in found if s is not None}), None


def _gallery_text(settings: GuildSettings, address: str | None) -> str:
    if not settings.gallery_enabled:
        return "off"
    if address is None:  # only members who may change settings see the address
        return "on"
    return f"on: <{address}>"


def _settings_text(settings: GuildSettings, *, saved: bool, gallery_address: str | None) -> str:
    channels = ", ".join(f"<#{c}>" for c in settings.allowed_channel_ids) or "all channels"
    showcase = f"<#{settings.showcase_channel_id}>" if settings.showcase_channel_id else "not set"
    lines = [
        "Settings saved." if saved else "Settings for this server:",
        f"- showcase: {showcase}",
        f"- gallery: {_gallery_text(settings, gallery_address)}",
        f"- /imagine allowed in: {channels}",
        f"- safety filter: {settings.safety_mode}",
        f"- extra blocked words: {len(settings.blocklist_add)}; unblocked defaults: "
        f"{len(settings.blocklist_remove)}",
        f"- queued jobs per member: {settings.per_user_limit or 'default'}",
        f"- styles offered: {', '.join(settings.allowed_styles) or 'all'}",
    ]
    return "\n".join(lines)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ServerSettings(bot))
