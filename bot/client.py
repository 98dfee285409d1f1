"""The Bot subclass: owns the engine runner, queue, storage and translator; wires them up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot import blocklist
from bot.actions import handle_button, reject, remix_submitted
from bot.buttons import JobButton
from bot.delivery import EDIT_INTERVAL, DiscordSink
from bot.describing import blocked_captions
from bot.doctor import log_setup_problems
from bot.errors import explain
from bot.i18n import ImagineTranslator, t
from bot.settings import BotSettings
from engine import EngineError, EngineRunner
from engine.executor import TicketExecutor
from engine.settings import COMPILE_CACHE
from engine.styles import load_styles
from gallery.listing import GalleryListing
from gallery.thumbnails import ThumbnailStore
from lifecycle.backend import Backend
from lifecycle.image_files import ImageFiles, SweepReport, run_retention
from lifecycle.local import LocalBackend
from lifecycle.queue import FairQueue
from lifecycle.service import JobService
from lifecycle.storage import Storage

log = logging.getLogger(__name__)

DEFAULT_ATTACHMENT_LIMIT = 10 * 2**20
EXIT_GPU_STUCK = 3  # the generation watchdog fired: restart me (docs/storage-and-queue.md)
EXTENSIONS = (
    "bot.cogs.imagine",
    "bot.cogs.describe",
    "bot.cogs.library",
    "bot.cogs.preferences",
    "bot.cogs.server_settings",
    "bot.cogs.showcase",
)


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
        # Nothing the bot posts pings anyone unless a call names who (the requester): prompts
        # and other user text are echoed in many places.
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options
        )
        self.settings = settings
        # The styles /imagine offers (IMAGINE_STYLES); with the GPU here, those that loaded.
        self.styles = load_styles(settings.engine.styles)
        self._load_engine = load_engine or self._default_engine_loader
        self.runner = EngineRunner(self._load_engine)
        self.queue = FairQueue(settings.queue_max_jobs, settings.queue_per_user)
        self.storage: Storage
        self.jobs: JobService
        self.gallery: GalleryListing
        self.translator: Any = None
        self.safety: Any = None
        self.describer: Any = None  # engine.describe.Describer, here when the GPU is here
        self._attachment_limits: dict[int | None, int] = {}
        self._retention: asyncio.Task | None = None
        self._doctor: asyncio.Task | None = None  # start-up's setup checks (bot/doctor.py)
        self._ops: Any = None  # engine.monitoring.OpsServer when IMAGINE_METRICS_PORT is set
        self.gallery_server: Any = None  # gallery.server.GalleryServer when IMAGINE_GALLERY_PORT
        self.exit_code = 0  # what `python -m bot` exits with (3: the GPU watchdog fired)
        self.tree.on_error = self.on_app_command_error

    def _default_engine_loader(self) -> Any:
        from engine import Engine

        return Engine.load(
            self.settings.engine,
            compile_cache=self.settings.data_dir / COMPILE_CACHE,
            styles=self.styles,  # read once: a broken entry is logged once
        )

    async def setup_hook(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = await Storage.open(self.settings.database_path)
        files = ImageFiles(self.settings.images_dir)
        self.jobs = JobService(
            self.storage,
            self.queue,
            files,
            self._backend(),
            DiscordSink(self, hidden_captions=self._hidden_captions),
            text=t,
            file_limit=self.attachment_limit,
            per_user_limit=self.settings.queue_per_user,
            max_jobs=self.settings.queue_max_jobs,
        )
        self.gallery = GalleryListing(self.storage, ThumbnailStore(self.settings.thumbnails_dir))
        self.add_dynamic_items(JobButton)
        if not self.runner.started and not self.settings.uses_workers:
            await self.runner.start()  # loads the model on the GPU thread; the loop stays free
        if not self.settings.uses_workers:
            loaded = getattr(self.runner.engine, "styles", None)
            if loaded is not None:  # a style whose LoRA failed is not offered
                self.styles = self.styles.only(loaded.names)
        # Translation runs here in both modes; the image classifier and the /describe
        # captioner run next to generation (on the workers when there are workers).
        loading = [self._load_translator()]
        if not self.settings.uses_workers:
            loading += [self._load_safety(), self._load_describer()]
        await asyncio.gather(*loading)
        # The word segmenter loads its dictionary once (~1 s): not on the first prompt.
        await asyncio.to_thread(blocklist.warm_up)
        await self.tree.set_translator(ImagineTranslator())
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.jobs.start()
        if self.settings.metrics_port:
            from engine.monitoring import OpsServer

            self._ops = await OpsServer.start(
                self.settings.metrics_host,
                self.settings.metrics_port,
                self.jobs.metrics.registry,
                self.health,
            )
        if self.settings.gallery_enabled:
            from gallery.server import GalleryHandlers, GalleryServer

            handlers = GalleryHandlers(self.storage, self.gallery.thumbnails, self._stored_image)
            self.gallery_server = await GalleryServer.start(
                self.settings.gallery_host, self.settings.gallery_port, handlers
            )
        self._retention = asyncio.create_task(
            run_retention(
                files,
                self.settings,
                self.storage.shared_job_ids,
                on_sweep=self._after_sweep,
            ),
            name="imagine-retention",
        )
        if self.settings.sync_guild_id:
            guild = discord.Object(self.settings.sync_guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        await self.tree.sync()
        log.info("ready to serve: engine loaded, %d job(s) recovered", len(self.queue))
        # Once connected, setup problems (a missing permission...) are logged, off the start.
        self._doctor = asyncio.create_task(
            log_setup_problems(self, self.settings, self.storage.guild_settings),
            name="imagine-doctor",
        )

    def _backend(self) -> Backend:
        """Where tickets are generated: GPU workers over Redis when ``IMAGINE_QUEUE_URL`` is
        set, else this process's GPU."""
        if self.settings.uses_workers:
            from engine.streams import StreamKeys, connect
            from lifecycle.redis_backend import RedisBackend

            return RedisBackend(
                connect(self.settings.queue_url.get_secret_value()),
                keys=StreamKeys(self.settings.queue_prefix),
            )
        executor = TicketExecutor(
            self.runner,
            safety=lambda: self.safety,
            describer=lambda: self.describer,
            generation_timeout=self.settings.generation_timeout,
            # Discord shows at most one edit per interval: no point making more previews.
            progress_interval=EDIT_INTERVAL,
            image_format=self.settings.engine.image_format,
        )
        return LocalBackend(
            executor,
            max_batch_images=self.settings.engine.max_batch_images,
            on_stuck=self._gpu_stuck,
        )

    # How long start-up waits for an optional model (translator, safety classifier). A model
    # that is still loading then (a first download) is taken into use when it is ready.
    optional_model_wait_s = 60.0

    async def _load_translator(self) -> None:
        from engine.translation import Translator

        def use(translator: Any) -> None:
            self.translator = translator

        await self._load_optional_model(
            "IMAGINE_TRANSLATOR", self.settings.engine.translator, Translator, use
        )

    async def _load_safety(self) -> None:
        from engine.safety import SafetyChecker

        def use(checker: Any) -> None:
            self.safety = checker

        await self._load_optional_model(
            "IMAGINE_SAFETY_MODEL", self.settings.engine.safety_model, SafetyChecker, use
        )

    async def _load_describer(self) -> None:
        from engine.describe import Describer

        engine = self.settings.engine

        def load(model: str) -> Any:
            return Describer(model, engine.device, engine.dtype)

        def use(describer: Any) -> None:
            self.describer = describer

        await self._load_optional_model("IMAGINE_DESCRIBE_MODEL", engine.describe_model, load, use)

    async def _load_optional_model(
        self, setting: str, model: str, load: Callable[[str], Any], use: Callable[[Any], None]
    ) -> None:
        """Load an optional model off the loop; the bot serves without it when it cannot.

        Waits at most ``optional_model_wait_s``; a model still loading then is handed to
        ``use`` when it is ready. A failure is one warning naming ``setting`` (no traceback:
        offline, hub down or a wrong id are the operator's to fix) and ``use`` is not called,
        so the feature's attribute stays None.
        """
        if not model:
            return
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        waiting = True

        def finish(loaded: Any, error: BaseException | None) -> None:
            finished.set()
            if error is None:
                use(loaded)
                if not waiting:
                    log.info("%s: '%s' is loaded now and in use", setting, model)
            elif isinstance(error, EngineError):
                log.warning("%s: %s Serving without it.", setting, error.user_message)
            else:
                log.error("%s: loading '%s' failed", setting, model, exc_info=error)

        def work() -> None:
            try:
                outcome = load(model), None
            except Exception as exc:
                outcome = None, exc
            with contextlib.suppress(RuntimeError):  # the event loop is gone: the bot stopped
                loop.call_soon_threadsafe(finish, *outcome)

        # A daemon thread, not asyncio.to_thread: a download that is still running must not
        # hold up the process's exit (asyncio.run waits for its default executor's threads).
        threading.Thread(target=work, name=f"load {setting}", daemon=True).start()
        try:
            await asyncio.wait_for(finished.wait(), self.optional_model_wait_s)
        except TimeoutError:
            waiting = False
            if finished.is_set():  # it finished while the wait was being cancelled
                return
            log.warning(
                "%s: '%s' is still loading after %g s (a first download?); serving without "
                "it until it is ready.",
                setting,
                model,
                self.optional_model_wait_s,
            )

    async def _hidden_captions(self, job: Any) -> frozenset[int]:
        """The prompts of a /describe result that the blocklist refuses in its server."""
        settings = await self.storage.guild_settings(job.guild_id) if job.guild_id else None
        return blocked_captions(job, settings)

    async def _stored_image(self, job: Any, index: int) -> tuple[str, bytes]:
        """One stored image of a job, as (file name, bytes), for the gallery."""
        return (await self.jobs.load_images(job, [index]))[0]

    async def _after_sweep(self, report: SweepReport) -> None:
        """A retention sweep removed sets: the gallery drops them too."""
        await self.gallery.images_purged(report.removed)

    def health(self) -> dict[str, object]:
        """What ``/healthz`` says: ok while connected to Discord and the GPU is not stuck
        (no worker online is not a fault of the bot: jobs wait for one)."""
        backend = self.jobs.backend
        return {
            "ok": self.is_ready() and not self.is_closed() and not self.jobs.stuck,
            "discord": self.is_ready() and not self.is_closed(),
            "backend": backend.name,
            "gpu_available": backend.available,
            "gpus": backend.gpus if backend.available else 0,
            "queued": len(self.queue),
        }

    def _gpu_stuck(self) -> None:
        """The generation watchdog fired: exit non-zero so a supervisor restarts the bot."""
        self.exit_code = EXIT_GPU_STUCK
        asyncio.get_running_loop().create_task(self.close())

    async def close(self) -> None:
        log.info("shutting down: finishing the running batch")
        if self._retention is not None:
            self._retention.cancel()
        if self._doctor is not None:
            self._doctor.cancel()
        if self._ops is not None:
            await self._ops.close()
        if self.gallery_server is not None:
            await self.gallery_server.close()
        stuck = hasattr(self, "jobs") and self.jobs.stuck
        if hasattr(self, "jobs"):
            await self.jobs.stop()
        # A stuck GPU thread cannot be joined: leave it behind (python -m bot then exits hard).
        await self.runner.close(wait=not stuck)
        if hasattr(self, "storage"):
            await self.storage.close()
        await super().close()

    # ------------------------------------------------------------------ services for the cogs
    @property
    def translation_available(self) -> bool:
        """Whether Chinese prompts can be translated now (the translator is loaded)."""
        return self.translator is not None and self.translator.enabled

    @property
    def describe_available(self) -> bool:
        """Whether /describe can run: its model is loaded here, or (with GPU workers) set for
        the workers, which load it themselves (a worker without it fails the job clearly)."""
        if self.settings.uses_workers:
            return bool(self.settings.engine.describe_model)
        return self.describer is not None and self.describer.enabled

    async def interpret(self, prompt: str) -> str | None:
        """English for the model when the prompt needs translating; None when it does not."""
        if not self.translation_available:
            return None
        result = await asyncio.to_thread(self.translator.interpret, prompt)
        return result.text if result.translated else None

    def note_attachment_limit(self, interaction: discord.Interaction) -> None:
        """Remember the upload limit Discord told us for this guild (it varies with boosts)."""
        limit = getattr(interaction, "filesize_limit", None)
        if limit:
            self._attachment_limits[interaction.guild_id] = limit

    def attachment_limit(self, guild_id: int | None) -> int:
        """Per-file upload limit for results in this guild (10 MiB unless Discord said more)."""
        return self._attachment_limits.get(guild_id, DEFAULT_ATTACHMENT_LIMIT)

    async def on_job_button(
        self, interaction: discord.Interaction, action: str, job_id: int, index: int | None
    ) -> None:
        """Where ``JobButton`` clicks go (the button knows nothing of jobs or actions)."""
        await handle_button(self, interaction, action, job_id, index)

    async def on_remix_submit(
        self, interaction: discord.Interaction, job_id: int, form: Any
    ) -> None:
        """Where a submitted Remix form goes (``bot.remix.RemixModal``: a ``RemixForm``)."""
        try:
            await remix_submitted(self, interaction, job_id, form)
        except Exception as exc:
            # Like a button: no command tree in between, so answer here and no form hangs.
            message = explain(exc, interaction.locale, context=f"remix of job {job_id}")
            with contextlib.suppress(discord.HTTPException):
                await reject(interaction, message)

    # ------------------------------------------------------------------ errors
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        self.note_attachment_limit(interaction)

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Commands' failures become a clear ephemeral reply (``bot.errors.explain``)."""
        name = interaction.command.name if interaction.command else "?"
        message = explain(error, interaction.locale, context=f"command {name}")
        try:
            if interaction.response.is_done():
                await interaction.followup.send(message, ephemeral=True)
            else:
                await interaction.response.send_message(message, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about the error")

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("unhandled error in %s", event_method)


class ShardedImagineBot(ImagineBot, commands.AutoShardedBot):
    """ImagineBot over discord.py's AutoShardedBot: as many gateway connections as Discord
    recommends (``IMAGINE_AUTO_SHARD``; Discord requires sharding above 2,500 servers)."""


def create_bot(settings: BotSettings, **options: Any) -> ImagineBot:
    """The bot ``settings`` ask for: sharded or not."""
    cls = ShardedImagineBot if settings.auto_shard else ImagineBot
    return cls(settings, **options)
