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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.i18n import t
from bot.queue import FairQueue, QueuedJob, QueueFull, UserLimitReached
from bot.storage import Job, NewJob, Storage
from engine import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    StepProgress,
)

if TYPE_CHECKING:
    from bot.client import ImagineBot

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 15 * 60
TOKEN_MARGIN = 30  # stop using a token this long before Discord kills it
EDIT_INTERVAL = 1.0  # at most one progress/position edit per message per second
DEFAULT_SECONDS_PER_IMAGE = 0.5
DEFAULT_STRENGTH = 0.6
ALLOWED_NONE = discord.AllowedMentions.none()


class JobRejected(Exception):
    """The job cannot be accepted; ``user_message`` says why."""

    def __init__(self, user_message: str):
        super().__init__(user_message)
        self.user_message = user_message


class StatusMessageGone(Exception):
    """The job's status message can no longer be edited (token expired or message deleted)."""


@dataclass
class LiveJob:
    """In-memory companion of a running or queued job: its message and edit throttling."""

    job_id: int
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    notes: tuple[str, ...] = ()
    last_edit: float = 0.0
    edit_task: asyncio.Task | None = None
    status_gone: bool = False  # the status message was deleted: stop editing it


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

    def __init__(self, bot: ImagineBot, storage: Storage, queue: FairQueue):
        self.bot = bot
        self.storage = storage
        self.queue = queue
        self.live: dict[int, LiveJob] = {}
        self._feeder: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._seconds_per_image = DEFAULT_SECONDS_PER_IMAGE
        self._stopping = False
        self._position_task: asyncio.Task | None = None
        self._running: set[int] = set()

    # ----------------------------------------------------------------------------- accepting
    async def accept(self, new: NewJob, *, per_user_limit: int | None = None) -> Job:
        """Store a new job and put it in the queue.

        Raises:
            JobRejected: the queue or the user's share of it is full; nothing is stored.
        """
        self._check_capacity(new.requester_id, per_user_limit, new.locale)
        job = await self.storage.create_job(new)
        self.live[job.id] = LiveJob(job.id)
        try:
            await self.queue.submit(self._queued(job), per_user_limit=per_user_limit)
        except (QueueFull, UserLimitReached) as exc:
            await self.storage.mark_cancelled(job.id)
            self.live.pop(job.id, None)
            raise JobRejected(exc.user_message) from exc
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

    def _check_capacity(self, user_id: int, per_user_limit: int | None, locale: str | None) -> None:
        # Fail before storing anything: the queue re-checks atomically on submit.
        limit = per_user_limit or self.queue.per_user_limit
        if len(self.queue) >= self.queue.max_size:
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
            live.ready.set()
        self._schedule_positions()

    def set_notes(self, job_id: int, notes: Sequence[str]) -> None:
        live = self.live.get(job_id)
        if live is not None:
            live.notes = tuple(notes)

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Re-queue what a previous run accepted and did not finish, then start feeding."""
        for job in await self.storage.unfinished_jobs():
            log.info("job %s recovered after restart (was %s)", job.id, job.status)
            live = LiveJob(job.id)
            live.ready.set()
            self.live[job.id] = live
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
            # The feeder only stops between batches, so the running batch completes.
            self._feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feeder
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ----------------------------------------------------------------------------- GPU feeder
    async def _feed(self) -> None:
        max_images = self.bot.settings.engine.max_batch_images
        while True:
            batch = await self.queue.next_batch(max_images)
            # Shielded: a shutdown waits for the running batch instead of abandoning it.
            await asyncio.shield(self._run_batch(batch))

    async def _run_batch(self, batch: Sequence[QueuedJob]) -> None:
        jobs: list[Job] = []
        requests: list[GenerationRequest] = []
        for queued in batch:
            job = await self.storage.get_job(queued.job_id)
            if job is None or job.status not in ("queued", "running"):
                continue
            try:
                request = request_for(job, await self._init_image(job))
            except JobRejected as exc:
                await self._fail(job, exc.user_message)
                continue
            await self.storage.mark_running(job.id)
            self._running.add(job.id)
            jobs.append(job)
            requests.append(request)
        if not jobs:
            return
        self._schedule_positions()
        progress = self._progress_for(jobs)
        started = time.perf_counter()
        try:
            results = await self.bot.runner.generate_batch(requests, progress)
        except EngineError as exc:
            if len(jobs) > 1:
                # One bad request must not fail its batch-mates: run each alone.
                log.warning("batch of %d failed (%s); retrying jobs one by one", len(jobs), exc)
                for job, request in zip(jobs, requests, strict=True):
                    await self._run_single(job, request, progress)
                return
            await self._fail(jobs[0], exc.user_message)
            return
        except Exception:
            log.exception("engine crashed on jobs %s", [j.id for j in jobs])
            for job in jobs:
                await self._fail(job, "Something went wrong while generating. Please try again.")
            return
        finally:
            for job in jobs:
                self._running.discard(job.id)
        elapsed = time.perf_counter() - started
        images = sum(r.count for r in requests)
        self._seconds_per_image = 0.7 * self._seconds_per_image + 0.3 * elapsed / max(images, 1)
        for job, result in zip(jobs, results, strict=True):
            self._spawn(self._deliver(job, result))

    async def _run_single(self, job: Job, request: GenerationRequest, progress: Any) -> None:
        try:
            [result] = await self.bot.runner.generate_batch([request], progress)
        except EngineError as exc:
            await self._fail(job, exc.user_message)
            return
        except Exception:
            log.exception("engine crashed on job %s", job.id)
            await self._fail(job, "Something went wrong while generating. Please try again.")
            return
        self._spawn(self._deliver(job, result))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _init_image(self, job: Job) -> bytes | None:
        if job.kind != "variation" or job.parent_job_id is None:
            return None
        path = self.image_path(job.parent_job_id, job.parent_index or 1)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise JobRejected(
                "The source image of this variation is no longer stored; re-roll it instead."
            ) from None

    # ----------------------------------------------------------------------------- progress
    def _progress_for(self, jobs: Sequence[Job]):
        def on_progress(step: StepProgress) -> None:
            # Runs on the event loop (the runner forwards it); never awaits, never blocks.
            for job in jobs:
                self._maybe_edit(
                    job,
                    content=render.progress_text(step.step, step.total, job.locale),
                    preview=step.preview if job is jobs[0] else None,
                )

        return on_progress

    def _schedule_positions(self) -> None:
        if self._position_task is None or self._position_task.done():
            self._position_task = asyncio.get_running_loop().create_task(self._show_positions())

    async def _show_positions(self) -> None:
        await asyncio.sleep(0.2)  # let a burst of queue changes settle into one round of edits
        for job_id in self.queue.order():
            live = self.live.get(job_id)
            job = await self.storage.get_job(job_id)
            if live is None or job is None or not live.ready.is_set():
                continue
            position = self.queue.position(job_id)
            if position is None:
                continue
            eta = self.queue.estimated_start(job_id, self._seconds_per_image)
            self._maybe_edit(
                job,
                content=render.queued_text(position, eta, job.locale),
                view=render.cancel_view(job_id),
            )

    def _maybe_edit(
        self,
        job: Job,
        *,
        content: str,
        view: discord.ui.View | None = None,
        preview: Any = None,
    ) -> None:
        live = self.live.get(job.id)
        if live is None or live.status_gone or not live.ready.is_set():
            return
        now = time.monotonic()
        if now - live.last_edit < EDIT_INTERVAL or (live.edit_task and not live.edit_task.done()):
            return
        live.last_edit = now
        live.edit_task = asyncio.create_task(self._edit_status(job, live, content, view, preview))

    async def _edit_status(
        self, job: Job, live: LiveJob, content: str, view: discord.ui.View | None, preview: Any
    ) -> None:
        job = await self.storage.get_job(job.id) or job
        if job.status_message_id is None or job.status in ("done", "failed", "cancelled"):
            return
        attachments: list[discord.File] = []
        if preview is not None:
            data = await asyncio.to_thread(_png_bytes, preview)
            attachments = [discord.File(io.BytesIO(data), filename="preview.png")]
        try:
            await self._edit_message(
                job, content=content, attachments=attachments, view=view or discord.ui.View()
            )
        except (discord.NotFound, StatusMessageGone):
            live.status_gone = True  # deleted or expired: keep generating, post a new message
        except discord.HTTPException as exc:
            log.info("job %s: progress edit failed: %s", job.id, exc)

    # ----------------------------------------------------------------------------- delivery
    async def _edit_message(self, job: Job, **fields: Any) -> discord.Message | None:
        """Edit the job's status message through the interaction token or the channel."""
        assert job.status_message_id is not None
        if job.interaction_token and job.application_id:
            if not job.token_usable(margin_s=TOKEN_MARGIN):
                raise StatusMessageGone(f"job {job.id}: interaction token expired")
            hook = discord.Webhook.partial(
                job.application_id, job.interaction_token, client=self.bot
            )
            return await hook.edit_message(
                job.status_message_id, allowed_mentions=ALLOWED_NONE, **fields
            )
        channel = self.bot.get_partial_messageable(job.channel_id)
        message = channel.get_partial_message(job.status_message_id)
        return await message.edit(allowed_mentions=ALLOWED_NONE, **fields)

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
        return await channel.send(
            content=content, files=files, view=view, reference=reference, allowed_mentions=mentions
        )

    async def _deliver(self, job: Job, result: GenerationResult) -> None:
        """Encode, store the files, and post the result in the job's message."""
        live = self.live.get(job.id) or LiveJob(job.id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.ready.wait(), timeout=10)
        job = await self.storage.get_job(job.id) or job
        if job.status == "cancelled":
            return
        try:
            blobs, spoilers, notes = await self._prepare_files(job, result)
            await self.store_images(job.id, blobs)
            job = dataclasses.replace(job, seeds=tuple(result.seeds))
            notes = list(dict.fromkeys([*live.notes, *result.notes, *notes]))
            message = await self._publish(job, result.seconds, notes, blobs, spoilers)
            await self.storage.mark_done(job.id, list(result.seeds), message.id)
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

    async def _prepare_files(
        self, job: Job, result: GenerationResult
    ) -> tuple[list[tuple[str, bytes]], list[bool], list[str]]:
        images = [g.image for g in result.images]
        notes: list[str] = []
        spoilers = [False] * len(images)
        safety = await self.bot.check_safety(job, images)
        if safety is not None:
            spoilers, withheld, safety_notes = safety
            notes += safety_notes
            images = [img for img, w in zip(images, withheld, strict=True) if not w]
            spoilers = [s for s, w in zip(spoilers, withheld, strict=True) if not w]
        limit = self.bot.attachment_limit(job.guild_id)
        encoded = await self.bot.runner.encode(images, limit, stem=f"imagine_{job.id}")
        notes += [e.note for e in encoded if e.note][:1]
        return [(e.filename, e.data) for e in encoded], spoilers, notes

    async def _publish(
        self,
        job: Job,
        seconds: float | None,
        notes: Sequence[str],
        blobs: list[tuple[str, bytes]],
        spoilers: Sequence[bool],
    ) -> discord.Message:
        view = render.result_view(job.id, job.count) if blobs else None
        live = self.live.get(job.id)
        can_edit = job.status_message_id is not None and not (live and live.status_gone)
        if can_edit and (job.token_usable(margin_s=TOKEN_MARGIN) or not job.interaction_token):
            try:
                text = render.result_text(facts_for(job, seconds, notes))
                message = await self._edit_message(
                    job, content=text, attachments=render.image_files(blobs, spoilers), view=view
                )
                if message is not None:
                    return message
            except (discord.NotFound, StatusMessageGone):
                pass  # the status message is gone: post a new one below
        # The token is dead (15 min) or the message vanished: a plain channel message instead.
        text = render.result_text(facts_for(job, seconds, notes), mention=True)
        message = await self._post(
            job, content=text, files=render.image_files(blobs, spoilers), view=view, mention=True
        )
        if job.status_message_id and not (live and live.status_gone):
            with contextlib.suppress(discord.HTTPException):
                await (
                    self.bot.get_partial_messageable(job.channel_id)
                    .get_partial_message(job.status_message_id)
                    .delete()
                )
        return message

    async def _fail(self, job: Job, user_message: str) -> None:
        await self.storage.mark_failed(job.id, user_message)
        self.live.pop(job.id, None)
        log.info("job %s failed: %s", job.id, user_message)
        text = f"⚠️ <@{job.requester_id}> {user_message}"
        job = await self.storage.get_job(job.id) or job
        try:
            if job.status_message_id:
                await self._edit_message(job, content=text, attachments=[], view=None)
                return
        except (discord.HTTPException, StatusMessageGone):
            pass
        with contextlib.suppress(discord.HTTPException):
            await self._post(job, content=text, files=[], view=None, mention=True)

    # ----------------------------------------------------------------------------- files
    def image_path(self, job_id: int, index: int) -> Path:
        return self.bot.settings.images_dir / str(job_id) / f"{index}"

    async def store_images(self, job_id: int, blobs: Sequence[tuple[str, bytes]]) -> None:
        """Keep a job's encoded files so U/V buttons and shares work later, even after restarts."""

        def save() -> None:
            folder = self.bot.settings.images_dir / str(job_id)
            folder.mkdir(parents=True, exist_ok=True)
            for i, (name, data) in enumerate(blobs, start=1):
                (folder / f"{i}").write_bytes(data)
                (folder / f"{i}.name").write_text(name)

        await asyncio.to_thread(save)

    async def load_images(self, job_id: int, indexes: Sequence[int]) -> list[tuple[str, bytes]]:
        def load() -> list[tuple[str, bytes]]:
            out = []
            for i in indexes:
                path = self.image_path(job_id, i)
                name_path = path.with_name(f"{i}.name")
                name = name_path.read_text() if name_path.exists() else f"imagine_{job_id}_{i}.png"
                out.append((name, path.read_bytes()))
            return out

        return await asyncio.to_thread(load)

    # ----------------------------------------------------------------------------- buttons
    async def on_button(
        self, interaction: discord.Interaction, action: str, job_id: int, index: int | None
    ) -> None:
        from bot.actions import handle_button

        await handle_button(self, interaction, action, job_id, index)

    async def cancel(self, job: Job) -> bool:
        """Remove a queued job; False when it already started or finished."""
        if job.id in self._running or not self.queue.cancel(job.id):
            return False
        await self.storage.mark_cancelled(job.id)
        self.live.pop(job.id, None)
        return True


def _png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
