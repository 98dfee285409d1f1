"""Runs a batch of tickets on an ``EngineRunner``: generate, check safety, encode, report.

The same code serves the bot's in-process backend and ``python -m engine.worker``: it turns
tickets into events (``Started``, ``Progress``, then one ``Finished`` or ``Failed`` each), so
what a user gets does not depend on where the GPU is. Knows no Discord and no storage.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from PIL import Image

from engine.encoding import as_pil, encode_one
from engine.errors import EngineError
from engine.tickets import Event, Failed, Finished, ImageFile, Progress, Started, Ticket

if TYPE_CHECKING:
    from engine.requests import GenerationResult, StepProgress
    from engine.runner import EngineRunner

log = logging.getLogger(__name__)

Emit = Callable[[Event], Awaitable[None]]
T = TypeVar("T")
PREVIEW_LIMIT = 2**20  # a preview is <= 256 px: far below any upload limit
DEFAULT_SECONDS_PER_IMAGE = 0.1  # ETA guess until the first batch has been timed
GENERIC_FAILURE = "Something went wrong while generating. Please try again."
TIMED_OUT = "Generating took far too long and was stopped. Please try again."
SOURCE_REFUSED = "The safety filter refused that picture: it cannot be used as an image prompt."
DESCRIBE_OFF = (
    "Describing pictures is not set up on this GPU worker (IMAGINE_DESCRIBE_MODEL). "
    "Please tell the bot's operator."
)


class GPUStuck(Exception):
    """A GPU call ran past the watchdog's limit: its jobs were failed; stop taking work.

    A CUDA call cannot be interrupted from Python, so the GPU thread stays busy and no later
    batch could run: the process must exit so that a supervisor restarts it.
    """


class TicketExecutor:
    """Turns tickets into events on one engine runner (one batch at a time).

    Args:
        runner: the started engine runner.
        safety: returns the loaded safety checker, or None (it may finish loading later).
        describer: returns the loaded /describe captioner (``engine.describe.Describer``), or
            None (like ``safety``).
        generation_timeout: seconds a GPU call may take before the watchdog fires.
        progress_interval: least seconds between two progress events of a batch (the last
            step is always sent), and between two step previews; 0 sends every step.
        worker: the name put on ``Started``/``Finished`` events.
        image_format: how results are encoded (``IMAGINE_IMAGE_FORMAT``: png, webp, jpeg).
    """

    def __init__(
        self,
        runner: EngineRunner,
        *,
        safety: Callable[[], Any] = lambda: None,
        describer: Callable[[], Any] = lambda: None,
        generation_timeout: float = 300.0,
        progress_interval: float = 0.0,
        worker: str = "local",
        image_format: str = "png",
    ):
        self.runner = runner
        self._safety = safety
        self._describer = describer
        self.generation_timeout = generation_timeout
        self.progress_interval = progress_interval
        self.worker = worker
        self.image_format = image_format
        self.seconds_per_image = DEFAULT_SECONDS_PER_IMAGE
        self.stuck = False

    async def run(
        self,
        tickets: Sequence[Ticket],
        emit: Emit,
        *,
        on_gpu_done: Callable[[], None] = lambda: None,
    ) -> None:
        """Run ``tickets`` (same ``batch_key``) in one pipeline call and emit their outcomes.

        A failed batch is retried ticket by ticket, so one bad request does not fail its
        batch-mates. Never raises, except ``GPUStuck`` (after failing the stuck tickets).
        ``on_gpu_done`` is called as soon as the GPU is done with the batch, before the safety
        check and encoding: the next batch can start on the GPU while this one is finished.
        """
        tickets = list(tickets)
        refused = await self._refused_sources(tickets)
        for ticket in tickets:
            if ticket.job_id in refused:
                await emit(Failed(ticket.job_id, SOURCE_REFUSED, "refused"))
        tickets = [t for t in tickets if t.job_id not in refused]
        if not tickets:
            on_gpu_done()
            return
        if tickets[0].request.operation == "describe":  # one batch_key: all of them are
            await self._describe(tickets, emit, on_gpu_done)
            return
        await emit(Started(tuple(t.job_id for t in tickets), self.worker))
        started = time.perf_counter()
        try:
            results = await self._generate(tickets, emit)
        except GPUStuck:
            raise
        except Exception as exc:
            if len(tickets) == 1:
                on_gpu_done()
                await emit(self._failure(tickets[0], exc))
                return
            log.warning("batch of %d failed (%r); retrying one by one", len(tickets), exc)
            for ticket in tickets:
                try:
                    [result] = await self._generate([ticket], emit)
                except GPUStuck:
                    raise
                except Exception as single:
                    await emit(self._failure(ticket, single))
                    continue
                await self._finish(ticket, result, emit)
            on_gpu_done()
            return
        images = sum(t.request.work for t in tickets)
        elapsed = time.perf_counter() - started
        self.seconds_per_image = 0.7 * self.seconds_per_image + 0.3 * elapsed / max(images, 1)
        on_gpu_done()
        pairs = zip(tickets, results, strict=True)
        await asyncio.gather(*(self._finish(t, r, emit) for t, r in pairs))

    # ------------------------------------------------------------------------- generating
    async def _generate(self, tickets: list[Ticket], emit: Emit) -> list[GenerationResult]:
        pending: set[asyncio.Task] = set()
        progress = self._progress(tickets, emit, pending)
        requests = [t.request for t in tickets]
        generation = self.runner.generate_batch(
            requests, progress, preview_every=self.progress_interval
        )
        try:
            return await self._watched(tickets, emit, generation)
        finally:
            # Progress of this call goes out before its outcome.
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _watched(self, tickets: list[Ticket], emit: Emit, call: Awaitable[T]) -> T:
        """Await a GPU ``call`` under the watchdog: past ``generation_timeout`` its tickets
        fail and ``GPUStuck`` is raised."""
        running = asyncio.ensure_future(call)
        try:
            return await asyncio.wait_for(asyncio.shield(running), self.generation_timeout)
        except TimeoutError:
            if running.done():
                raise  # the engine's own TimeoutError
            self.stuck = True
            log.critical(
                "GPU batch %s still running after %.0f s (IMAGINE_GENERATION_TIMEOUT)",
                [t.job_id for t in tickets],
                self.generation_timeout,
            )
            for ticket in tickets:
                await emit(Failed(ticket.job_id, TIMED_OUT, "timeout"))
            raise GPUStuck from None

    # ------------------------------------------------------------------------- describing
    async def _describe(
        self, tickets: list[Ticket], emit: Emit, on_gpu_done: Callable[[], None]
    ) -> None:
        """Propose prompts for each ticket's picture (``init_image``) with the captioner.

        Like a generation: one GPU call for the batch, retried one by one when it fails."""
        describer = self._describer()
        if describer is None or not describer.enabled:
            on_gpu_done()
            for ticket in tickets:
                await emit(Failed(ticket.job_id, DESCRIBE_OFF, "engine"))
            return
        await emit(Started(tuple(t.job_id for t in tickets), self.worker))

        async def describe(batch: list[Ticket]) -> list[tuple[str, ...]]:
            pictures = [t.request.init_image or b"" for t in batch]
            seeds = [t.request.seed for t in batch]
            call = self.runner.run(describer.describe, pictures, seeds)
            return await self._watched(batch, emit, call)

        started = time.perf_counter()
        try:
            outcomes: list[tuple[Ticket, Any]] = list(
                zip(tickets, await describe(tickets), strict=True)
            )
        except GPUStuck:
            raise
        except Exception as exc:
            if len(tickets) == 1:
                outcomes = [(tickets[0], exc)]
            else:
                log.warning("describe batch of %d failed (%r); one by one", len(tickets), exc)
                outcomes = []
                for ticket in tickets:
                    try:
                        [captions] = await describe([ticket])
                    except GPUStuck:
                        raise
                    except Exception as single:
                        outcomes.append((ticket, single))
                    else:
                        outcomes.append((ticket, captions))
        on_gpu_done()
        seconds = time.perf_counter() - started
        for ticket, outcome in outcomes:
            if isinstance(outcome, BaseException):
                await emit(self._failure(ticket, outcome))
                continue
            await emit(
                Finished(
                    job_id=ticket.job_id,
                    files=(),
                    seeds=(),
                    seconds=seconds,
                    worker=self.worker,
                    captions=tuple(outcome),
                )
            )

    def _progress(
        self, tickets: list[Ticket], emit: Emit, pending: set[asyncio.Task]
    ) -> Callable[[StepProgress], None]:
        loop = asyncio.get_running_loop()
        last = -1e9

        def on_progress(step: StepProgress) -> None:
            # On the event loop (the runner forwards it): never blocks.
            nonlocal last
            now = loop.time()
            # The engine makes at most one preview per interval: each one is shown.
            if (
                step.preview is None
                and step.step < step.total
                and now - last < self.progress_interval
            ):
                return
            last = now
            task = loop.create_task(self._send_progress(tickets, step, emit))
            pending.add(task)
            task.add_done_callback(pending.discard)

        return on_progress

    async def _send_progress(self, tickets: list[Ticket], step: StepProgress, emit: Emit) -> None:
        preview = None
        if step.preview is not None:
            encoded = await asyncio.to_thread(
                encode_one, step.preview, PREVIEW_LIMIT, stem="preview"
            )
            preview = encoded.data
        try:
            for i, ticket in enumerate(tickets):
                # The preview shows the batch's first image: it belongs to the first ticket.
                await emit(
                    Progress(ticket.job_id, step.step, step.total, preview if i == 0 else None)
                )
        except Exception:
            log.exception("progress event lost")

    def _failure(self, ticket: Ticket, exc: BaseException) -> Failed:
        if isinstance(exc, EngineError):
            log.warning("job %s: engine error: %s", ticket.job_id, exc)
            return Failed(ticket.job_id, exc.user_message, "engine")
        log.error("engine crashed on job %s", ticket.job_id, exc_info=exc)
        return Failed(ticket.job_id, GENERIC_FAILURE, "crash")

    # ------------------------------------------------------------------------- finishing
    async def _finish(self, ticket: Ticket, result: GenerationResult, emit: Emit) -> None:
        try:
            event: Event = await self._encode(ticket, result)
        except Exception as exc:
            log.exception("job %s: checking or encoding the images failed", ticket.job_id)
            event = Failed(ticket.job_id, GENERIC_FAILURE, "crash")
            del exc
        await emit(event)

    async def _encode(self, ticket: Ticket, result: GenerationResult) -> Finished:
        images = [g.pixels for g in result.images]
        numbers = list(range(1, len(images) + 1))
        flagged = await self._flagged(ticket, images)
        notes: list[str] = list(result.notes)
        withheld: list[int] = []
        spoilered: list[int] = []
        if flagged:
            if ticket.safety == "withhold":
                withheld = flagged
                notes.append(f"{len(flagged)} image(s) withheld by this server's safety filter.")
            else:
                spoilered = flagged
                notes.append(f"{len(flagged)} image(s) hidden as spoilers by the safety filter.")
        # A withheld image is neither sent nor stored and keeps its number: the others stay
        # next to their own seeds, files and U/V buttons.
        kept = [i for i in numbers if i not in withheld]
        encoded = await self.runner.encode(
            [images[i - 1] for i in kept],
            ticket.file_limit,
            stem=ticket.stem,
            indexes=kept,
            image_format=self.image_format,
        )
        notes += [e.note for e in encoded if e.note][:1]
        return Finished(
            job_id=ticket.job_id,
            files=tuple(
                ImageFile(i, e.filename, e.data) for i, e in zip(kept, encoded, strict=True)
            ),
            seeds=tuple(result.seeds),
            seconds=result.seconds,
            flagged=tuple(spoilered),
            withheld=tuple(withheld),
            notes=tuple(notes),
            worker=self.worker,
        )

    async def _refused_sources(self, tickets: list[Ticket]) -> set[int]:
        """Jobs whose uploaded picture the safety classifier flags (none when it is off)."""
        checker = self._safety()
        uploads = [t for t in tickets if t.check_source and t.request.init_image is not None]
        if not uploads or checker is None or not checker.enabled:
            return set()

        def check() -> list[Any]:
            pictures = [
                Image.open(io.BytesIO(t.request.init_image)).convert("RGB") for t in uploads
            ]
            return checker.check(pictures)

        verdicts = await asyncio.to_thread(check)
        refused = {t.job_id for t, v in zip(uploads, verdicts, strict=True) if v.flagged}
        for job_id in refused:
            log.info("job %s: the uploaded picture was refused by the safety filter", job_id)
        return refused

    async def _flagged(self, ticket: Ticket, images: list[Any]) -> list[int]:
        """1-based numbers of the images the safety classifier flags (none when it is off)."""
        checker = self._safety()
        if ticket.safety == "off" or checker is None or not checker.enabled:
            return []
        verdicts = await asyncio.to_thread(lambda: checker.check([as_pil(i) for i in images]))
        flagged = [i for i, v in enumerate(verdicts, start=1) if v.flagged]
        if flagged:
            log.info(
                "job %s: %d image(s) flagged by the safety filter (%s)",
                ticket.job_id,
                len(flagged),
                ticket.safety,
            )
        return flagged
