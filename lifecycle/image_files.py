"""Each job's encoded result files on disk: atomic writes, loading, purging and retention.

Layout: ``<root>/<job_id>/<i>-<file name>`` (i = 1-based image index), so the bytes and the
attachment name are one file and one atomic rename. Index 0 (``0-source.png``) is the picture
an image prompt started from, kept with its set. Sets written by older versions
(``<i>`` holding the bytes, ``<i>.name`` the attachment name) still load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

#: A temp file (or a purged set waiting for deletion) older than this is left over from a crash.
STALE_AFTER_S = 3600.0
TEMP_SUFFIX = ".tmp"
TRASH_PREFIX = ".trash-"
SOURCE_INDEX = 0
"""The number of a job's uploaded picture in its set (results are 1, 2, ...)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_NEW_LAYOUT = re.compile(r"(\d+)-(.+)", re.ASCII)  # "<i>-<file name>"
_OLD_LAYOUT = re.compile(r"(\d+)(\.name)?", re.ASCII)  # "<i>" bytes, "<i>.name" its name


class ImagesPurged(FileNotFoundError):
    """A job's result set, or some images of it, are no longer stored."""

    def __init__(self, job_id: int, missing: Sequence[int]) -> None:
        super().__init__(f"images {list(missing)} of job {job_id} are no longer stored")
        self.job_id = job_id
        self.missing = tuple(missing)


@dataclass(frozen=True)
class SweepReport:
    """What one retention sweep did.

    ``removed`` lists every set removed (by age first, then by size, each oldest first);
    ``protected_removed`` the protected (shared) ones among them, which only the size limit
    removes, so a gallery can drop them too.
    """

    removed: tuple[int, ...] = ()
    protected_removed: tuple[int, ...] = ()
    bytes_freed: int = 0
    bytes_kept: int = 0


@dataclass(frozen=True)
class _StoredSet:
    job_id: int
    path: Path
    written_at: float
    size: int


