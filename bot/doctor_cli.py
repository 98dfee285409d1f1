"""``python -m bot doctor``: every setup check the bot's settings call for, without serving.

Discord's side over REST (``bot.doctor``; no gateway connection), then, in one process, the
GPU and its models, or with ``IMAGINE_QUEUE_URL`` Redis and its GPU workers (the translator
either way), then the disk under ``IMAGINE_DATA_DIR`` and the ports the bot listens on.
Prints one line per check; the exit code is 1 when serving cannot work (``engine.doctor``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TextIO

import discord
from discord.ext import commands

from bot.client import EXTENSIONS
from bot.doctor import (
    GuildSettingsOf,
    check_commands,
    check_data_disk,
    check_guilds,
    check_intents,
    check_token,
    fetch_guilds,
)
from bot.settings import BotSettings
from engine.doctor import (
    Check,
    HubAccess,
    check_gpu,
    check_models,
    check_port,
    check_redis,
    exit_code,
    models_to_check,
    report,
)
from engine.streams import StreamKeys
from lifecycle.storage import GuildSettings, Storage

log = logging.getLogger(__name__)


async def run_doctor(settings: BotSettings, out: TextIO, hub: HubAccess | None = None) -> int:
    """Print every check's line and a summary to ``out``; the exit code (1: a failure).

    ``hub``: where models come from (default: what huggingface_hub read from HF_*).
    Call ``bot.client.point_discord_py_at`` first, as ``python -m bot`` does.
    """
    checks = await setup_checks(settings, hub or HubAccess.current())
    print(report(checks), file=out)
    return exit_code(checks)


async def setup_checks(settings: BotSettings, hub: HubAccess) -> list[Check]:
    """The checks, in the order they are printed."""
    checks = await discord_checks(settings)
    if settings.uses_workers:
        url = settings.queue_url.get_secret_value()
        checks += await check_redis(url, StreamKeys(settings.queue_prefix), workers=True)
    else:
        checks.append(await asyncio.to_thread(check_gpu, settings.engine))
    specs = models_to_check(settings.engine, generation=not settings.uses_workers, translation=True)
    checks += await check_models(specs, hub)
    checks.append(await asyncio.to_thread(check_data_disk, settings))
    checks.append(check_port(settings.gallery_host, settings.gallery_port, "IMAGINE_GALLERY_PORT"))
    checks.append(check_port(settings.metrics_host, settings.metrics_port, "IMAGINE_METRICS_PORT"))
    return checks


async def discord_checks(settings: BotSettings) -> list[Check]:
    """Token, intents, every server's permissions and the registered commands, over REST.

    With a refused token only its line comes back: nothing else can be asked.
    """
    # A bot that never connects: it logs in over REST and holds the served commands.
    client = commands.Bot(
        command_prefix=commands.when_mentioned, intents=discord.Intents.none(), help_command=None
    )
    storage = None
    try:
        token = await check_token(
            client, settings.discord_token.get_secret_value(), settings.discord_api_base
        )
        if token.failed:
            return [token]
        if settings.database_path.is_file():  # else no server has settings yet
            storage = await Storage.open(settings.database_path)
        guild_settings: GuildSettingsOf = (
            storage.guild_settings if storage is not None else _default_settings
        )
        scan = await fetch_guilds(client, guild_settings)
        complete = await _load_commands(client)
        return [
            token,
            check_intents(client.application_flags, settings.message_content_intent),
            *check_guilds(scan, client.application_id or 0),
            *await check_commands(client.tree, settings.sync_guild_id, complete=complete),
        ]
    finally:
        await client.close()
        if storage is not None:
            await storage.close()


async def _default_settings(guild_id: int) -> GuildSettings:
    return GuildSettings(guild_id=guild_id)


async def _load_commands(client: commands.Bot) -> bool:
    """Load the bot's cogs into ``client`` so its tree holds the served commands; whether
    every cog loaded (some need what only the running bot has, e.g. the gallery)."""
    complete = True
    for extension in EXTENSIONS:
        try:
            await client.load_extension(extension)
        except commands.ExtensionError as exc:
            log.debug("doctor: %s not loaded (%s)", extension, exc)
            complete = False
    return complete
