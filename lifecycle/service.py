"""The life of a job: accepted -> stored -> queued -> released -> generated -> stored -> posted.

``JobService`` admits jobs into the fair queue, recovers unfinished ones after a restart,
releases tickets to a GPU backend while it has room, and turns the backend's events into
stored outcomes. Every state change is written to SQLite when it happens, so a restart (even
after ``kill -9``) picks up whatever was accepted and not finished; SQLite's status row decides
what an event may still change, so an outcome that arrives twice is posted once.

What the user sees goes through a ``JobSink`` (the Discord side); this module knows no Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.requests import GenerationRequest, Operation
from engine.tickets import Event, Failed, Finished, Progress, SafetyMode, Started, Ticket
from lifecycle.backend import Backend
from lifecycle.image_files import SOURCE_INDEX, ImageFiles
from lifecycle.metrics import JobMetrics
from lifecycle.queue import JobQueue, QueuedJob, QueueFull, UserLimitReached
from lifecycle.storage import Job, NewJob, Storage

log = logging.getLogger(__name__)

DEFAULT_STRENGTH = 0.6
MAX_PENDING_DELIVERIES = 16  # results being stored/posted before the GPU waits for them
POSITION_SETTLE = 0.2  # let a burst of queue changes settle into one round of position edits
AVAILABILITY_POLL = 2.0  # how often a waiting queue re-checks that a GPU is there
READY_TIMEOUT = 10.0  # how long an outcome waits for its status message to be attached
GENERIC_FAILURE = "Something went wrong while generating. Please try again."
NOT_POSTED = "The images were made but could not be posted. Please retry."
STORED_NOT_POSTED = "The image could not be posted. Please retry."
RESTART_QUEUE_FULL = "The bot restarted with a full queue; please try again."

Text = Callable[..., str]  # (message key, locale, **placeholders) -> the user's words


class JobRejected(Exception):
    """The job cannot be accepted; ``user_message`` says why."""

    def __init__(self, user_message: str):
        super().__init__(user_message)
        self.user_message = user_message


class JobSink(Protocol):
    """Where the user sees a job: its status message, its result, its failure."""

    def show_queued(self, job: Job, position: int, eta: float, *, waiting: bool) -> None:
        """Show the job's place in the queue (``waiting``: no GPU is there). Never awaits."""
        ...

    def show_progress(self, job: Job, step: int, total: int, preview: bytes | None) -> None:
        """Show a denoising step (and a small PNG preview). Never awaits."""
        ...

    async def close(self, job_id: int, timeout: float | None = None) -> None:
        """Stop the job's status edits; an edit in flight lands before this returns."""
        ...

    def forget(self, job_id: int) -> object:
        """Drop the job's status-message state (it is not shown by this sink any more)."""
        ...

    async def publish(
        self,
        job: Job,
        seconds: float | None,
        notes: Sequence[str],
        files: Sequence[tuple[str, bytes]],
        spoilers: Sequence[bool],
        source: Job | None = None,
    ) -> int:
        """Show the result (in the status message, or as a new message); its message id.

        ``source``: the job it was made from (a re-roll's, a variation's...), to link to.
        A 'describe' job has no files: its result is ``job.captions``."""
        ...

    async def tell_failure(self, job: Job, user_message: str) -> None:
        """Tell the requester the job failed. Never raises."""
        ...


_OPERATIONS: dict[str, Operation] = {"upscale": "upscale", "zoom": "zoom", "describe": "describe"}


def request_for(job: Job, init_image: bytes | None = None) -> GenerationRequest:
    """Rebuild the engine request from a stored job (same after a restart).

    ``init_image``: the picture a derived job starts from (its parent's image file)."""
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
        operation=_OPERATIONS.get(job.kind, "generate"),
        zoom=job.zoom or 1.0,
        tile=job.tile,
        style=job.style,
    )


@dataclass
class _Batch:
    """A batch that started on a GPU: its size, and whether its GPU time was counted."""

    images: int
    timed: bool = False


@dataclass
class _Live:
    """In-memory companion of an unfinished job: whether its status message is attached yet,
    and the notes to show with its result."""

    job: Job
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    notes: tuple[str, ...] = ()