class ImageFiles:
    """Keeps each job's encoded result files on disk.

    One instance per process: a lock keeps a save, a purge and a sweep's decisions apart. Every
    public method does its file work in a worker thread, never on the event loop.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------- public API
    async def save(
        self,
        job_id: int,
        blobs: Sequence[tuple[str, bytes]],
        *,
        indexes: Sequence[int] | None = None,
    ) -> None:
        """Store a job's files as its whole set, replacing whatever the job had before.

        Each file is written to a temp name in the set's folder, fsynced and renamed into place,
        so a crash never leaves a truncated file that loads as an image.

        Args:
            job_id: the job the images belong to.
            blobs: ``(attachment file name, encoded bytes)`` in image order (index 1, 2, ...).
                Names are reduced to ``[A-Za-z0-9._-]``.
            indexes: the 1-based image number of each blob, when not 1, 2, ... (a set whose
                withheld images keep their numbers but are not stored).
        """
        numbers = list(indexes) if indexes is not None else list(range(1, len(blobs) + 1))
        if len(numbers) != len(blobs):
            raise ValueError("one index per blob")
        await asyncio.to_thread(self._save, job_id, list(zip(numbers, blobs, strict=True)))

    async def save_source(self, job_id: int, data: bytes) -> None:
        """Store the picture a job starts from (an upload) as its image 0; a later ``save`` of
        the results keeps it."""
        await asyncio.to_thread(self._save, job_id, [(SOURCE_INDEX, ("source.png", data))])

    async def load(self, job_id: int, indexes: Sequence[int]) -> list[tuple[str, bytes]]:
        """Read images of a set.

        Returns:
            ``(attachment file name, bytes)`` for each of ``indexes`` (1-based), in that order.

        Raises:
            ImagesPurged: the set, or one of the requested images, is not stored.
        """
        return await asyncio.to_thread(self._load, job_id, list(indexes))

    async def has(self, job_id: int, index: int) -> bool:
        """Whether image ``index`` (1-based) of the job is stored (a directory listing)."""
        return await asyncio.to_thread(lambda: index in self._files_of(job_id))

    async def purge(self, job_id: int) -> bool:
        """Remove a job's set (🗑 delete). Returns whether there was one."""
        return await asyncio.to_thread(self._purge, job_id)

    async def sweep(
        self,
        *,
        max_age_s: float | None,
        max_total_bytes: int | None,
        protected: Collection[int],
        now: float | None = None,
    ) -> SweepReport:
        """Apply retention: an age limit that spares protected sets, then a total-size limit.

        A set's age counts from when its files were last written. By size, the oldest
        unprotected sets go first and protected ones only when that is not enough. Temp files
        and purged sets left over from a crash (older than an hour) are deleted; younger ones may
        belong to a write in progress and are left alone. An unreadable entry is logged and
        skipped.

        Args:
            max_age_s: remove unprotected sets older than this; ``None`` = no age limit.
            max_total_bytes: keep the total at or below this; ``None`` = no size limit.
            protected: job ids never removed by age (sets shared to the showcase).
            now: the current time (unix seconds), for tests.
        """
        return await asyncio.to_thread(
            self._sweep,
            max_age_s,
            max_total_bytes,
            frozenset(protected),
            time.time() if now is None else now,
        )

    # ----------------------------------------------------------------------------- saving
    def _save(self, job_id: int, blobs: list[tuple[int, tuple[str, bytes]]]) -> None:
        folder = self._folder(job_id)
        with self._lock:
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                _fsync_dir(folder.parent)
            written = set()
            for i, (name, data) in blobs:
                final = f"{i}-{_safe_name(name)}"
                _write_atomically(folder, final, data)
                written.add(final)
            _fsync_dir(folder)
            stale = [
                entry
                for entry in os.listdir(folder)
                if entry not in written
                and (_NEW_LAYOUT.fullmatch(entry) or _OLD_LAYOUT.fullmatch(entry))
                and not entry.startswith(f"{SOURCE_INDEX}-")  # the source stays with its set
            ]
            for entry in stale:
                (folder / entry).unlink(missing_ok=True)
            if stale:
                _fsync_dir(folder)

    # ----------------------------------------------------------------------------- loading
    def _folder(self, job_id: int) -> Path:
        return self.root / str(int(job_id))

    def _files_of(self, job_id: int) -> dict[int, tuple[str, Path]]:
        """Index -> (attachment name, path) of a set; the new layout wins over the old one."""
        folder = self._folder(job_id)
        try:
            entries = set(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        found: dict[int, tuple[str, Path]] = {}
        for entry in sorted(entries):
            if match := _NEW_LAYOUT.fullmatch(entry):
                found[int(match[1])] = (match[2], folder / entry)
        for entry in entries:
            match = _OLD_LAYOUT.fullmatch(entry)
            if match and not match[2] and int(match[1]) not in found:
                found[int(match[1])] = (_old_name(folder, entry, entries, job_id), folder / entry)
        return found

    def _load(self, job_id: int, indexes: list[int]) -> list[tuple[str, bytes]]:
        files = self._files_of(job_id)
        missing = [i for i in indexes if i not in files]
        if missing:
            raise ImagesPurged(job_id, missing)
        out = []
        for i in indexes:
            name, path = files[i]
            try:
                out.append((name, path.read_bytes()))
            except FileNotFoundError:  # purged between the listing and the read
                raise ImagesPurged(job_id, [i]) from None
        return out

    # ----------------------------------------------------------------------------- removing
    def _purge(self, job_id: int) -> bool:
        with self._lock:
            trash = self._to_trash(self._folder(job_id))
        if trash is None:
            return False
        _delete_tree(trash)
        return True

    def _to_trash(self, folder: Path) -> Path | None:
        """Rename a set out of sight (atomic), so it vanishes whole before it is deleted."""
        trash = folder.with_name(f"{TRASH_PREFIX}{folder.name}-{secrets.token_hex(4)}")
        try:
            os.replace(folder, trash)
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):  # a sweep spares trash younger than an hour
            os.utime(trash)
        return trash

    def _sweep(
        self,
        max_age_s: float | None,
        max_total_bytes: int | None,
        protected: frozenset[int],
        now: float,
    ) -> SweepReport:
        with self._lock:
            sets, freed = self._scan(now)
            doomed = [
                s
                for s in sets
                if max_age_s is not None
                and now - s.written_at > max_age_s
                and s.job_id not in protected
            ]
            doomed_ids = {s.job_id for s in doomed}
            kept = [s for s in sets if s.job_id not in doomed_ids]
            total = sum(s.size for s in kept)
            if max_total_bytes is not None:
                by_size = [s for s in kept if s.job_id not in protected]
                by_size += [s for s in kept if s.job_id in protected]
                for s in by_size:
                    if total <= max_total_bytes:
                        break
                    doomed.append(s)
                    total -= s.size
            trashed: list[tuple[_StoredSet, Path]] = []
            for s in doomed:
                try:
                    trash = self._to_trash(s.path)
                except OSError:
                    log.warning("retention: could not remove %s", s.path, exc_info=True)
                    total += s.size
                    continue
                if trash is not None:
                    trashed.append((s, trash))
        for s, trash in trashed:
            _delete_tree(trash)
            freed += s.size
        removed = tuple(s.job_id for s, _ in trashed)
        return SweepReport(
            removed=removed,
            protected_removed=tuple(i for i in removed if i in protected),
            bytes_freed=freed,
            bytes_kept=total,
        )

    def _scan(self, now: float) -> tuple[list[_StoredSet], int]:
        """Every stored set, oldest first, and the bytes freed by removing crash leftovers."""
        sets: list[_StoredSet] = []
        freed = 0
        try:
            with os.scandir(self.root) as it:
                entries = list(it)
        except FileNotFoundError:
            return [], 0
        for entry in entries:
            try:
                if entry.name.startswith(TRASH_PREFIX) and entry.is_dir(follow_symlinks=False):
                    if now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S:
                        _delete_tree(Path(entry.path))
                    continue
                if not (entry.name.isascii() and entry.name.isdigit()):
                    continue  # not ours: leave it alone
                if not entry.is_dir(follow_symlinks=False):
                    continue
                written_at, size, leftovers = _measure(Path(entry.path), now)
                freed += leftovers
                sets.append(_StoredSet(int(entry.name), Path(entry.path), written_at, size))
            except OSError:
                log.warning("retention: skipping unreadable %s", entry.path, exc_info=True)
        sets.sort(key=lambda s: (s.written_at, s.job_id))
        return sets, freed


