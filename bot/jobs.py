"""The life of a job: accepted -> stored -> queued -> generated -> encoded -> posted -> stored.

``Jobs`` is the only place where Discord messages, the queue, storage and the engine runner
meet. Every state change is written to SQLite when it happens, so a restart (even after
``kill -9``) picks up whatever was accepted and not finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.i18n import t
from bot.image_files import ImageFiles
from bot.queue import JobQueue, QueuedJob, QueueFull, UserLimitReached
from bot.storage import Job, NewJob, Storage
from engine import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    StepProgress,
)
from engine.encoding import encode_one

if TYPE_CHECKING:
    from bot.client import ImagineBot

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 15 * 60
TOKEN_MARGIN = 30  # stop using a token this long before Discord kills it
EDIT_INTERVAL = 1.0  # at most one progress/position edit per message per second
POSITION_SETTLE = 0.2  # let a burst of queue changes settle into one round of position edits
DEFAULT_SECONDS_PER_IMAGE = 0.1  # ETA guess until the first batch has been timed
DEFAULT_STRENGTH = 0.6
PREVIEW_LIMIT = 2**20  # a preview is <= 256 px: far below any upload limit
MAX_PENDING_DELIVERIES = 16  # results being encoded/posted before the GPU waits for them
EDIT_DRAIN_TIMEOUT = 10.0  # how long delivery waits for an in-flight progress edit
ALLOWED_NONE = discord.AllowedMentions.none()
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
INVALID_WEBHOOK_TOKEN = 50027
GENERIC_FAILURE = "Something went wrong while generating. Please try again."


class JobRejected(Exception):
    """The job cannot be accepted; ``user_message`` says why."""

    def __init__(self, user_message: str):
        super().__init__(user_message)
        self.user_message = user_message


class _GPUStuck(Exception):
    """A GPU call ran past the generation watchdog's limit."""


class StatusMessageGone(Exception):
    """The job's status message can no longer be edited (token expired or message deleted)."""


def position_interval(position: int) -> float:
    """Least seconds between two "position in queue" edits of one message.

    The first ten see every move (at most one edit a second); further back, a move matters
    less and a long queue would otherwise cost one edit per queued job per batch, so the
    interval grows with the position (100 queued jobs: ~20 edits/s in all, not ~200).
    """
    return EDIT_INTERVAL if position <= 10 else min(10.0, position / 5)


@dataclass(frozen=True)
class _Edit:
    """One wanted state of a status message; only the newest pending one is ever sent."""

    content: str
    cancel_button: bool
    preview: Any = None
    interval: float = EDIT_INTERVAL


@dataclass(frozen=True)
class _PreparedFiles:
    """A result's encoded files, numbered like its seeds (1-based), and the safety verdicts."""

    indexes: tuple[int, ...]  # image numbers of ``blobs``; withheld numbers are missing
    blobs: list[tuple[str, bytes]]
    spoilers: list[bool]  # per blob
    flagged: tuple[int, ...]
    withheld: tuple[int, ...]
    notes: list[str]


@dataclass
class LiveJob:
    """In-memory companion of a queued or running job: its status message and edit state.

    Edits are "latest wins": callers only replace ``pending``; one editor task per message
    sends it, at most once per interval, so a slow Discord never queues up stale edits and
    never holds up the GPU feeder.
    """

    job: Job
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    notes: tuple[str, ...] = ()
    last_edit: float = -1e9
    shown: str | None = None  # content of the last successful edit
    pending: _Edit | None = None
    editor: asyncio.Task | None = None
    editing: bool = False  # an edit request is in flight
    closed: bool = False  # delivery, failure or cancel owns the message now: no more edits
    message_gone: bool = False  # deleted (10008): never edit it again
    token_dead: bool = False  # the interaction token was refused: use the channel route

    @property
    def job_id(self) -> int:
        return self.job.id


def request_for(job: Job, init_image: bytes | None = None) -> GenerationRequest:
    """Rebuild the engine request from a stored job (same after a restart)."""
    return GenerationRequest(
        prompt=job.interpreted_prompt or job.prompt,
        seed=job.seed,
        width=job.width,
        height=job.height,
        negative_prompt=job.negative_prompt or "",
        steps=job.steps,
        guidance=job.guidance,
        count=job.count,
        init_image=init_image,
        strength=job.strength if job.strength is not None else DEFAULT_STRENGTH,
    )


