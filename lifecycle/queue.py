"""A fair, bounded, in-process job queue with dynamic batching (pure asyncio).

Fairness is round-robin by user. Every queued job carries a *round*: a user's first waiting job
is in the current round, their second in the next, and so on. Jobs start in order of
(round, the user's place in the rotation, the user's own FIFO order), which interleaves users:
u1j1, u2j1, u3j1, u1j2, u2j2, ... A user whose job was just served and who submits again lands in
the next round, i.e. at the back of the rotation. Because the start order is a sort key fixed
when a job is queued, taking jobs out of the middle (batching, cancel) never reorders the rest,
and ``position()`` is exactly the order ``next_batch()`` pops in.

``JobQueue`` is the seam for a Redis-backed replacement: the bot only uses that protocol.
This module never imports discord, torch or the engine.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 100
DEFAULT_PER_USER_LIMIT = 3


@dataclass(frozen=True)
class QueuedJob:
    """A job waiting for the GPU.

    ``batch_key``: jobs with equal keys can share one GPU batch (the engine request's
    ``batch_key``). ``images``: how many images the job produces (usually 4). ``group``: for the
    rest of a set one command made (permutations, ``--repeat``), the id of its first job: the
    set takes one of its user's places, that of its first job; each job still runs in a turn
    of its own.
    """

    job_id: int
    user_id: int
    images: int
    batch_key: Hashable
    enqueued_at: float = field(default_factory=time.time)
    group: int | None = None

    @property
    def follows(self) -> bool:
        """Part of a set whose first job holds the set's place in the queue."""
        return self.group is not None and self.group != self.job_id


class QueueError(Exception):
    """A job was refused; ``user_message`` says why in words for the user."""

    def __init__(self, user_message: str):
        super().__init__(user_message)
        self.user_message = user_message


class QueueFull(QueueError):
    """The queue holds its maximum number of jobs."""


class UserLimitReached(QueueError):
    """This user already has as many jobs queued as allowed."""


ChangeCallback = Callable[[], None]


@runtime_checkable
class JobQueue(Protocol):
    """What the bot needs from a job queue; an in-process or Redis-backed one both fit."""

    async def submit(
        self, job: QueuedJob, *, per_user_limit: int | None = None, enforce_limits: bool = True
    ) -> int:
        """Queue ``job`` and return its 1-based start position.

        Raises ``QueueFull`` or ``UserLimitReached`` (nothing queued is ever dropped).
        ``enforce_limits=False`` skips both checks (restart recovery must not lose work).
        """
        ...

    def cancel(self, job_id: int) -> bool:
        """Remove a queued (not yet started) job; False when it is not queued."""
        ...

    def position(self, job_id: int) -> int | None:
        """1-based position in start order, None when not queued."""
        ...

    def order(self) -> list[int]:
        """Queued job ids in the order they will start."""
        ...

    def get(self, job_id: int) -> QueuedJob | None:
        """The queued job with this id, or None."""
        ...

    def queued_for(self, user_id: int) -> int:
        """How many places this user holds: queued jobs, a set counting once."""
        ...

    def __len__(self) -> int: ...

    async def next_batch(self, max_images: int) -> list[QueuedJob]:
        """Wait for work, then take the next job and same-``batch_key`` jobs after it."""
        ...

    def estimated_start(
        self, job_id: int, seconds_per_image: float, *, busy_for: float = 0.0
    ) -> float | None:
        """Seconds until the job starts, None when not queued."""
        ...

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback()`` after every change of the order; returns an unsubscribe."""
        ...


@dataclass
class _UserLane:
    """One user's FIFO with the round of each job (parallel deques)."""

    rotation_seq: int  # place in the rotation; smaller = earlier within a round
    jobs: deque[QueuedJob] = field(default_factory=deque)
    rounds: deque[int] = field(default_factory=deque)


