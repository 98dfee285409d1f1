"""The Bot subclass: owns the engine runner, queue, storage and translator; wires them up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.buttons import JobButton
from bot.i18n import ImagineTranslator
from bot.jobs import Jobs
from bot.queue import FairQueue
from bot.settings import BotSettings
from bot.storage import Job, Storage
from engine import EngineError, EngineRunner

log = logging.getLogger(__name__)

DEFAULT_ATTACHMENT_LIMIT = 10 * 2**20
EXTENSIONS = ("bot.cogs.imagine",)


def point_discord_py_at(api_base: str, gateway_url: str) -> None:
    """Send discord.py's REST and gateway traffic to the configured endpoints.

    Lets operators use an HTTP rate-limit proxy, and tests a local Discord stand-in.
    """
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class ImagineBot(commands.Bot):
    """Answers /imagine with four images; keeps every job in SQLite until it is posted."""

    def __init__(
        self,
        settings: BotSettings,
        *,
        load_engine: Callable[[], Any] | None = None,
        **options: Any,
    ):
        intents = discord.Intents.default()
        intents.members = False
        # Privileged; without it replies that ping the bot still carry their text.
        intents.message_content = settings.message_content_intent
        options.setdefault("chunk_guilds_at_startup", False)
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options
        )
        self.settings = settings
        self._load_engine = load_engine or self._default_engine_loader
        self.runner = EngineRunner(self._load_engine)
        self.queue = FairQueue(settings.queue_max_jobs, settings.queue_per_user)
        self.storage: Storage
        self.jobs: Jobs
        self.translator: Any = None
        self.safety: Any = None
        self._attachment_limits: dict[int | None, int] = {}
        self.tree.on_error = self.on_app_command_error

    def _default_engine_loader(self) -> Any:
        from engine import Engine

        return Engine.load(self.settings.engine)

    async def setup_hook(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = await Storage.open(self.settings.database_path)
        self.jobs = Jobs(self, self.storage, self.queue)
        self.add_dynamic_items(JobButton)
        if not self.runner.started:
            await self.runner.start()  # loads the model on the GPU thread; the loop stays free
        await asyncio.gather(self._load_translator(), self._load_safety())
        await self.tree.set_translator(ImagineTranslator())
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.jobs.start()
        if self.settings.sync_guild_id:
            guild = discord.Object(self.settings.sync_guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        await self.tree.sync()
        log.info("ready to serve: engine loaded, %d job(s) recovered", len(self.queue))

    async def _load_translator(self) -> None:
        model = self.settings.engine.translator
        if not model:
            return
        from engine.translation import Translator

        self.translator = await asyncio.to_thread(Translator, model)

    async def _load_safety(self) -> None:
        model = self.settings.engine.safety_model
        if not model:
            return
        from engine.safety import SafetyChecker

        self.safety = await asyncio.to_thread(SafetyChecker, model)

    async def close(self) -> None:
        log.info("shutting down: finishing the running batch")
        if hasattr(self, "jobs"):
            await self.jobs.stop()
        await self.runner.close()
        if hasattr(self, "storage"):
            await self.storage.close()
        await super().close()

    # ------------------------------------------------------------------ services for the cogs
    async def interpret(self, prompt: str) -> str | None:
        """English for the model when the prompt needs translating; None when it does not."""
        if self.translator is None or not self.translator.enabled:
            return None
        result = await asyncio.to_thread(self.translator.interpret, prompt)
        return result.text if result.translated else None

    async def check_safety(
        self, job: Job, images: Sequence[Any]
    ) -> tuple[list[bool], list[bool], list[str]] | None:
        """(spoiler, withheld, notes) per image, or None when no check applies."""
        if self.safety is None or job.nsfw_channel or job.guild_id is None:
            return None
        settings = await self.storage.guild_settings(job.guild_id)
        if settings.safety_mode == "off":
            return None
        verdicts = await asyncio.to_thread(self.safety.check, list(images))
        flagged = [v.flagged for v in verdicts]
        if not any(flagged):
            return None
        log.info(
            "job %s: %d image(s) flagged by the safety filter (%s)",
            job.id,
            sum(flagged),
            settings.safety_mode,
        )
        if settings.safety_mode == "withhold":
            note = f"{sum(flagged)} image(s) withheld by this server's safety filter."
            return [False] * len(flagged), flagged, [note]
        note = f"{sum(flagged)} image(s) hidden as spoilers by the safety filter."
        return flagged, [False] * len(flagged), [note]

    def note_attachment_limit(self, interaction: discord.Interaction) -> None:
        """Remember the upload limit Discord told us for this guild (it varies with boosts)."""
        limit = getattr(interaction, "filesize_limit", None)
        if limit:
            self._attachment_limits[interaction.guild_id] = limit

    def attachment_limit(self, guild_id: int | None) -> int:
        """Per-file upload limit for results in this guild (10 MiB unless Discord said more)."""
        return self._attachment_limits.get(guild_id, DEFAULT_ATTACHMENT_LIMIT)

    # ------------------------------------------------------------------ errors
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        self.note_attachment_limit(interaction)

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """One place that turns failures into a clear ephemeral reply."""
        original = getattr(error, "original", error)
        if isinstance(original, EngineError):
            message = original.user_message
        elif isinstance(error, app_commands.CheckFailure):
            message = "You cannot use this command here."
        else:
            log.exception(
                "command %s failed",
                interaction.command and interaction.command.name,
                exc_info=original,
            )
            message = "Something went wrong on my side. It has been logged; please try again."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(message, ephemeral=True)
            else:
                await interaction.response.send_message(message, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about the error")

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("unhandled error in %s", event_method)
