"""Setup checks on Discord's side, as ``engine.doctor.Check`` lines with their fixes.

What Discord must allow for the bot to serve: the token, the privileged intents the settings
ask for, the bot's permissions in the channels it posts to, and its registered commands.
``python -m bot doctor`` (``bot.doctor_cli``) reads the servers over REST without connecting;
after start-up ``log_setup_problems`` runs the same checks on the gateway's cache and logs each
problem as a warning. Permission problems are warnings: the bot serves every other channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.settings import BotSettings
from engine.doctor import GIB, Check, Status, check_disk
from lifecycle.storage import GuildSettings

log = logging.getLogger(__name__)

#: What the bot needs in a channel to post results there (README, "Create the Discord
#: application", step 4), as (discord.py attribute, the name Discord's settings show).
NEEDED_PERMISSIONS = (
    ("view_channel", "View Channels"),
    ("send_messages", "Send Messages"),
    ("attach_files", "Attach Files"),
    ("embed_links", "Embed Links"),
    ("read_message_history", "Read Message History"),
)
MAX_CHANNEL_LINES = 10  # per server; past these the rest are counted in one line
PERMISSION_FIX = (
    "give the bot's role these permissions in Server Settings -> Roles, or allow them for the "
    "bot in the channel's settings (Edit Channel -> Permissions)"
)

GuildSettingsOf = Callable[[int], Awaitable[GuildSettings]]


@dataclass(frozen=True)
class GuildView:
    """One server as the checks see it: the bot's member, the channels, the stored settings."""

    guild: discord.Guild
    me: discord.Member
    channels: Sequence[discord.abc.GuildChannel]
    settings: GuildSettings


def check_data_disk(settings: BotSettings) -> Check:
    """Room under ``IMAGINE_DATA_DIR`` for the database and the stored results."""
    return check_disk(
        settings.data_dir,
        want_bytes=settings.retention_max_bytes or GIB,
        purpose="stored results may take (IMAGINE_RETENTION_MAX_GB)",
    )


@dataclass(frozen=True)
class GuildScan:
    """The servers the bot is in, as read: ``views`` to check, ``total`` servers, warnings for
    those that could not be read, and how many were left ``unchecked`` (too many)."""

    views: Sequence[GuildView]
    total: int
    unreadable: Sequence[Check] = ()
    unchecked: int = 0


def invite_url(application_id: int) -> str:
    """The OAuth2 URL that adds the bot with the scopes and permissions it needs."""
    permissions = discord.Permissions(**{attribute: True for attribute, _ in NEEDED_PERMISSIONS})
    return discord.utils.oauth_url(
        application_id, permissions=permissions, scopes=("bot", "applications.commands")
    )


async def check_token(client: discord.Client, token: str, api_base: str) -> Check:
    """Log ``client`` in over REST (``GET /users/@me``): whether Discord takes the token."""
    try:
        await client.login(token)
    except discord.LoginFailure:
        return Check.fail(
            "token",
            "Discord refused DISCORD_TOKEN (wrong, or reset since)",
            "copy the token again (Developer Portal -> your application -> Bot -> Reset Token) "
            "into .env as DISCORD_TOKEN",
        )
    except (aiohttp.ClientError, OSError) as exc:
        return Check.fail(
            "token",
            f"cannot reach Discord at {api_base} ({exc})",
            "check this machine's network (and DISCORD_API_BASE, if you set it)",
        )
    except discord.HTTPException as exc:
        return Check.fail(
            "token",
            f"Discord answered {exc.status} to the login ({exc.text or 'no reason given'})",
            "try again later; https://discordstatus.com shows outages",
        )
    user = client.user
    return Check.ok("token", f"logged in as {user} (id {user.id})" if user else "logged in")


def check_intents(flags: discord.ApplicationFlags, message_content: bool) -> Check:
    """Whether the Developer Portal allows the privileged intents the settings ask for.

    Args:
        flags: the application's flags (``GET /applications/@me``, or READY's).
        message_content: ``IMAGINE_MESSAGE_CONTENT_INTENT``.
    """
    allowed = flags.gateway_message_content or flags.gateway_message_content_limited
    if message_content and not allowed:
        return Check.fail(
            "intents",
            "IMAGINE_MESSAGE_CONTENT_INTENT=true, but the Message Content intent is off in the "
            "Developer Portal: Discord refuses the connection",
            "turn on Bot -> Privileged Gateway Intents -> Message Content in the Developer "
            "Portal, or set IMAGINE_MESSAGE_CONTENT_INTENT=false",
        )
    if message_content:
        return Check.ok("intents", "Message Content is allowed and used")
    if allowed:
        return Check.ok(
            "intents",
            "no privileged intent needed (Message Content is allowed too: with "
            "IMAGINE_MESSAGE_CONTENT_INTENT=true replies need no @mention to carry a prompt)",
        )
    return Check.ok("intents", "no privileged intent needed (replies to the bot keep a mention)")