class FairQueue:
    """Round-robin-by-user queue with a global bound and a per-user bound.

    Args:
        max_size: most jobs queued at once (running ones not counted).
        per_user_limit: most jobs one user may have queued; ``submit`` can override it per
            call (e.g. from a guild setting).
    """

    def __init__(
        self, max_size: int = DEFAULT_MAX_SIZE, per_user_limit: int = DEFAULT_PER_USER_LIMIT
    ):
        if max_size < 1 or per_user_limit < 1:
            raise ValueError("max_size and per_user_limit must be at least 1")
        self.max_size = max_size
        self.per_user_limit = per_user_limit
        self._lanes: dict[int, _UserLane] = {}
        self._by_id: dict[int, QueuedJob] = {}
        # The round of the job that started last; new users join this round.
        self._current_round = 0
        # Round of each user's last started job, so a user who empties their lane and submits
        # again goes to the next round instead of cutting in. Pruned once it no longer matters.
        self._served_round: dict[int, int] = {}
        self._rotation = itertools.count()
        self._not_empty = asyncio.Event()
        self._subscribers: list[ChangeCallback] = []

    # --- submitting and cancelling ----------------------------------------------------------

    async def submit(
        self, job: QueuedJob, *, per_user_limit: int | None = None, enforce_limits: bool = True
    ) -> int:
        """Queue ``job`` and return its 1-based start position.

        Args:
            per_user_limit: overrides the queue's default for this call (None = default).
            enforce_limits: False skips both bounds, for re-queueing jobs after a restart.

        Raises:
            QueueFull: ``max_size`` jobs are queued.
            UserLimitReached: the user already has ``per_user_limit`` jobs queued.
            ValueError: a job with this id is already queued.
        """
        if job.job_id in self._by_id:
            raise ValueError(f"job {job.job_id} is already queued")
        if enforce_limits:
            if len(self._by_id) >= self.max_size:
                raise QueueFull(
                    f"The queue is full ({self.max_size} jobs waiting). "
                    "Please try again in a minute."
                )
            limit = self.per_user_limit if per_user_limit is None else per_user_limit
            # The rest of a set needs no place of its own: its first job took the set's.
            if not job.follows and self.queued_for(job.user_id) >= limit:
                raise UserLimitReached(
                    f"You already have {limit} job{'s' if limit != 1 else ''} waiting. "
                    "Wait for one to start (or cancel one), then try again."
                )
        lane = self._lanes.get(job.user_id)
        if lane is None:
            lane = self._lanes[job.user_id] = _UserLane(rotation_seq=next(self._rotation))
        if lane.rounds:
            job_round = lane.rounds[-1] + 1
        else:
            served = self._served_round.get(job.user_id)
            job_round = self._current_round if served is None else served + 1
            job_round = max(job_round, self._current_round)
        lane.jobs.append(job)
        lane.rounds.append(job_round)
        self._by_id[job.job_id] = job
        self._not_empty.set()
        position = self.position(job.job_id)
        assert position is not None
        log.debug("job %d queued for user %d at position %d", job.job_id, job.user_id, position)
        self._notify()
        return position

    def cancel(self, job_id: int) -> bool:
        """Remove a queued job; the user's later jobs move up one round each.

        Returns:
            False when the job is not queued (unknown, or already started).
        """
        job = self._by_id.get(job_id)
        if job is None:
            return False
        lane = self._lanes[job.user_id]
        index = next(i for i, queued in enumerate(lane.jobs) if queued.job_id == job_id)
        # Drop the last round, not the cancelled one: the later jobs inherit the earlier slots.
        del lane.jobs[index]
        lane.rounds.pop()
        self._forget(job)
        log.debug("job %d cancelled", job_id)
        self._notify()
        return True

    # --- inspecting -------------------------------------------------------------------------

    def order(self) -> list[int]:
        """Queued job ids in the order they will start."""
        return [job.job_id for job in self._ordered()]

    def position(self, job_id: int) -> int | None:
        """1-based position in start order, None when not queued."""
        if job_id not in self._by_id:
            return None
        return self.order().index(job_id) + 1

    def get(self, job_id: int) -> QueuedJob | None:
        """The queued job with this id, or None."""
        return self._by_id.get(job_id)

    def queued_for(self, user_id: int) -> int:
        """How many places this user holds: queued jobs, a set counting once."""
        lane = self._lanes.get(user_id)
        if not lane:
            return 0
        return len({job.group if job.group is not None else job.job_id for job in lane.jobs})

    def __len__(self) -> int:
        return len(self._by_id)

    def estimated_start(
        self, job_id: int, seconds_per_image: float, *, busy_for: float = 0.0
    ) -> float | None:
        """Seconds until the job starts: images queued ahead of it x ``seconds_per_image``.

        Batching is ignored (it can only make the real wait shorter). ``busy_for`` adds the time
        left on the batch running now, which only the GPU feeder knows.

        Returns:
            None when the job is not queued.
        """
        if job_id not in self._by_id:
            return None
        ahead = 0
        for job in self._ordered():
            if job.job_id == job_id:
                break
            ahead += job.images
        return busy_for + ahead * seconds_per_image

    # --- taking work ------------------------------------------------------------------------

    async def next_batch(self, max_images: int) -> list[QueuedJob]:
        """Wait until a job is queued, then take the next one and batch-mates for it.

        The first job is the head of the fair order. Further jobs with the same ``batch_key``
        follow in fair order while the batch stays within ``max_images``; the first that would
        not fit ends the batch (so same-key jobs never overtake each other). A first job bigger
        than ``max_images`` still comes alone, so nothing starves. Jobs left behind keep their
        relative order.

        Cancelling the waiting call loses nothing.
        """
        while not self._by_id:
            await self._not_empty.wait()
        ordered = self._ordered()
        first = ordered[0]
        batch = [first]
        total = first.images
        for job in ordered[1:]:
            if job.batch_key != first.batch_key:
                continue
            if total + job.images > max_images:
                break
            batch.append(job)
            total += job.images
        # The head has the smallest round of all queued jobs: that round is now under way.
        self._current_round = self._take(first)
        for job in batch[1:]:
            self._take(job)
        self._prune_served()
        log.debug(
            "batch of %d job(s), %d image(s): %s", len(batch), total, [j.job_id for j in batch]
        )
        self._notify()
        return batch

    # --- change notification ----------------------------------------------------------------

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback()`` (on the event loop, synchronously) after every change.

        Changes are submit, cancel and next_batch; the bot should debounce message edits.

        Returns:
            A function that unsubscribes.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # --- internals --------------------------------------------------------------------------

    def _ordered(self) -> list[QueuedJob]:
        keyed = [
            ((job_round, lane.rotation_seq, index), job)
            for lane in self._lanes.values()
            for index, (job, job_round) in enumerate(zip(lane.jobs, lane.rounds, strict=True))
        ]
        keyed.sort(key=lambda pair: pair[0])
        return [job for _, job in keyed]

    def _take(self, job: QueuedJob) -> int:
        lane = self._lanes[job.user_id]
        index = next(i for i, queued in enumerate(lane.jobs) if queued.job_id == job.job_id)
        job_round = lane.rounds[index]
        # A batch-mate taken from the middle of a lane keeps the rounds of the others as they
        # were: it got a free ride, so the user's later jobs do not move up.
        del lane.jobs[index]
        del lane.rounds[index]
        self._served_round[job.user_id] = max(self._served_round.get(job.user_id, 0), job_round)
        self._forget(job)
        return job_round

    def _forget(self, job: QueuedJob) -> None:
        del self._by_id[job.job_id]
        lane = self._lanes[job.user_id]
        if not lane.jobs:
            del self._lanes[job.user_id]
        if not self._by_id:
            self._not_empty.clear()

    def _prune_served(self) -> None:
        # A user served before the current round would join the current round anyway.
        stale = [u for u, r in self._served_round.items() if r < self._current_round]
        for user_id in stale:
            del self._served_round[user_id]

    def _notify(self) -> None:
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception:
                log.exception("queue change subscriber failed")