class RetentionSettings(Protocol):
    """The limits a retention sweep keeps to (the bot's settings have them)."""

    @property
    def retention_max_age_s(self) -> float | None: ...

    @property
    def retention_max_bytes(self) -> int | None: ...


async def run_retention(
    files: ImageFiles,
    settings: RetentionSettings,
    protected: Callable[[], Awaitable[Collection[int]]],
    *,
    interval_s: float = 3600.0,
    on_sweep: Callable[[SweepReport], Awaitable[None]] | None = None,
) -> None:
    """Sweep at start and then every ``interval_s`` until cancelled; errors are logged, not fatal.

    Args:
        files: the stored result files.
        settings: ``retention_max_age_s`` and ``retention_max_bytes`` are read from it.
        protected: returns the job ids shared to the showcase (never removed by age).
        interval_s: seconds between sweeps.
        on_sweep: called with each report that removed something (e.g. to update a gallery).
    """
    while True:
        try:
            report = await files.sweep(
                max_age_s=settings.retention_max_age_s,
                max_total_bytes=settings.retention_max_bytes,
                protected=await protected(),
            )
            if report.removed:
                log.info(
                    "retention: removed %d sets (%d shared), freed %.1f MB, kept %.1f MB",
                    len(report.removed),
                    len(report.protected_removed),
                    report.bytes_freed / 1e6,
                    report.bytes_kept / 1e6,
                )
                if on_sweep is not None:
                    await on_sweep(report)
        except Exception:
            log.exception("retention sweep failed; trying again in %.0f s", interval_s)
        await asyncio.sleep(interval_s)


# --------------------------------------------------------------------------------- file helpers
def _safe_name(name: str) -> str:
    cleaned = _UNSAFE.sub("_", Path(name).name).lstrip(".")
    return cleaned[:120] or "image.png"


def _old_name(folder: Path, entry: str, names: set[str], job_id: int) -> str:
    if f"{entry}.name" in names:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return (folder / f"{entry}.name").read_text().strip() or f"imagine_{job_id}_{entry}.png"
    return f"imagine_{job_id}_{entry}.png"


def _write_atomically(folder: Path, final: str, data: bytes) -> None:
    temp = folder / f".{final}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        with open(temp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, folder / final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _measure(folder: Path, now: float) -> tuple[float, int, int]:
    """(last written, bytes, bytes of stale temp files deleted) of one set's folder."""
    written_at: float | None = None
    size = freed = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                continue
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                if now - info.st_mtime > STALE_AFTER_S:
                    Path(entry.path).unlink(missing_ok=True)
                    freed += info.st_size
                else:
                    size += info.st_size  # maybe a write in progress elsewhere: leave it
                continue
            size += info.st_size
            written_at = info.st_mtime if written_at is None else max(written_at, info.st_mtime)
    if written_at is None:  # an empty set: the folder's own time
        written_at = folder.stat().st_mtime
    return written_at, size, freed


def _delete_tree(path: Path) -> None:
    def report(_func: object, failed: str, exc_info: tuple[object, BaseException, object]) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):  # already gone is what we want
            log.warning("could not delete %s: %s", failed, exc_info[1])

    shutil.rmtree(path, onerror=report)