def missing_permissions(permissions: discord.Permissions) -> list[str]:
    """The names of ``NEEDED_PERMISSIONS`` that ``permissions`` lacks."""
    return [label for attribute, label in NEEDED_PERMISSIONS if not getattr(permissions, attribute)]


def check_guild(view: GuildView) -> list[Check]:
    """The bot's permissions in the channels /imagine may be used in and in the showcase.

    The channels are the server's ``allowed_channels`` (``/imagine-settings``) or, without
    that list, every text channel; channels the bot cannot see at all are then counted in one
    line (a private channel may be meant to keep the bot out).
    """
    guild, settings = view.guild, view.settings
    text = [c for c in view.channels if isinstance(c, discord.TextChannel)]
    by_id = {c.id: c for c in text}
    checks: list[Check] = []
    allowed = settings.allowed_channel_ids
    gone = [i for i in allowed if i not in by_id]
    if gone:
        checks.append(
            Check.warn(
                f"allowed channels in {guild.name}",
                f"{len(gone)} channel(s) of allowed_channels no longer exist",
                "set the list again with /imagine-settings allowed_channels:",
            )
        )
    targets = [by_id[i] for i in allowed if i in by_id] if allowed else text
    targets = [c for c in targets if c.id != settings.showcase_channel_id]
    lacking: list[tuple[discord.TextChannel, list[str]]] = []
    hidden: list[discord.TextChannel] = []
    for channel in targets:
        missing = missing_permissions(channel.permissions_for(view.me))
        if missing and not allowed and "View Channels" in missing:
            hidden.append(channel)
        elif missing:
            lacking.append((channel, missing))
    for channel, missing in lacking[:MAX_CHANNEL_LINES]:
        checks.append(
            Check.warn(
                f"permissions in #{channel.name} ({guild.name})",
                f"missing {', '.join(missing)}",
                PERMISSION_FIX,
            )
        )
    if len(lacking) > MAX_CHANNEL_LINES:
        checks.append(
            Check.warn(
                f"permissions in {guild.name}",
                f"{len(lacking) - MAX_CHANNEL_LINES} more channel(s) miss permissions",
                PERMISSION_FIX,
            )
        )
    if hidden:
        names = ", ".join(f"#{c.name}" for c in hidden[:MAX_CHANNEL_LINES])
        checks.append(
            Check.warn(
                f"permissions in {guild.name}",
                f"the bot cannot see {len(hidden)} of {len(text)} text channels ({names}): "
                "results cannot be posted there",
                "allow View Channels for the bot's role in the channels it should serve, or "
                "name them with /imagine-settings allowed_channels:",
            )
        )
    checks += _check_showcase(view, by_id)
    if not checks:
        where = f"{len(targets)} channel(s)"
        if settings.showcase_channel_id:
            where += f" and the showcase #{by_id[settings.showcase_channel_id].name}"
        checks.append(Check.ok(f"permissions in {guild.name}", f"everything needed in {where}"))
    return checks


def _check_showcase(view: GuildView, by_id: dict[int, discord.TextChannel]) -> list[Check]:
    showcase_id = view.settings.showcase_channel_id
    if not showcase_id:
        return []
    guild = view.guild
    channel = by_id.get(showcase_id)
    if channel is None:
        return [
            Check.warn(
                f"showcase in {guild.name}",
                "the showcase channel no longer exists: ⭐ cannot share",
                "choose another with /imagine-settings showcase:#channel",
            )
        ]
    missing = missing_permissions(channel.permissions_for(view.me))
    if not missing:
        return []
    return [
        Check.warn(
            f"showcase #{channel.name} ({guild.name})",
            f"missing {', '.join(missing)}: ⭐ cannot post there",
            PERMISSION_FIX,
        )
    ]


def check_guilds(scan: GuildScan, application_id: int) -> list[Check]:
    """``check_guild`` for each server read; a warning when the bot is in none."""
    if not scan.total:
        return [
            Check.warn(
                "servers",
                "the bot is in no server yet",
                f"invite it with {invite_url(application_id)}",
            )
        ]
    checks = [c for view in scan.views for c in check_guild(view)]
    checks += scan.unreadable
    if scan.unchecked:
        checks.append(
            Check.ok("servers", f"{scan.unchecked} more server(s) not checked (too many)")
        )
    return checks


def _command_label(command: Any) -> str:
    kind = getattr(command, "type", discord.AppCommandType.chat_input)
    return f"/{command.name}" if kind is discord.AppCommandType.chat_input else command.name


def _command_keys(commands_: Sequence) -> dict[tuple[str, int], str]:
    keys = {}
    for command in commands_:
        kind = getattr(command, "type", discord.AppCommandType.chat_input)
        keys[(command.name, kind.value)] = _command_label(command)
    return keys