class JobService:
    """Admits jobs, releases them to a GPU backend in fair order, and records their outcomes.

    Args:
        storage: the jobs' rows (the source of truth).
        queue: the fair queue of jobs not yet released.
        files: the stored result images.
        backend: where released tickets are generated.
        sink: where the user sees their job.
        text: the user's words for a message key (``bot.i18n.t``).
        file_limit: most bytes per result file in a guild (its upload limit).
        per_user_limit: default most queued jobs per user.
        max_jobs: most queued jobs.
        metrics: what operators see on /metrics (a fresh set when not given).
    """

    def __init__(
        self,
        storage: Storage,
        queue: JobQueue,
        files: ImageFiles,
        backend: Backend,
        sink: JobSink,
        *,
        text: Text,
        file_limit: Callable[[int | None], int],
        per_user_limit: int,
        max_jobs: int,
        metrics: JobMetrics | None = None,
    ):
        self.storage = storage
        self.queue = queue
        self.files = files
        self.backend = backend
        self.sink = sink
        self._text = text
        self._file_limit = file_limit
        self._per_user_limit = per_user_limit
        self._max_jobs = max_jobs
        self.metrics = metrics or JobMetrics()
        self.live: dict[int, _Live] = {}
        self.batches: list[tuple[int, ...]] = []  # job ids per released batch (recent; tests)
        self._released: dict[int, None] = {}  # handed to the backend, no outcome yet (in order)
        self._running: set[int] = set()  # started on a GPU, no outcome yet
        self._batch_of: dict[int, _Batch] = {}  # running job -> its GPU batch
        self._delivering: set[int] = set()  # an outcome is being stored/posted
        self._marking: dict[int, asyncio.Task] = {}  # "running" writes in flight
        self._tasks: set[asyncio.Task] = set()
        self._dispatcher: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._position_task: asyncio.Task | None = None
        self._stopping = False
        self._shown_available: bool | None = None

    @property
    def stuck(self) -> bool:
        """The local GPU watchdog fired: no more work is released."""
        return self.backend.stuck

    @property
    def seconds_per_image(self) -> float:
        """Smoothed GPU seconds per image (ETA basis)."""
        return self.backend.seconds_per_image

    # ----------------------------------------------------------------------------- accepting
    async def accept(
        self, new: NewJob, *, per_user_limit: int | None = None, source: bytes | None = None
    ) -> Job:
        """Store a new job and put it in the queue.

        ``source``: the picture an image prompt starts from (``new.uploaded``), stored with
        the job before it is queued, so a restart finds it.

        Raises:
            JobRejected: the queue or the user's share of it is full; nothing is queued.
        """
        if new.group_id is None:  # the rest of a set shares the place its first job took
            self.check_capacity(new.kind, new.requester_id, per_user_limit, new.locale)
        job = await self.storage.create_job(new)
        if source is not None:
            try:
                await self.files.save_source(job.id, source)
            except Exception as exc:
                log.exception("job %s: storing its uploaded picture failed", job.id)
                await self.storage.mark_cancelled(job.id)
                raise JobRejected(GENERIC_FAILURE) from exc
        self.live[job.id] = _Live(job)
        self.metrics.accepted(job.kind)
        if await self._from_stored_image(job):
            self._spawn(self._deliver_stored(job))
            return job
        try:
            await self.queue.submit(self._queued(job), per_user_limit=per_user_limit)
        except (QueueFull, UserLimitReached) as exc:
            # Lost a race with another submit between the check and here: refuse this one
            # (and keep no uploaded picture for it).
            await self.storage.mark_cancelled(job.id)
            self.live.pop(job.id, None)
            if source is not None:
                await self.purge_images(job)
            limit = per_user_limit or self._per_user_limit
            key = "queue_full" if isinstance(exc, QueueFull) else "user_limit"
            raise JobRejected(self._text(key, new.locale, limit=limit)) from exc
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

    def check_capacity(
        self, kind: str, user_id: int, per_user_limit: int | None, locale: str | None
    ) -> None:
        """Raise JobRejected when a new job of ``user_id`` would not fit in the queue.

        Callers check before any slow work (translation); the queue re-checks atomically on
        submit. Posting a stored image alone takes no GPU time and is never refused.
        """
        if kind == "single":
            return
        limit = per_user_limit or self._per_user_limit
        if len(self.queue) >= self._max_jobs:
            raise JobRejected(self._text("queue_full", locale))
        if self.queue.queued_for(user_id) >= limit:
            raise JobRejected(self._text("user_limit", locale, limit=limit))

    def _queued(self, job: Job) -> QueuedJob:
        # The source picture is read when the job is released; its key only needs to know
        # that there is one.
        request = request_for(job, b"source" if job.derived or job.uploaded else None)
        return QueuedJob(
            job_id=job.id,
            user_id=job.requester_id,
            images=request.work,
            batch_key=request.batch_key,
            enqueued_at=time.time(),
            group=job.group_id,
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
        """Start the backend, take back what a previous run accepted and did not finish, and
        start releasing work."""
        unfinished = await self.storage.unfinished_jobs()
        for job in unfinished:
            # Known before the backend starts: an outcome it delivers at once finds its job.
            live = _Live(job)
            live.ready.set()
            self.live[job.id] = live
        await self.backend.start(self._on_event)
        for job in unfinished:
            if job.id not in self.live or job.id in self._delivering:
                continue  # its outcome came in while the backend started
            log.info("job %s recovered after restart (was %s)", job.id, job.status)
            if job.id in self.backend.in_flight():
                self._released[job.id] = None  # its ticket is still with the workers
                continue
            if await self._from_stored_image(job):
                self._spawn(self._deliver_stored(job))
                continue
            try:
                await self.queue.submit(self._queued(job), enforce_limits=False)
            except QueueFull:
                await self._fail(job, RESTART_QUEUE_FULL, "restart")
        self.queue.subscribe(self._schedule_positions)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="imagine-dispatcher")
        self._watcher = asyncio.create_task(self._watch_availability(), name="imagine-gpu-watch")

    async def stop(self) -> None:
        """Deliver what is running; queued jobs stay stored for the next start."""
        self._stopping = True
        for task in (self._dispatcher, self._watcher):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The running local batch ends and its events arrive before the backend closes.
        await self.backend.close(wait=not self.stuck)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._position_task is not None:
            self._position_task.cancel()
        for job_id in list(self.live):
            await self.sink.close(job_id)

    # ----------------------------------------------------------------------------- releasing
    async def _dispatch(self) -> None:
        while True:
            try:
                await self._release_next()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The last net: no error (storage, files) may stop the dispatcher and leave
                # later jobs queued forever.
                log.exception("dispatching a batch failed")
                await asyncio.sleep(0.1)
            if self.stuck:
                return

    async def _release_next(self) -> None:
        # Back-pressure: when storing and posting fall behind the GPU (too few CPU cores),
        # wait for deliveries to drain instead of piling up finished images in memory.
        while len(self._tasks) >= MAX_PENDING_DELIVERIES:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
        room = await self.backend.capacity()
        if self.stuck:
            return
        batch = await self.queue.next_batch(room)
        tickets = [t for t in [await self._ticket(q) for q in batch] if t is not None]
        if not tickets:
            return
        ids = tuple(t.job_id for t in tickets)
        self.batches = [*self.batches[-199:], ids]
        self._released.update(dict.fromkeys(ids))
        await self.backend.release(tickets)
        self._update_gauges()
        self._schedule_positions()

    async def _ticket(self, queued: QueuedJob) -> Ticket | None:
        """The ticket of a job taken from the queue; None (and the job failed) when it cannot
        be made, so that its batch-mates go on."""
        # The in-memory copy saves a database round trip per job while the GPU waits: a job
        # in a batch was queued a moment ago, and cancelling removes it from both.
        live = self.live.get(queued.job_id)
        job = live.job if live is not None else None
        try:
            job = job or await self.storage.get_job(queued.job_id)
            if job is None or job.status not in ("queued", "running"):
                return None
            return Ticket(
                job_id=job.id,
                user_id=job.requester_id,
                request=request_for(job, await self._init_image(job)),
                safety=await self._safety_mode(job),
                file_limit=self._file_limit(job.guild_id),
                check_source=job.uploaded,
            )
        except JobRejected as exc:
            assert job is not None
            await self._fail(job, exc.user_message, "purged")
        except Exception:
            log.exception("job %s could not be prepared for the GPU", queued.job_id)
            if job is not None:
                await self._fail(job, GENERIC_FAILURE, "prepare")
        return None

    async def _safety_mode(self, job: Job) -> SafetyMode:
        """What the image classifier's verdicts do to this job's images.

        Pictures that trace back to an upload never combine with adult content: whatever the
        channel or the server's mode, a flagged one is withheld (ISSUE-NOTES, issue 13).
        """
        if job.from_upload:
            return "withhold"
        if job.nsfw_channel:
            return "off"
        if job.guild_id is None:
            return "spoiler"  # DMs are ordinary channels: the default mode applies there
        return (await self.storage.guild_settings(job.guild_id)).safety_mode

    async def _init_image(self, job: Job) -> bytes | None:
        """The picture a job starts from: its parent's image, or its own upload."""
        if not job.derived and not job.uploaded:
            return None
        try:
            if job.uploaded:
                [(_, data)] = await self.files.load(job.id, [SOURCE_INDEX])
                return data
            parent = await self.storage.get_job(job.parent_job_id or 0)
            if parent is None:
                raise FileNotFoundError(job.parent_job_id)
            [(_, data)] = await self.load_images(parent, [job.parent_index or 1])
        except FileNotFoundError:
            raise JobRejected(self._text("images_purged", job.locale)) from None
        return data

    # ----------------------------------------------------------------------------- events
    async def _on_event(self, event: Event) -> None:
        """Take one backend event; returns once its outcome is stored (the backend may then
        forget it). Never raises: a bad event costs only its own job."""
        try:
            if isinstance(event, Started):
                self._started(event)
            elif isinstance(event, Progress):
                self._progress(event)
            elif isinstance(event, Finished):
                await self._finished(event)
            elif isinstance(event, Failed):
                await self._failed(event)
        except Exception:
            log.exception("event %r could not be handled", event)

    def _started(self, event: Started) -> None:
        batch = _Batch(sum(self._count(j) for j in event.job_ids))
        for job_id in event.job_ids:
            self._batch_of[job_id] = batch
            self._running.add(job_id)
            if job_id in self._marking or job_id in self._delivering:
                continue
            # Not awaited: the "running" write (an fsync) overlaps with the GPU's work.
            task = asyncio.get_running_loop().create_task(self._mark_running(job_id))
            self._marking[job_id] = task
            task.add_done_callback(lambda _t, j=job_id: self._marking.pop(j, None))
        log.debug("batch %s started on %s", event.job_ids, event.worker)
        self._update_gauges()

    def _count(self, job_id: int) -> int:
        live = self.live.get(job_id)
        return live.job.count if live is not None else 0

    def _outcome(self, job_id: int, gpu_seconds: float | None = None) -> None:
        """A job's outcome arrived: it no longer holds GPU room; time its batch once."""
        self._released.pop(job_id, None)
        self._running.discard(job_id)
        batch = self._batch_of.pop(job_id, None)
        # Every job of a batch carries the batch's GPU time: count it once.
        if batch is not None and gpu_seconds is not None and not batch.timed and batch.images:
            batch.timed = True
            self.metrics.batch(batch.images, gpu_seconds)
        self._update_gauges()

    def _update_gauges(self) -> None:
        running = len(self._running)
        self.metrics.queue(len(self.queue), len(self._released) - running, running)
        self.metrics.workers(self.backend.gpus if self.backend.available else 0)

    async def _mark_running(self, job_id: int) -> None:
        try:
            await self.storage.mark_running(job_id)
        except Exception:
            log.exception("could not mark job %s running", job_id)

    def _progress(self, event: Progress) -> None:
        live = self.live.get(event.job_id)
        if live is None or not live.ready.is_set() or event.job_id in self._delivering:
            return
        self.sink.show_progress(live.job, event.step, event.total, event.preview)

    async def _current(self, job_id: int) -> Job | None:
        """The job when an outcome may still change it (queued or running), else None."""
        marking = self._marking.get(job_id)
        if marking is not None:
            await asyncio.gather(marking, return_exceptions=True)
        job = await self.storage.get_job(job_id)
        if job is None or job.status not in ("queued", "running"):
            return None
        return job

    async def _finished(self, event: Finished) -> None:
        self._outcome(event.job_id, event.seconds)
        if event.job_id in self._delivering:
            log.info("job %s: outcome arrived twice; posting it once", event.job_id)
            return
        job = await self._current(event.job_id)
        if job is None:
            log.info("job %s: outcome for a job that is no longer running; dropped", event.job_id)
            return
        self._delivering.add(job.id)
        try:
            await self.files.save(
                job.id,
                [(f.filename, f.data) for f in event.files],
                indexes=[f.index for f in event.files],
            )
        except Exception:
            self._delivering.discard(job.id)
            log.exception("job %s: storing its images failed", job.id)
            await self._fail(job, NOT_POSTED, "store")
            return
        self._spawn(self._deliver(job, event))

    async def _failed(self, event: Failed) -> None:
        self._outcome(event.job_id)
        if event.job_id in self._delivering:
            return
        job = await self._current(event.job_id)
        if job is None:
            return
        message = event.user_message
        if event.reason == "timeout":
            message = self._text("generation_timed_out", job.locale)
        elif event.reason == "refused":
            # The safety filter refused the uploaded picture: it is not kept.
            message = self._text("upload_refused", job.locale)
            await self.purge_images(job)
        await self._fail(job, message, event.reason)

    # ----------------------------------------------------------------------------- delivery
    async def _ready(self, job: Job) -> tuple[_Live, Job]:
        """Wait (briefly) for the job's status message; the freshest copy of the job."""
        live = self.live.get(job.id) or _Live(job)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.ready.wait(), timeout=READY_TIMEOUT)
        return live, await self.storage.get_job(job.id) or job

    async def _deliver(self, job: Job, result: Finished) -> None:
        """Post a stored result in the job's message and record it as done."""
        try:
            live, job = await self._ready(job)
            if job.status == "cancelled":
                return
            source = await self._source(job)
            flagged = self._flagged(job, result, source)
            job = dataclasses.replace(
                job,
                seeds=result.seeds,
                flagged=flagged,
                withheld=result.withheld,
                captions=result.captions,
            )
            notes = list(dict.fromkeys([*live.notes, *result.notes]))
            await self.sink.close(job.id)
            message_id = await self.sink.publish(
                job,
                result.seconds,
                notes,
                [(f.filename, f.data) for f in result.files],
                [f.index in flagged for f in result.files],
                source=source,
            )
            await self.storage.mark_done(
                job.id,
                list(result.seeds),
                message_id,
                flagged=flagged,
                withheld=result.withheld,
                captions=result.captions,
            )
            self.metrics.posted(job.kind, time.time() - job.created_at)
            log.info(
                "job %s done: seeds=%s size=%sx%s engine=%.2fs worker=%s message=%s",
                job.id,
                list(result.seeds),
                job.width,
                job.height,
                result.seconds,
                result.worker,
                message_id,
            )
        except Exception:
            log.exception("job %s: delivery failed", job.id)
            await self._fail(job, NOT_POSTED, "post")
        finally:
            self._delivering.discard(job.id)
            self.live.pop(job.id, None)

    async def _source(self, job: Job) -> Job | None:
        """The job ``job`` was made from (None: a first /imagine, or it is gone)."""
        if job.parent_job_id is None:
            return None
        return await self.storage.get_job(job.parent_job_id)

    @staticmethod
    def _flagged(job: Job, result: Finished, source: Job | None) -> tuple[int, ...]:
        """The result's images to show as spoilers: those the safety filter flagged, and all
        of them when they were made from a picture it had flagged (a variation, upscale or
        zoom of a hidden picture stays hidden). ``source``: the job it was made from."""
        if job.derived and source is not None and job.parent_index in source.flagged:
            return tuple(f.index for f in result.files)
        return tuple(result.flagged)

    async def _from_stored_image(self, job: Job) -> bool:
        """Whether ``job`` posts a stored image alone: it needs no GPU."""
        if job.kind != "single" or job.parent_job_id is None:
            return False
        try:
            return await self.files.has(job.parent_job_id, job.parent_index or 1)
        except OSError:
            log.exception("job %s: cannot look for its stored image", job.id)
            return False

    async def _deliver_stored(self, job: Job) -> None:
        """Post a stored image of the parent set alone: read in place, never copied."""
        try:
            live, job = await self._ready(job)
            parent = await self.storage.get_job(job.parent_job_id or 0)
            index = job.parent_index or 1
            if job.status not in ("queued", "running") or parent is None:
                return
            blobs = await self.load_images(parent, [index])
            flagged = (1,) if index in parent.flagged else ()
            job = dataclasses.replace(job, seeds=(job.seed,), flagged=flagged)
            await self.sink.close(job.id)
            message_id = await self.sink.publish(
                job, None, live.notes, blobs, [bool(flagged)], source=parent
            )
            await self.storage.mark_done(job.id, [job.seed], message_id, flagged=flagged)
            self.metrics.posted(job.kind, time.time() - job.created_at)
            log.info("job %s done: image %s of job %s posted alone", job.id, index, parent.id)
        except FileNotFoundError:
            # Purged since it was accepted: make it again from its seed like any job.
            log.info("job %s: stored image gone; generating it from its seed", job.id)
            with contextlib.suppress(QueueFull, UserLimitReached):
                await self.queue.submit(self._queued(job), enforce_limits=False)
                return
            await self._fail(job, self._text("queue_full", job.locale), "queue_full")
        except Exception:
            log.exception("job %s: posting the stored image failed", job.id)
            await self._fail(job, STORED_NOT_POSTED, "post")
        finally:
            if self.queue.get(job.id) is None:
                self.live.pop(job.id, None)

    async def _fail(self, job: Job, user_message: str, reason: str) -> None:
        """Mark ``job`` failed and tell its requester; never raises.

        ``reason``: a short code for the metrics (engine, timeout, post, ...).
        """
        self.metrics.failed(reason)
        live = self.live.get(job.id)
        try:
            if live is not None:
                # A job can fail before its status message is attached: wait for it, so the
                # failure is shown there and not as a stray message.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(live.ready.wait(), timeout=READY_TIMEOUT)
                job = live.job
            self.live.pop(job.id, None)
            await self.sink.close(job.id)
            try:
                await self.storage.mark_failed(job.id, user_message)
            except Exception:
                # E.g. "database or disk is full": still tell the user; after a restart the
                # row (queued/running) is simply tried again.
                log.exception("job %s: could not record its failure", job.id)
            with contextlib.suppress(Exception):
                job = await self.storage.get_job(job.id) or job
            log.info("job %s failed: %s", job.id, user_message)
            await self.sink.tell_failure(job, user_message)
        except Exception:
            log.exception("job %s: could not tell the requester about the failure", job.id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------------------- positions
    def _schedule_positions(self) -> None:
        if self._stopping:
            return
        if self._position_task is None or self._position_task.done():
            loop = asyncio.get_running_loop()
            self._position_task = loop.create_task(self._show_positions())

    async def _show_positions(self) -> None:
        await asyncio.sleep(POSITION_SETTLE)
        waiting = not self.backend.available
        self._shown_available = not waiting
        per_image = self.backend.seconds_per_image / max(self.backend.gpus, 1)
        ahead = 0
        busy_for = self.backend.busy_for()
        # Released tickets that wait for a worker's GPU come first (they can still be
        # cancelled); then the queue. One pass: position and ETA for all jobs in O(n).
        waiting_released = [j for j in self._released if j not in self._running]
        order = [*waiting_released, *self.queue.order()]
        for position, job_id in enumerate(order, start=1):
            live = self.live.get(job_id)
            if job_id in self._released:
                eta = 0.0  # part of the backend's busy time already
            else:
                queued = self.queue.get(job_id)
                eta = busy_for + ahead * per_image
                ahead += queued.images if queued is not None else 0
            if live is None or not live.ready.is_set() or job_id in self._delivering:
                continue
            self.sink.show_queued(live.job, position, eta, waiting=waiting)

    async def _watch_availability(self) -> None:
        """Re-show positions when a GPU comes or goes (e.g. the last worker stopped)."""
        while True:
            await asyncio.sleep(AVAILABILITY_POLL)
            self._update_gauges()  # workers come and go while nothing else changes
            shown = len(self.queue) or len(self._released) > len(self._running)
            if shown and self.backend.available != self._shown_available:
                self._schedule_positions()

    # ----------------------------------------------------------------------------- files
    def _image_owner(self, job: Job) -> tuple[int, int | None]:
        """Whose files hold ``job``'s images: an image posted alone reads its parent's file in
        place (``(parent id, image number)``); every other job has its own set."""
        if job.kind == "single" and job.parent_job_id is not None:
            return job.parent_job_id, job.parent_index or 1
        return job.id, None

    async def load_source(self, job: Job) -> bytes:
        """The picture ``job`` was uploaded with (for a re-roll or reply that reuses it).

        Raises:
            FileNotFoundError: (``ImagesPurged``) it is no longer stored.
        """
        [(_, data)] = await self.files.load(job.id, [SOURCE_INDEX])
        return data

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
        """Remove ``job``'s own stored files (the set an image was posted alone from is left
        alone)."""
        try:
            await self.files.purge(job.id)
        except OSError:
            log.exception("job %s: could not remove its stored files", job.id)

    # ----------------------------------------------------------------------------- cancel
    async def cancel(self, job: Job) -> bool:
        """Withdraw a job that has not started; False when it already started or finished."""
        if job.id in self._released:
            if not await self.backend.cancel(job.id):
                return False
            self._released.pop(job.id, None)
        elif not self.queue.cancel(job.id):
            return False
        self.live.pop(job.id, None)
        self._update_gauges()
        # The caller's "cancelled" edit must land last, and it has a 3 s deadline to meet.
        await self.sink.close(job.id, timeout=1.0)
        self.sink.forget(job.id)
        await self.storage.mark_cancelled(job.id)
        log.info("job %s cancelled by its requester", job.id)
        return True