def facts_for(
    job: Job, seconds: float | None = None, notes: Sequence[str] = ()
) -> render.ResultFacts:
    """What the result message says about ``job``."""
    return render.ResultFacts(
        job_id=job.id,
        requester_id=job.requester_id,
        prompt=job.prompt,
        interpreted_prompt=job.interpreted_prompt,
        negative_prompt=job.negative_prompt or "",
        seeds=tuple(job.seeds or ()),
        width=job.width,
        height=job.height,
        steps=job.steps,
        guidance=job.guidance,
        seconds=seconds,
        notes=tuple(notes),
        kind=job.kind,
        parent_index=job.parent_index,
        locale=job.locale,
    )


class Jobs:
    """Accepts jobs, feeds the GPU from the fair queue, and posts results."""

    def __init__(
        self,
        bot: ImagineBot,
        storage: Storage,
        queue: JobQueue,
        files: ImageFiles,
        *,
        generation_timeout: float,
        on_stuck: Callable[[], None],
    ):
        self.bot = bot
        self.storage = storage
        self.queue = queue
        self.files = files
        self.generation_timeout = generation_timeout
        self._on_stuck = on_stuck
        self.stuck = False  # the watchdog fired: the GPU thread is stuck, take no more batches
        self.live: dict[int, LiveJob] = {}
        self._feeder: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._seconds_per_image = DEFAULT_SECONDS_PER_IMAGE
        self._stopping = False
        self._position_task: asyncio.Task | None = None
        self._running: set[int] = set()
        self._batch: asyncio.Future | None = None  # the batch on the GPU now (or the last)
        self._busy_until = 0.0  # loop time when the running batch should end (ETA)
        self.batches: list[tuple[int, ...]] = []  # job ids per GPU batch (recent; for tests)

    @property
    def seconds_per_image(self) -> float:
        """Smoothed GPU seconds per image, measured on finished batches (ETA basis)."""
        return self._seconds_per_image

    # ----------------------------------------------------------------------------- accepting
    async def accept(self, new: NewJob, *, per_user_limit: int | None = None) -> Job:
        """Store a new job and put it in the queue.

        Raises:
            JobRejected: the queue or the user's share of it is full; nothing is queued.
        """
        self.check_capacity(new.kind, new.requester_id, per_user_limit, new.locale)
        job = await self.storage.create_job(new)
        self.live[job.id] = LiveJob(job)
        if await self._from_stored_image(job):
            self._spawn(self._deliver_stored(job))
            return job
        try:
            await self.queue.submit(self._queued(job), per_user_limit=per_user_limit)
        except (QueueFull, UserLimitReached) as exc:
            # Lost a race with another submit between the check and here: refuse this one.
            await self.storage.mark_cancelled(job.id)
            self.live.pop(job.id, None)
            limit = per_user_limit or self._default_per_user_limit()
            key = "queue_full" if isinstance(exc, QueueFull) else "user_limit"
            raise JobRejected(t(key, new.locale, limit=limit)) from exc
        log.info(
            "job %s accepted: kind=%s user=%s seed=%s size=%sx%s queue=%s",
            job.id,
            job.kind,
            job.requester_id,
            job.seed,
            job.width,
            job.height,
            len(self.queue),
        )
        return job

    def _default_per_user_limit(self) -> int:
        return getattr(self.queue, "per_user_limit", None) or self.bot.settings.queue_per_user

    def check_capacity(
        self, kind: str, user_id: int, per_user_limit: int | None, locale: str | None
    ) -> None:
        """Raise JobRejected when a new job of ``user_id`` would not fit in the queue.

        Callers check before any slow work (translation); the queue re-checks atomically on
        submit. Posting a stored image alone (U) takes no GPU time and is never refused.
        """
        if kind == "upscale":
            return
        limit = per_user_limit or self._default_per_user_limit()
        max_size = getattr(self.queue, "max_size", None) or self.bot.settings.queue_max_jobs
        if len(self.queue) >= max_size:
            raise JobRejected(t("queue_full", locale))
        if self.queue.queued_for(user_id) >= limit:
            raise JobRejected(t("user_limit", locale, limit=limit))

    def _queued(self, job: Job) -> QueuedJob:
        return QueuedJob(
            job_id=job.id,
            user_id=job.requester_id,
            images=job.count,
            batch_key=request_for(job, b"x" if job.kind == "variation" else None).batch_key,
            enqueued_at=time.time(),
        )

    async def attach_status_message(self, job_id: int, message_id: int | None) -> None:
        """Record the message that shows the job's progress and will carry its result."""
        if message_id is not None:
            await self.storage.set_status_message(job_id, message_id)
        live = self.live.get(job_id)
        if live is not None:
            if message_id is not None:
                live.job = dataclasses.replace(live.job, status_message_id=message_id)
            live.ready.set()
        self._schedule_positions()

    def set_notes(self, job_id: int, notes: Sequence[str]) -> None:
        """Notes (e.g. "guidance raised") to show with the job's result."""
        live = self.live.get(job_id)
        if live is not None:
            live.notes = tuple(notes)

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Re-queue what a previous run accepted and did not finish, then start feeding."""
        for job in await self.storage.unfinished_jobs():
            log.info("job %s recovered after restart (was %s)", job.id, job.status)
            live = LiveJob(job)
            live.ready.set()
            self.live[job.id] = live
            if await self._from_stored_image(job):
                self._spawn(self._deliver_stored(job))
                continue
            try:
                await self.queue.submit(self._queued(job), enforce_limits=False)
            except QueueFull:
                await self._fail(job, "The bot restarted with a full queue; please try again.")
        self.queue.subscribe(self._schedule_positions)
        self._feeder = asyncio.create_task(self._feed(), name="imagine-gpu-feeder")

    async def stop(self) -> None:
        """Finish the running batch and deliver it; queued jobs stay stored for next start."""
        self._stopping = True
        if self._feeder is not None:
            # The feeder only stops between batches: the running batch is shielded from the
            # cancel, so wait for it (and the deliveries it spawns) before storage closes.
            self._feeder.cancel()
            try:
                await self._feeder
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("the GPU feeder had stopped with an error")
        if self._batch is not None and not self.stuck:
            await asyncio.gather(self._batch, return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._position_task is not None:
            self._position_task.cancel()
        for live in list(self.live.values()):
            await self._close_edits(live)

    # ----------------------------------------------------------------------------- GPU feeder
    async def _feed(self) -> None:
        max_images = self.bot.settings.engine.max_batch_images
        while True:
            # Back-pressure: when encoding and posting fall behind the GPU (too few CPU cores),
            # wait for deliveries to drain instead of piling up finished images in memory.
            while len(self._tasks) >= MAX_PENDING_DELIVERIES:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
            batch = await self.queue.next_batch(max_images)
            # Shielded: a shutdown waits for the running batch instead of abandoning it.
            self._batch = asyncio.ensure_future(self._run_batch(batch))
            try:
                await asyncio.shield(self._batch)
            except Exception:
                # _run_batch fails its own jobs; this is the last net, so that no error
                # (storage, files) ever stops the feeder and leaves later jobs queued forever.
                log.exception("GPU batch %s: unexpected error", [q.job_id for q in batch])
            if self.stuck:
                return

    async def _run_batch(self, batch: Sequence[QueuedJob]) -> None:
        jobs: list[Job] = []
        requests: list[GenerationRequest] = []
        for queued in batch:
            # The in-memory copy saves a database round trip per job while the GPU waits: a
            # job in a batch was queued a moment ago, and cancelling removes it from both.
            live = self.live.get(queued.job_id)
            job = live.job if live is not None else None
            try:
                job = job or await self.storage.get_job(queued.job_id)
                if job is None or job.status not in ("queued", "running"):
                    continue
                request = request_for(job, await self._init_image(job))
            except JobRejected as exc:
                assert job is not None
                await self._fail(job, exc.user_message)
                continue
            except Exception:
                # Storage or file trouble fails this job only; its batch-mates go on.
                log.exception("job %s could not be prepared for the GPU", queued.job_id)
                if job is not None:
                    await self._fail(job, GENERIC_FAILURE)
                continue
            self._running.add(job.id)
            jobs.append(job)
            requests.append(request)
        if not jobs:
            return
        self.batches = [*self.batches[-199:], tuple(j.id for j in jobs)]
        loop = asyncio.get_running_loop()
        images = sum(r.count for r in requests)
        self._busy_until = loop.time() + images * self._seconds_per_image
        self._schedule_positions()
        progress = self._progress_for(jobs)
        started = time.perf_counter()
        # Start the GPU first; the "running" writes (one fsync each) overlap with it.
        generation = asyncio.ensure_future(self.bot.runner.generate_batch(requests, progress))
        try:
            for job in jobs:
                await self.storage.mark_running(job.id)
        except Exception:
            log.exception("could not mark jobs %s running", [j.id for j in jobs])
        try:
            results = await self._watched(generation)
        except _GPUStuck:
            await self._gpu_stuck(jobs)
            return
        except Exception as exc:
            self._busy_until = 0.0
            for job in jobs:
                self._running.discard(job.id)
            if len(jobs) > 1:
                # One bad request must not fail its batch-mates: run each alone. (Out of GPU
                # memory: the engine already retried in halves; single jobs may still fit.)
                log.warning("batch of %d failed (%r); retrying jobs one by one", len(jobs), exc)
                for job, request in zip(jobs, requests, strict=True):
                    if self.stuck:  # the rest stay queued in storage for the restart
                        break
                    await self._run_single(job, request)
                return
            await self._engine_failed(jobs[0], exc)
            return
        for job in jobs:
            self._running.discard(job.id)
        self._busy_until = 0.0
        elapsed = time.perf_counter() - started
        self._seconds_per_image = 0.7 * self._seconds_per_image + 0.3 * elapsed / max(images, 1)
        for job, result in zip(jobs, results, strict=True):
            self._spawn(self._deliver(job, result))

    async def _watched(self, generation: asyncio.Future) -> list[GenerationResult]:
        """Await a GPU call under the watchdog; raise _GPUStuck past ``generation_timeout``."""
        try:
            return await asyncio.wait_for(asyncio.shield(generation), self.generation_timeout)
        except TimeoutError:
            if generation.done():
                raise  # the engine's own TimeoutError
            raise _GPUStuck from None

    async def _run_single(self, job: Job, request: GenerationRequest) -> None:
        self._running.add(job.id)
        try:
            generation = asyncio.ensure_future(
                self.bot.runner.generate_batch([request], self._progress_for([job]))
            )
            [result] = await self._watched(generation)
        except _GPUStuck:
            await self._gpu_stuck([job])
            return
        except Exception as exc:
            await self._engine_failed(job, exc)
            return
        finally:
            self._running.discard(job.id)
        self._spawn(self._deliver(job, result))

    async def _gpu_stuck(self, jobs: Sequence[Job]) -> None:
        """The watchdog: a batch ran past ``generation_timeout``.

        A CUDA call cannot be interrupted from Python, so the GPU thread stays busy and no
        later batch could run. Fail this batch's jobs (not re-run after the restart: they may
        be what hangs the GPU), stop feeding and let the bot exit non-zero so a supervisor
        restarts it; queued jobs stay stored and are recovered then.
        """
        self.stuck = True
        log.critical(
            "GPU batch %s still running after %.0f s (IMAGINE_GENERATION_TIMEOUT): failing it "
            "and shutting down for a restart",
            [job.id for job in jobs],
            self.generation_timeout,
        )
        for job in jobs:
            self._running.discard(job.id)
            await self._fail(job, t("generation_timed_out", job.locale))
        self._on_stuck()

    async def _engine_failed(self, job: Job, exc: BaseException) -> None:
        if isinstance(exc, EngineError):
            log.warning("job %s: engine error: %s", job.id, exc)
            await self._fail(job, exc.user_message)
        else:
            log.error("engine crashed on job %s", job.id, exc_info=exc)
            await self._fail(job, GENERIC_FAILURE)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _init_image(self, job: Job) -> bytes | None:
        if job.kind != "variation" or job.parent_job_id is None:
            return None
        parent = await self.storage.get_job(job.parent_job_id)
        try:
            if parent is None:
                raise FileNotFoundError(job.parent_job_id)
            [(_, data)] = await self.load_images(parent, [job.parent_index or 1])
        except FileNotFoundError:
            raise JobRejected(t("images_purged", job.locale)) from None
        return data

    # ----------------------------------------------------------------------------- progress
    def _progress_for(self, jobs: Sequence[Job]) -> Callable[[StepProgress], None]:
        ids = [job.id for job in jobs]

        def on_progress(step: StepProgress) -> None:
            # Runs on the event loop (the runner forwards it); never awaits, never blocks.
            for i, job_id in enumerate(ids):
                live = self.live.get(job_id)
                if live is None:
                    continue
                self._request_edit(
                    live,
                    render.progress_text(step.step, step.total, live.job.locale),
                    cancel_button=False,
                    # The preview shows the batch's first image: it belongs to the first job.
                    preview=step.preview if i == 0 else None,
                )

        return on_progress

    def _schedule_positions(self) -> None:
        if self._stopping:
            return
        if self._position_task is None or self._position_task.done():
            loop = asyncio.get_running_loop()
            self._position_task = loop.create_task(self._show_positions())

    async def _show_positions(self) -> None:
        await asyncio.sleep(POSITION_SETTLE)
        loop = asyncio.get_running_loop()
        busy_for = max(0.0, self._busy_until - loop.time())
        ahead = 0
        # One pass over the order: position and ETA for all queued jobs in O(n).
        for position, job_id in enumerate(self.queue.order(), start=1):
            queued = self.queue.get(job_id)
            live = self.live.get(job_id)
            eta = busy_for + ahead * self._seconds_per_image
            ahead += queued.images if queued is not None else 0
            if live is None or not live.ready.is_set():
                continue
            self._request_edit(
                live,
                render.queued_text(position, eta, live.job.locale),
                cancel_button=True,
                interval=position_interval(position),
            )

    def _request_edit(
        self,
        live: LiveJob,
        content: str,
        *,
        cancel_button: bool,
        preview: Any = None,
        interval: float = EDIT_INTERVAL,
    ) -> None:
        """Ask for the status message to show ``content``; returns at once (never awaits)."""
        if live.closed or live.message_gone or not live.ready.is_set():
            return
        if live.job.status_message_id is None:
            return
        if preview is None and live.pending is None and content == live.shown:
            return
        live.pending = _Edit(content, cancel_button, preview, interval)
        if live.editor is None or live.editor.done():
            live.editor = asyncio.get_running_loop().create_task(self._run_editor(live))

    async def _run_editor(self, live: LiveJob) -> None:
        loop = asyncio.get_running_loop()
        while live.pending is not None and not (live.closed or live.message_gone):
            delay = live.last_edit + live.pending.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # a newer edit may have replaced the pending one meanwhile
            edit, live.pending = live.pending, None
            live.last_edit = loop.time()
            live.editing = True
            try:
                await self._apply_edit(live, edit)
            finally:
                live.editing = False

    async def _apply_edit(self, live: LiveJob, edit: _Edit) -> None:
        attachments: list[discord.File] = []
        if edit.preview is not None:
            preview = await asyncio.to_thread(
                encode_one, edit.preview, PREVIEW_LIMIT, stem="preview"
            )
            attachments = [discord.File(io.BytesIO(preview.data), filename=preview.filename)]
        if live.closed:
            return
        view = render.cancel_view(live.job_id) if edit.cancel_button else discord.ui.View()
        try:
            await self._edit_message(
                live.job, live, content=edit.content, attachments=attachments, view=view
            )
            live.shown = edit.content
        except StatusMessageGone as exc:
            log.info("job %s: status message not editable any more: %s", live.job_id, exc)
        except discord.HTTPException as exc:
            log.info("job %s: status edit failed: %s", live.job_id, exc)
        except Exception:
            # A progress edit is never worth a crash (e.g. the HTTP session closing at exit).
            log.exception("job %s: status edit failed", live.job_id)

    async def _close_edits(self, live: LiveJob | None, timeout: float = EDIT_DRAIN_TIMEOUT) -> None:
        """Stop progress/position edits; wait for one in flight so it cannot land last."""
        if live is None:
            return
        live.closed = True
        live.pending = None
        task = live.editor
        if task is None or task.done() or task is asyncio.current_task():
            return
        if live.editing:
            await asyncio.wait({task}, timeout=timeout)
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ----------------------------------------------------------------------------- delivery
    async def _edit_message(
        self, job: Job, live: LiveJob | None, *, channel_fallback: bool = True, **fields: Any
    ) -> discord.Message:
        """Edit the job's status message: through the interaction token while it is valid,
        else (or when Discord refuses the token) through the channel, as the bot's own message.

        Raises:
            StatusMessageGone: the message was deleted (10008), or the token is dead and
                ``channel_fallback`` is False.
            discord.HTTPException: any other refusal.
        """
        if job.status_message_id is None:
            raise StatusMessageGone(f"job {job.id}: no status message")
        token_ok = (
            bool(job.interaction_token and job.application_id)
            and job.token_usable(margin_s=TOKEN_MARGIN)
            and not (live and live.token_dead)
        )
        try:
            if token_ok:
                assert job.application_id is not None and job.interaction_token is not None
                hook = discord.Webhook.partial(
                    job.application_id, job.interaction_token, client=self.bot
                )
                try:
                    return await hook.edit_message(
                        job.status_message_id, allowed_mentions=ALLOWED_NONE, **fields
                    )
                except discord.HTTPException as exc:
                    if exc.code not in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK):
                        raise
                    log.info("job %s: interaction token refused (%s)", job.id, exc.code)
                    if live is not None:
                        live.token_dead = True
            if job.interaction_token and not channel_fallback:
                raise StatusMessageGone(f"job {job.id}: interaction token expired or refused")
            channel = self.bot.get_partial_messageable(job.channel_id)
            message = channel.get_partial_message(job.status_message_id)
            return await message.edit(allowed_mentions=ALLOWED_NONE, **fields)
        except discord.NotFound as exc:
            if exc.code != UNKNOWN_MESSAGE:
                raise
            if live is not None:
                live.message_gone = True
            raise StatusMessageGone(f"job {job.id}: status message deleted") from exc

    async def _post(
        self, job: Job, *, content: str, files: list[discord.File], view: Any, mention: bool
    ) -> discord.Message:
        """Post a new message in the job's channel (replying to the user's message if any)."""
        channel = self.bot.get_partial_messageable(job.channel_id)
        reference = None
        if job.reply_to_message_id:
            reference = discord.MessageReference(
                message_id=job.reply_to_message_id,
                channel_id=job.channel_id,
                fail_if_not_exists=False,
            )
        mentions = (
            discord.AllowedMentions(
                users=[discord.Object(job.requester_id)],
                roles=False,
                everyone=False,
                replied_user=True,
            )
            if mention
            else ALLOWED_NONE
        )
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        return await channel.send(
            content=content, files=files, reference=reference, allowed_mentions=mentions, **kwargs
        )

    async def _deliver(self, job: Job, result: GenerationResult) -> None:
        """Encode, store the files, and post the result in the job's message."""
        live = self.live.get(job.id) or LiveJob(job)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.ready.wait(), timeout=10)
        try:
            job = await self.storage.get_job(job.id) or job
            if job.status == "cancelled":
                return
            files = await self._prepare_files(job, result)
            await self.files.save(job.id, files.blobs, indexes=files.indexes)
            job = dataclasses.replace(
                job, seeds=tuple(result.seeds), flagged=files.flagged, withheld=files.withheld
            )
            notes = list(dict.fromkeys([*live.notes, *result.notes, *files.notes]))
            await self._close_edits(live)
            message = await self._publish(
                job, live, result.seconds, notes, files.blobs, files.spoilers
            )
            await self.storage.mark_done(
                job.id,
                list(result.seeds),
                message.id,
                flagged=files.flagged,
                withheld=files.withheld,
            )
            log.info(
                "job %s done: seeds=%s size=%sx%s engine=%.2fs message=%s",
                job.id,
                list(result.seeds),
                job.width,
                job.height,
                result.seconds,
                message.id,
            )
        except Exception:
            log.exception("job %s: delivery failed", job.id)
            await self._fail(job, "The images were made but could not be posted. Please retry.")
        finally:
            self.live.pop(job.id, None)

    async def _from_stored_image(self, job: Job) -> bool:
        """Whether ``job`` is a U whose image is stored: it is posted without the GPU."""
        if job.kind != "upscale" or job.parent_job_id is None:
            return False
        try:
            return await self.files.has(job.parent_job_id, job.parent_index or 1)
        except OSError:
            log.exception("job %s: cannot look for its stored image", job.id)
            return False

    async def _deliver_stored(self, job: Job) -> None:
        """Post a stored image of the parent set alone (U): read in place, never copied."""
        live = self.live.get(job.id) or LiveJob(job)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.ready.wait(), timeout=10)
        try:
            job = await self.storage.get_job(job.id) or job
            parent = await self.storage.get_job(job.parent_job_id or 0)
            index = job.parent_index or 1
            if job.status not in ("queued", "running") or parent is None:
                return
            blobs = await self.load_images(parent, [index])
            flagged = (1,) if index in parent.flagged else ()
            job = dataclasses.replace(job, seeds=(job.seed,), flagged=flagged)
            await self._close_edits(live)
            message = await self._publish(job, live, None, live.notes, blobs, [bool(flagged)])
            await self.storage.mark_done(job.id, [job.seed], message.id, flagged=flagged)
            log.info("job %s done: image %s of job %s posted alone", job.id, index, parent.id)
        except FileNotFoundError:
            # Purged since it was accepted: make it again from its seed like any job.
            log.info("job %s: stored image gone; generating it from its seed", job.id)
            with contextlib.suppress(QueueFull, UserLimitReached):
                await self.queue.submit(self._queued(job), enforce_limits=False)
                return
            await self._fail(job, t("queue_full", job.locale))
        except Exception:
            log.exception("job %s: posting the stored image failed", job.id)
            await self._fail(job, "The image could not be posted. Please retry.")
        finally:
            if self.queue.get(job.id) is None:
                self.live.pop(job.id, None)

    async def _prepare_files(self, job: Job, result: GenerationResult) -> _PreparedFiles:
        images = [g.image for g in result.images]
        numbers = list(range(1, len(images) + 1))
        notes: list[str] = []
        spoilers = [False] * len(images)
        withheld: list[bool] = [False] * len(images)
        safety = await self.bot.check_safety(job, images)
        if safety is not None:
            spoilers, withheld, safety_notes = safety
            notes += safety_notes
        # A withheld image is neither posted nor stored, and keeps its number: the others stay
        # next to their own seeds, files and U/V buttons.
        kept = [i for i, w in zip(numbers, withheld, strict=True) if not w]
        limit = self.bot.attachment_limit(job.guild_id)
        encoded = await self.bot.runner.encode(
            [images[i - 1] for i in kept], limit, stem=f"imagine_{job.id}", indexes=kept
        )
        notes += [e.note for e in encoded if e.note][:1]
        return _PreparedFiles(
            indexes=tuple(kept),
            blobs=[(e.filename, e.data) for e in encoded],
            spoilers=[spoilers[i - 1] for i in kept],
            flagged=tuple(i for i, s in zip(numbers, spoilers, strict=True) if s),
            withheld=tuple(i for i, w in zip(numbers, withheld, strict=True) if w),
            notes=notes,
        )

    async def _publish(
        self,
        job: Job,
        live: LiveJob,
        seconds: float | None,
        notes: Sequence[str],
        blobs: list[tuple[str, bytes]],
        spoilers: Sequence[bool],
    ) -> discord.Message:
        """Put the result into the status message, or post it anew when that is impossible.

        A new channel message (mentioning the requester, so they are notified) is used when
        the interaction token has expired (jobs that waited past ~15 minutes) or was refused,
        or when the status message was deleted.
        """
        view = render.result_view(job.id, job.count, job.withheld) if blobs else None
        if job.status_message_id is not None and not live.message_gone:
            try:
                return await self._edit_message(
                    job,
                    live,
                    channel_fallback=False,
                    content=render.result_text(facts_for(job, seconds, notes)),
                    attachments=render.image_files(blobs, spoilers),
                    view=view,
                )
            except StatusMessageGone as exc:
                log.info("job %s: posting the result as a new message (%s)", job.id, exc)
        text = render.result_text(facts_for(job, seconds, notes), mention=True)
        message = await self._post(
            job, content=text, files=render.image_files(blobs, spoilers), view=view, mention=True
        )
        if job.status_message_id and not live.message_gone:
            # The old "queued"/"step" message would be stale next to the result: remove it.
            with contextlib.suppress(discord.HTTPException):
                await (
                    self.bot.get_partial_messageable(job.channel_id)
                    .get_partial_message(job.status_message_id)
                    .delete()
                )
        return message

    async def _fail(self, job: Job, user_message: str) -> None:
        """Mark ``job`` failed and tell its requester; never raises (the feeder calls it)."""
        live = self.live.get(job.id)
        try:
            if live is not None:
                # A job can fail before its status message is attached: wait for it, so the
                # failure is shown there and not as a stray message.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(live.ready.wait(), timeout=10)
                job = live.job
            self.live.pop(job.id, None)
            await self._close_edits(live)
            try:
                await self.storage.mark_failed(job.id, user_message)
            except Exception:
                # E.g. "database or disk is full": still tell the user; after a restart the
                # row (queued/running) is simply tried again.
                log.exception("job %s: could not record its failure", job.id)
            with contextlib.suppress(Exception):
                job = await self.storage.get_job(job.id) or job
            log.info("job %s failed: %s", job.id, user_message)
            text = f"⚠️ <@{job.requester_id}> {render.escape_user_text(user_message)}"
            if job.status_message_id and not (live and live.message_gone):
                try:
                    await self._edit_message(
                        job, live, channel_fallback=False, content=text, attachments=[], view=None
                    )
                    return
                except (discord.HTTPException, StatusMessageGone):
                    pass
            await self._post(job, content=text, files=[], view=None, mention=True)
        except Exception:
            log.exception("job %s: could not tell the requester about the failure", job.id)

    # ----------------------------------------------------------------------------- files
    def _image_owner(self, job: Job) -> tuple[int, int | None]:
        """Whose files hold ``job``'s images: a U made from a stored image reads its parent's
        file in place (``(parent id, image number)``); every other job has its own set."""
        if job.kind == "upscale" and job.parent_job_id is not None:
            return job.parent_job_id, job.parent_index or 1
        return job.id, None

    async def load_images(self, job: Job, indexes: Sequence[int]) -> list[tuple[str, bytes]]:
        """The stored files of ``job``'s images ``indexes`` (1-based), as (name, bytes).

        Raises:
            FileNotFoundError: (``ImagesPurged``) the set or one of the images is gone.
        """
        owner, index = self._image_owner(job)
        if index is not None:
            try:
                return await self.files.load(job.id, indexes)  # made again from its seed
            except FileNotFoundError:
                return await self.files.load(owner, [index for _ in indexes])
        return await self.files.load(owner, indexes)

    async def has_image(self, job: Job, index: int) -> bool:
        """Whether image ``index`` of ``job`` is still stored."""
        owner, own_index = self._image_owner(job)
        if own_index is not None and await self.files.has(job.id, index):
            return True
        return await self.files.has(owner, own_index or index)

    async def purge_images(self, job: Job) -> None:
        """Remove ``job``'s own stored files (a U's parent set is left alone)."""
        try:
            await self.files.purge(job.id)
        except OSError:
            log.exception("job %s: could not remove its stored files", job.id)

    # ----------------------------------------------------------------------------- buttons
    async def cancel(self, job: Job) -> bool:
        """Remove a queued job; False when it already started or finished."""
        if job.id in self._running or not self.queue.cancel(job.id):
            return False
        live = self.live.pop(job.id, None)
        # The caller's "cancelled" edit must land last, and it has a 3 s deadline to meet.
        await self._close_edits(live, timeout=1.0)
        await self.storage.mark_cancelled(job.id)
        log.info("job %s cancelled by its requester", job.id)
        return True