async def check_commands(
    tree: app_commands.CommandTree, sync_guild_id: int | None, *, complete: bool = True
) -> list[Check]:
    """Whether the commands of ``tree`` are registered with Discord (global, and in
    ``IMAGINE_SYNC_GUILD_ID``'s server). ``complete``: the tree holds every command the bot
    serves, so registered commands beyond it are stale."""
    expected = _command_keys(tree.get_commands())
    scopes: list[tuple[discord.Object | None, str]] = [(None, "commands")]
    if sync_guild_id:
        scopes.append((discord.Object(sync_guild_id), f"commands in server {sync_guild_id}"))
    checks = []
    for guild, name in scopes:
        try:
            registered = _command_keys(await tree.fetch_commands(guild=guild))
        except discord.HTTPException as exc:
            checks.append(_unreadable_commands(name, guild, exc, tree.client.application_id))
            continue
        missing = [label for key, label in expected.items() if key not in registered]
        stale = [label for key, label in registered.items() if key not in expected]
        if missing:
            checks.append(
                Check.warn(
                    name,
                    f"not registered: {', '.join(missing)}",
                    "start the bot: it registers its commands at every start (global ones can "
                    "take up to an hour to show; IMAGINE_SYNC_GUILD_ID=<server id> shows them in "
                    "that server at once)",
                )
            )
        elif stale and complete:
            checks.append(
                Check.warn(
                    name,
                    f"registered but not served: {', '.join(stale)}",
                    "restart the bot: at start it replaces the registered commands with its own",
                )
            )
        else:
            checks.append(
                Check.ok(name, f"{len(registered)} registered ({', '.join(registered.values())})")
            )
    return checks


def _unreadable_commands(
    name: str, guild: discord.Object | None, exc: discord.HTTPException, application_id: int | None
) -> Check:
    detail = f"Discord refused to list them ({exc.status}: {exc.text or 'no reason given'})"
    if guild is None:
        return Check.fail(name, detail, "check DISCORD_TOKEN and DISCORD_API_BASE")
    invite = f" ({invite_url(application_id)})" if application_id else ""
    # At start the bot registers commands there too, and that fails the same way.
    return Check.fail(
        name,
        detail,
        f"invite the bot to server {guild.id} with the applications.commands scope{invite}, or "
        "empty IMAGINE_SYNC_GUILD_ID",
    )


async def fetch_guilds(
    client: discord.Client, guild_settings: GuildSettingsOf, *, limit: int = 100
) -> GuildScan:
    """The bot's servers read over REST (three requests each, at most ``limit`` servers),
    with a warning for each that could not be read."""
    assert client.user is not None, "log in first"
    partial = [g async for g in client.fetch_guilds(limit=None, with_counts=False)]
    views, problems = [], []
    for entry in partial[:limit]:
        try:
            guild = await client.fetch_guild(entry.id, with_counts=False)
            me = await guild.fetch_member(client.user.id)
            channels = await guild.fetch_channels()
        except discord.HTTPException as exc:
            problems.append(
                Check.warn(
                    f"permissions in {entry.name}",
                    f"cannot read the server ({exc.status}: {exc.text or 'no reason given'})",
                    "invite the bot again with " + invite_url(client.application_id or 0),
                )
            )
            continue
        views.append(GuildView(guild, me, channels, await guild_settings(guild.id)))
    return GuildScan(views, len(partial), problems, max(0, len(partial) - limit))


async def cached_guilds(client: discord.Client, guild_settings: GuildSettingsOf) -> GuildScan:
    """The bot's servers as the gateway gave them (no REST request)."""
    views = [
        GuildView(g, g.me, g.channels, await guild_settings(g.id))
        for g in client.guilds
        if g.me is not None
    ]
    return GuildScan(views, len(client.guilds))


async def log_setup_problems(
    bot: commands.Bot, settings: BotSettings, guild_settings: GuildSettingsOf
) -> None:
    """Once ``bot`` is connected, run the Discord-side checks on its cache and log each
    problem with its fix (a warning each). Start-up's background check; never raises."""
    await bot.wait_until_ready()
    try:
        scan = await cached_guilds(bot, guild_settings)
        checks = [
            check_intents(bot.application_flags, settings.message_content_intent),
            *check_guilds(scan, bot.application_id or 0),
            *await check_commands(bot.tree, settings.sync_guild_id),
            await asyncio.to_thread(check_data_disk, settings),
        ]
    except Exception:
        log.exception("the setup checks could not run")
        return
    problems = [c for c in checks if c.status is not Status.OK]
    for check in problems:
        log.warning("setup: %s", check.line())
    log.info(
        "setup checks: %d passed, %d problem(s)%s",
        len(checks) - len(problems),
        len(problems),
        " (python -m bot doctor checks everything)" if problems else "",
    )
