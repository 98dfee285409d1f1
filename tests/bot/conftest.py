"""End-to-end fixtures: the real ImagineBot, a tiny engine, and the local Discord stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import discord
import pytest

from bot.client import ImagineBot
from bot.settings import BotSettings

if TYPE_CHECKING:
    from tests.discord_standin import DiscordStandin


@pytest.fixture
async def standin() -> AsyncIterator[DiscordStandin]:
    from tests.discord_standin import DiscordStandin

    server = DiscordStandin()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def bot_settings(standin: DiscordStandin, data_dir: Path, tiny_engine_settings) -> BotSettings:
    """Settings as an operator would give them, pointing at the stand-in and the tiny model."""
    return BotSettings(
        _env_file=None,
        DISCORD_TOKEN=standin.token,
        DISCORD_API_BASE=standin.api_base,
        DISCORD_GATEWAY_URL=standin.gateway_url,
        IMAGINE_DATA_DIR=data_dir,
        engine=tiny_engine_settings,
    )


#: The public base address the gallery tests give the bot (IMAGINE_GALLERY_URL).
GALLERY_URL = "https://images.example.org"


@pytest.fixture
def gallery_settings(bot_settings: BotSettings) -> BotSettings:
    """``bot_settings`` with the gallery listening on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return bot_settings.model_copy(
        update={"gallery_port": port, "gallery_host": "127.0.0.1", "gallery_url": GALLERY_URL}
    )


class BotProcess:
    """Starts and stops the real bot in this event loop, the way ``python -m bot`` does."""

    def __init__(self, standin: DiscordStandin, settings: BotSettings, **options):
        self.standin = standin
        self.settings = settings
        self.options = options
        self.bot: ImagineBot | None = None
        self.task: asyncio.Task | None = None

    async def start(self, settings: BotSettings | None = None, **options) -> ImagineBot:
        from bot.client import create_bot, point_discord_py_at

        settings = settings or self.settings
        point_discord_py_at(settings.discord_api_base, settings.discord_gateway_url)
        self.bot = create_bot(settings, guild_ready_timeout=0.05, **{**self.options, **options})
        self.task = asyncio.create_task(self.bot.start(settings.discord_token.get_secret_value()))
        await self._wait_ready()
        return self.bot

    async def _wait_ready(self) -> None:
        assert self.bot is not None and self.task is not None
        ready = asyncio.create_task(self.bot.wait_until_ready())
        done, _ = await asyncio.wait(
            {ready, self.task}, timeout=60, return_when=asyncio.FIRST_COMPLETED
        )
        if self.task in done:
            self.task.result()  # start-up failed: raise its error
        assert ready in done, "bot did not become ready"
        # setup_hook syncs commands before connecting; make sure the stand-in has them
        await self.standin.wait_for_commands(timeout=30)

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, timeout=30)
        self.bot = None
        self.task = None

    async def kill(self) -> None:
        """Stop without any graceful shutdown, like ``kill -9``: tasks just stop existing."""
        assert self.bot is not None and self.task is not None
        bot = self.bot
        jobs = bot.jobs
        backend_tasks = [
            getattr(jobs.backend, "_batch", None),
            *getattr(jobs.backend, "_tasks", []),
        ]
        for task in [jobs._dispatcher, jobs._watcher, *backend_tasks]:
            if task is not None:
                task.cancel()
        for task in list(jobs._tasks):
            task.cancel()
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        # Release what a dead process would release: sockets, the db file, threads.
        with contextlib.suppress(Exception):
            await discord.Client.close(bot)
        with contextlib.suppress(Exception):
            await bot.storage.close()
        redis = getattr(jobs.backend, "redis", None)
        if redis is not None:  # a dead process's connections just drop
            with contextlib.suppress(Exception):
                await redis.aclose()
        bot.runner._gpu.shutdown(wait=True, cancel_futures=True)
        self.bot = None
        self.task = None


@pytest.fixture
async def bot_process(
    standin: DiscordStandin, bot_settings: BotSettings
) -> AsyncIterator[BotProcess]:
    import discord.gateway
    import discord.http

    old = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    process = BotProcess(standin, bot_settings)
    try:
        yield process
    finally:
        await process.stop()
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old


@pytest.fixture
def world(standin: DiscordStandin):
    """A guild with a normal channel, an NSFW channel, a showcase channel and three members."""
    from tests.discord_standin import Perm

    guild = standin.add_guild(name="Test guild")
    general = standin.add_channel(guild, name="general")
    nsfw = standin.add_channel(guild, name="after-dark", nsfw=True)
    showcase = standin.add_channel(guild, name="showcase")
    alice = standin.add_user("alice")
    bob = standin.add_user("bob")
    mod = standin.add_user("mod", permissions=Perm.MANAGE_MESSAGES | Perm.MANAGE_GUILD)
    return _World(guild, general, nsfw, showcase, alice, bob, mod)


class _World:
    def __init__(self, guild, general, nsfw, showcase, alice, bob, mod):
        self.guild = guild
        self.general = general
        self.nsfw = nsfw
        self.showcase = showcase
        self.alice = alice
        self.bob = bob
        self.mod = mod
