"""Where a job meets Discord: its status message (edited, latest wins), its result, its failure.

``DiscordSink`` is the ``lifecycle.service.JobSink`` of the bot. A status message is edited
through the job's interaction token while it is valid and through the channel (as the bot's own
message) after that; a result that cannot go into its status message is posted anew, mentioning
the requester so they are notified.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any

import discord

from bot import render
from lifecycle.storage import Job

log = logging.getLogger(__name__)

TOKEN_MARGIN = 30  # stop using a token this long before Discord kills it
EDIT_INTERVAL = 1.0  # at most one progress/position edit per message per second
EDIT_DRAIN_TIMEOUT = 10.0  # how long delivery waits for an in-flight progress edit
ALLOWED_NONE = discord.AllowedMentions.none()
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
INVALID_WEBHOOK_TOKEN = 50027


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
    preview: bytes | None = None
    interval: float = EDIT_INTERVAL


@dataclass
class _Message:
    """A job's status message and its edit state.

    Edits are "latest wins": callers only replace ``pending``; one editor task per message
    sends it, at most once per interval, so a slow Discord never queues up stale edits and
    never holds up the GPU.
    """

    job: Job
    last_edit: float = -1e9
    shown: str | None = None  # content of the last successful edit
    pending: _Edit | None = None
    editor: asyncio.Task | None = None
    editing: bool = False  # an edit request is in flight
    closed: bool = False  # delivery, failure or cancel owns the message now: no more edits
    message_gone: bool = False  # deleted (10008): never edit it again
    token_dead: bool = False  # the interaction token was refused: use the channel route


HiddenCaptions = Callable[[Job], Awaitable[Set[int]]]


async def _none_hidden(job: Job) -> Set[int]:
    return frozenset()


class DiscordSink:
    """Shows jobs in Discord: status edits, results and failures, for one client.

    ``hidden_captions``: which of a 'describe' job's prompts not to show (the blocklist's
    verdict, ``bot.describing.blocked_captions``).
    """

    def __init__(self, client: discord.Client, *, hidden_captions: HiddenCaptions = _none_hidden):
        self.client = client
        self._hidden_captions = hidden_captions
        self._messages: dict[int, _Message] = {}

    def _state(self, job: Job) -> _Message:
        state = self._messages.get(job.id)
        if state is None:
            state = self._messages[job.id] = _Message(job)
        else:
            state.job = job
        return state

    # ----------------------------------------------------------------------------- status
    def show_queued(self, job: Job, position: int, eta: float, *, waiting: bool) -> None:
        content = (
            render.waiting_text(position, job.locale)
            if waiting
            else render.queued_text(position, eta, job.locale)
        )
        self._request_edit(job, content, cancel_button=True, interval=position_interval(position))

    def show_progress(self, job: Job, step: int, total: int, preview: bytes | None) -> None:
        self._request_edit(
            job, render.progress_text(step, total, job.locale), cancel_button=False, preview=preview
        )

    def _request_edit(
        self,
        job: Job,
        content: str,
        *,
        cancel_button: bool,
        preview: bytes | None = None,
        interval: float = EDIT_INTERVAL,
    ) -> None:
        """Ask for the status message to show ``content``; returns at once (never awaits)."""
        if job.status_message_id is None:
            return
        state = self._state(job)
        if state.closed or state.message_gone:
            return
        # (An edit in flight may still change what is shown: then this one is wanted.)
        idle = state.pending is None and not state.editing
        if preview is None and idle and content == state.shown:
            return
        state.pending = _Edit(content, cancel_button, preview, interval)
        if state.editor is None or state.editor.done():
            state.editor = asyncio.get_running_loop().create_task(self._run_editor(state))

    async def _run_editor(self, state: _Message) -> None:
        loop = asyncio.get_running_loop()
        while state.pending is not None and not (state.closed or state.message_gone):
            delay = state.last_edit + state.pending.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # a newer edit may have replaced the pending one meanwhile
            edit, state.pending = state.pending, None
            state.last_edit = loop.time()
            state.editing = True
            try:
                await self._apply_edit(state, edit)
            finally:
                state.editing = False

    async def _apply_edit(self, state: _Message, edit: _Edit) -> None:
        attachments: list[discord.File] = []
        if edit.preview is not None:
            attachments = [discord.File(io.BytesIO(edit.preview), filename="preview.png")]
        if state.closed:
            return
        view = render.cancel_view(state.job.id) if edit.cancel_button else discord.ui.View()
        try:
            await self._edit_message(
                state.job, state, content=edit.content, attachments=attachments, view=view
            )
            state.shown = edit.content
        except StatusMessageGone as exc:
            log.info("job %s: status message not editable any more: %s", state.job.id, exc)
        except discord.HTTPException as exc:
            log.info("job %s: status edit failed: %s", state.job.id, exc)
        except Exception:
            # A progress edit is never worth a crash (e.g. the HTTP session closing at exit).
            log.exception("job %s: status edit failed", state.job.id)

    async def close(self, job_id: int, timeout: float | None = None) -> None:
        """Stop status edits; wait for one in flight so that it cannot land last."""
        state = self._messages.get(job_id)
        if state is None:
            return
        state.closed = True
        state.pending = None
        task = state.editor
        if task is None or task.done() or task is asyncio.current_task():
            return
        if state.editing:
            await asyncio.wait({task}, timeout=EDIT_DRAIN_TIMEOUT if timeout is None else timeout)
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def forget(self, job_id: int) -> _Message | None:
        """Drop what is known about the job's status message (it is no longer shown)."""
        return self._messages.pop(job_id, None)

    # ----------------------------------------------------------------------------- messages
    async def _edit_message(
        self, job: Job, state: _Message | None, *, channel_fallback: bool = True, **fields: Any
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
            and not (state and state.token_dead)
        )
        try:
            if token_ok:
                assert job.application_id is not None and job.interaction_token is not None
                hook = discord.Webhook.partial(
                    job.application_id, job.interaction_token, client=self.client
                )
                try:
                    return await hook.edit_message(
                        job.status_message_id, allowed_mentions=ALLOWED_NONE, **fields
                    )
                except discord.HTTPException as exc:
                    if exc.code not in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK):
                        raise
                    log.info("job %s: interaction token refused (%s)", job.id, exc.code)
                    if state is not None:
                        state.token_dead = True
            if job.interaction_token and not channel_fallback:
                raise StatusMessageGone(f"job {job.id}: interaction token expired or refused")
            channel = self.client.get_partial_messageable(job.channel_id)
            message = channel.get_partial_message(job.status_message_id)
            return await message.edit(allowed_mentions=ALLOWED_NONE, **fields)
        except discord.NotFound as exc:
            if exc.code != UNKNOWN_MESSAGE:
                raise
            if state is not None:
                state.message_gone = True
            raise StatusMessageGone(f"job {job.id}: status message deleted") from exc

    async def _post(
        self, job: Job, *, content: str, files: list[discord.File], view: Any, mention: bool
    ) -> discord.Message:
        """Post a new message in the job's channel (replying to the user's message if any)."""
        channel = self.client.get_partial_messageable(job.channel_id)
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

    # ----------------------------------------------------------------------------- outcomes
    async def publish(
        self,
        job: Job,
        seconds: float | None,
        notes: Sequence[str],
        files: Sequence[tuple[str, bytes]],
        spoilers: Sequence[bool],
        source: Job | None = None,
    ) -> int:
        """Put the result into the status message, or post it anew when that is impossible.

        A new channel message (mentioning the requester, so they are notified) is used when
        the interaction token has expired (jobs that waited past ~15 minutes) or was refused,
        or when the status message was deleted.
        """
        state = self.forget(job.id) or _Message(job)
        state.job = job
        blobs = list(files)
        hidden: Set[int] = frozenset()
        if job.kind == "describe":  # its result is the prompts it proposes
            hidden = await self._hidden_captions(job)
            view = render.describe_view(job.id, len(job.captions), hidden)
        else:
            view = render.result_view(job.id, job.count, job.withheld) if blobs else None

        def text(mention: bool) -> str:
            if job.kind == "describe":
                return render.describe_text(job, mention=mention, hidden=hidden)
            return render.result_text(
                job, seconds=seconds, notes=notes, mention=mention, source=source
            )

        if job.status_message_id is not None and not state.message_gone:
            try:
                message = await self._edit_message(
                    job,
                    state,
                    channel_fallback=False,
                    content=text(False),
                    attachments=render.image_files(blobs, spoilers),
                    view=view,
                )
                return message.id
            except StatusMessageGone as exc:
                log.info("job %s: posting the result as a new message (%s)", job.id, exc)
        message = await self._post(
            job,
            content=text(True),
            files=render.image_files(blobs, spoilers),
            view=view,
            mention=True,
        )
        if job.status_message_id and not state.message_gone:
            # The old "queued"/"step" message would be stale next to the result: remove it.
            with contextlib.suppress(discord.HTTPException):
                await (
                    self.client.get_partial_messageable(job.channel_id)
                    .get_partial_message(job.status_message_id)
                    .delete()
                )
        return message.id

    async def tell_failure(self, job: Job, user_message: str) -> None:
        """Show the failure in the status message, or post it when that is impossible."""
        state = self.forget(job.id)
        try:
            text = f"⚠️ <@{job.requester_id}> {render.escape_user_text(user_message)}"
            if job.status_message_id and not (state and state.message_gone):
                try:
                    await self._edit_message(
                        job, state, channel_fallback=False, content=text, attachments=[], view=None
                    )
                    return
                except (discord.HTTPException, StatusMessageGone):
                    pass
            await self._post(job, content=text, files=[], view=None, mention=True)
        except Exception:
            log.exception("job %s: could not tell the requester about the failure", job.id)
