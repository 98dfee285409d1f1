"""SQLite storage for jobs, shares and per-guild settings (aiosqlite, never blocks the loop).

Plain SQL in small async methods that return frozen dataclasses. The schema is versioned with
``PRAGMA user_version``; ``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1`` inside
one transaction, so a crash mid-migration leaves the old version intact.

Durability: WAL journal + ``synchronous=FULL`` + autocommit. Every write is its own committed
transaction and is fsynced before the call returns, so once a method returns, neither kill -9 nor
a power cut loses it. The bot writes a handful of rows per job, so the fsync cost is negligible
next to a diffusion run. See docs/storage-and-queue.md.

Discord ids are plain ints; this module never imports discord.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import aiosqlite

log = logging.getLogger(__name__)

JobKind = Literal[
    "imagine", "reroll", "variation", "upscale", "single", "zoom", "reply", "remix", "describe"
]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
SafetyMode = Literal["spoiler", "withhold", "off"]

JOB_KINDS: frozenset[str] = frozenset(get_args(JobKind))
JOB_STATUSES: frozenset[str] = frozenset(get_args(JobStatus))
SAFETY_MODES: frozenset[str] = frozenset(get_args(SafetyMode))
#: Kinds made from a picture of another job (``parent_job_id``, image ``parent_index``): they
#: need that picture's stored file, and re-rolling one works on the same picture again.
DERIVED_KINDS: frozenset[str] = frozenset({"variation", "upscale", "zoom"})
UNFINISHED_STATUSES: frozenset[str] = frozenset({"queued", "running"})
FINISHED_STATUSES: frozenset[str] = frozenset({"done", "failed", "cancelled"})

# Discord interaction tokens die 15 minutes after the interaction was created (FACTS.md).
INTERACTION_TOKEN_LIFETIME_S = 15 * 60

# Migration n takes user_version n -> n + 1. Append new scripts; never edit shipped ones.
MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the first design.
    """
    CREATE TABLE jobs (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        kind              TEXT    NOT NULL,
        parent_job_id     INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        parent_index      INTEGER,
        requester_id      INTEGER NOT NULL,
        guild_id          INTEGER,
        channel_id        INTEGER NOT NULL,
        prompt            TEXT    NOT NULL,
        negative_prompt   TEXT    NOT NULL DEFAULT '',
        seed              INTEGER NOT NULL,
        seeds             TEXT    NOT NULL DEFAULT '[]',
        width             INTEGER NOT NULL,
        height            INTEGER NOT NULL,
        steps             INTEGER NOT NULL,
        guidance          REAL    NOT NULL,
        count             INTEGER NOT NULL,
        status            TEXT    NOT NULL DEFAULT 'queued',
        error             TEXT,
        created_at        REAL    NOT NULL,
        started_at        REAL,
        finished_at       REAL,
        status_message_id INTEGER,
        result_message_id INTEGER
    );
    CREATE INDEX jobs_by_status ON jobs(status, id);
    CREATE INDEX jobs_by_requester ON jobs(requester_id, id);
    CREATE INDEX jobs_by_result_message ON jobs(result_message_id);

    CREATE TABLE guild_settings (
        guild_id            INTEGER PRIMARY KEY,
        allowed_channel_ids TEXT NOT NULL DEFAULT '[]',
        blocklist_add       TEXT NOT NULL DEFAULT '[]',
        blocklist_remove    TEXT NOT NULL DEFAULT '[]',
        safety_mode         TEXT NOT NULL DEFAULT 'spoiler'
    );
    """,
    # 1 -> 2: translation, img2img, interaction tokens (follow-ups after a restart),
    # reply-to-regenerate, NSFW channels, the showcase.
    """
    ALTER TABLE jobs ADD COLUMN locale TEXT;
    ALTER TABLE jobs ADD COLUMN interpreted_prompt TEXT;
    ALTER TABLE jobs ADD COLUMN raw INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN strength REAL;
    ALTER TABLE jobs ADD COLUMN interaction_id INTEGER;
    ALTER TABLE jobs ADD COLUMN application_id INTEGER;
    ALTER TABLE jobs ADD COLUMN interaction_token TEXT;
    ALTER TABLE jobs ADD COLUMN token_expires_at REAL;
    ALTER TABLE jobs ADD COLUMN reply_to_message_id INTEGER;
    ALTER TABLE jobs ADD COLUMN images TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN nsfw_channel INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_by_status_message ON jobs(status_message_id);

    ALTER TABLE guild_settings ADD COLUMN showcase_channel_id INTEGER;
    ALTER TABLE guild_settings ADD COLUMN per_user_limit INTEGER;

    CREATE TABLE shares (
        job_id              INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        image_index         INTEGER NOT NULL CHECK (image_index >= 0),
        guild_id            INTEGER,
        showcase_channel_id INTEGER NOT NULL,
        showcase_message_id INTEGER,
        shared_by           INTEGER NOT NULL,
        shared_at           REAL    NOT NULL,
        UNIQUE (job_id, image_index)
    );
    CREATE INDEX shares_by_message ON shares(showcase_message_id);
    """,
    # 2 -> 3: per-image safety verdicts, so a flagged image stays a spoiler when it is shared
    # or posted alone (U), and a withheld one keeps its number (seed, file, buttons) in the set.
    """
    ALTER TABLE jobs ADD COLUMN flagged TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN withheld TEXT NOT NULL DEFAULT '[]';
    """,
    # 3 -> 4: the server gallery. Display names as they were when the job was made and shared
    # (the gallery shows names, never ids); whether the showcase was age-restricted; whether a
    # share is still listed (its images purged: no); the per-server opt-in and its secret slug.
    """
    ALTER TABLE jobs ADD COLUMN requester_name TEXT;
    ALTER TABLE shares ADD COLUMN shared_by_name TEXT;
    ALTER TABLE shares ADD COLUMN showcase_nsfw INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE shares ADD COLUMN listed INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX shares_by_guild
        ON shares(guild_id, shared_at DESC, job_id DESC, image_index DESC);
    ALTER TABLE guild_settings ADD COLUMN gallery_enabled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE guild_settings ADD COLUMN gallery_slug TEXT;
    CREATE UNIQUE INDEX guild_settings_by_gallery_slug ON guild_settings(gallery_slug);
    """,
    # 4 -> 5: the image tools. U1-U4 now upscale (kind 'upscale', twice the size); what 'upscale'
    # meant before (post image i of the set alone) is kind 'single'. Zoom Out stores how far.
    # Image prompts: whether the job brought an uploaded picture (stored as its image 0), and
    # whether its pictures trace back to one (then the non-NSFW rules apply everywhere).
    """
    UPDATE jobs SET kind = 'single' WHERE kind = 'upscale';
    ALTER TABLE jobs ADD COLUMN zoom REAL;
    ALTER TABLE jobs ADD COLUMN uploaded INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN from_upload INTEGER NOT NULL DEFAULT 0;
    """,
    # 5 -> 6: prompt craft. Tile mode (seamless textures) is part of a job's recipe.
    """
    ALTER TABLE jobs ADD COLUMN tile INTEGER NOT NULL DEFAULT 0;
    """,
    # 6 -> 7: personal presets (/prefer), one row per user and preset: 'suffix', 'negative',
    # 'aspect_ratio' or 'option:<name>'. The same in every server; shown to their owner only.
    """
    CREATE TABLE presets (
        user_id INTEGER NOT NULL,
        name    TEXT NOT NULL,
        value   TEXT NOT NULL,
        PRIMARY KEY (user_id, name)
    );
    """,
    # 7 -> 8: the set one command made (permutations, --repeat): the id of its first job, so
    # that after a restart the set still takes one of its user's queue places.
    """
    ALTER TABLE jobs ADD COLUMN group_id INTEGER;
    """,
    # 8 -> 9: curated styles (IMAGINE_STYLES). A job's style is part of its recipe ('' = none);
    # a server may offer only some of the styles ('[]' = all).
    """
    ALTER TABLE jobs ADD COLUMN style TEXT NOT NULL DEFAULT '';
    ALTER TABLE guild_settings ADD COLUMN allowed_styles TEXT NOT NULL DEFAULT '[]';
    """,
    # 9 -> 10: /describe. A 'describe' job (its uploaded picture is its image 0) ends with the
    # prompts it proposes, which its buttons 1-4 run after any restart.
    """
    ALTER TABLE jobs ADD COLUMN captions TEXT NOT NULL DEFAULT '[]';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


# Which shares a server's gallery shows (one ``?``: the guild id). An age-restricted source or
# showcase never reaches the web, whatever else is true.
_LISTABLE = (
    "WHERE shares.guild_id = ? AND shares.listed = 1 AND shares.showcase_message_id IS NOT NULL "
    "AND shares.showcase_nsfw = 0 AND jobs.nsfw_channel = 0"
)


MAX_SOURCES = 25
"""Longest chain of sources ``Storage.sources`` follows (re-roll of a variation of ...)."""


class StorageError(RuntimeError):
    """The database cannot be used by this version of the bot."""


@dataclass(frozen=True)
class NewJob:
    """What the bot knows when it accepts a command; ``Storage.create_job`` stores it.

    ``seed`` is the first seed (image i uses seed + i). ``interpreted_prompt`` is what the model
    gets when it differs from ``prompt`` (e.g. translated); None means the same text.
    ``parent_index`` is the 1-based image index a derived job (``DERIVED_KINDS``) works on;
    ``strength`` its image-to-image strength, ``zoom`` how far a Zoom Out shrinks the picture.
    """

    kind: JobKind
    requester_id: int
    channel_id: int
    prompt: str
    seed: int
    width: int
    height: int
    guild_id: int | None = None
    parent_job_id: int | None = None
    parent_index: int | None = None
    locale: str | None = None
    interpreted_prompt: str | None = None
    raw: bool = False
    negative_prompt: str = ""
    steps: int = 4
    guidance: float = 1.0
    count: int = 4
    strength: float | None = None
    interaction_id: int | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    reply_to_message_id: int | None = None
    nsfw_channel: bool = False
    requester_name: str | None = None  # display name when asked (the gallery's "made by")
    zoom: float | None = None
    uploaded: bool = False  # starts from a picture the requester uploaded (its image 0)
    from_upload: bool = False  # its pictures trace back to an upload: non-NSFW rules apply
    tile: bool = False  # seamless texture (circular padding)
    group_id: int | None = None  # the first job of the set one command made (permutations)
    style: str = ""  # the IMAGINE_STYLES style it was made with ("": none)


@dataclass(frozen=True)
class Job:
    """One row of ``jobs``. Timestamps are unix seconds (float)."""

    id: int
    kind: JobKind
    requester_id: int
    channel_id: int
    prompt: str
    seed: int
    width: int
    height: int
    status: JobStatus
    created_at: float
    guild_id: int | None = None
    parent_job_id: int | None = None
    parent_index: int | None = None
    locale: str | None = None
    interpreted_prompt: str | None = None
    raw: bool = False
    negative_prompt: str = ""
    seeds: tuple[int, ...] = ()
    steps: int = 4
    guidance: float = 1.0
    count: int = 4
    strength: float | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    interaction_id: int | None = None
    application_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    token_expires_at: float | None = None
    status_message_id: int | None = None
    result_message_id: int | None = None
    reply_to_message_id: int | None = None
    images: tuple[str, ...] = ()
    nsfw_channel: bool = False
    flagged: tuple[int, ...] = ()  # 1-based images the safety filter flagged (spoilered)
    withheld: tuple[int, ...] = ()  # 1-based images the safety filter withheld (not stored)
    requester_name: str | None = None  # the requester's display name when they asked
    zoom: float | None = None  # Zoom Out: how much the picture shrank
    uploaded: bool = False  # starts from a picture the requester uploaded (stored as image 0)
    from_upload: bool = False  # its pictures trace back to an upload: non-NSFW rules apply
    tile: bool = False  # seamless texture (circular padding)
    group_id: int | None = None  # the first job of the set one command made (permutations)
    style: str = ""  # the IMAGINE_STYLES style it was made with ("": none)
    captions: tuple[str, ...] = ()  # a 'describe' job's proposed prompts, in button order

    @property
    def derived(self) -> bool:
        """Made from a picture of another job (a variation, upscale or zoom)."""
        return self.kind in DERIVED_KINDS and self.parent_job_id is not None

    @property
    def model_prompt(self) -> str:
        """The text the model gets: the interpreted prompt, or the user's own."""
        return self.interpreted_prompt if self.interpreted_prompt is not None else self.prompt

    @property
    def finished(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self.status in FINISHED_STATUSES

    def token_usable(self, now: float | None = None, margin_s: float = 30.0) -> bool:
        """Whether the interaction token can still be used for follow-ups and edits.

        ``margin_s`` keeps a safety gap: a request sent just before expiry may land after it.
        """
        if self.interaction_token is None or self.token_expires_at is None:
            return False
        now = time.time() if now is None else now
        return now + margin_s < self.token_expires_at


@dataclass(frozen=True)
class Share:
    """A job (``image_index`` 0) or one of its images (1-based) posted to a showcase channel."""

    job_id: int
    image_index: int
    guild_id: int | None
    showcase_channel_id: int
    showcase_message_id: int | None
    shared_by: int
    shared_at: float
    shared_by_name: str | None = None  # display name of who shared it, when they did
    showcase_nsfw: bool = False  # the showcase channel was age-restricted
    listed: bool = True  # shown in the server's gallery (False once its images are purged)


@dataclass(frozen=True)
class GalleryEntry:
    """A share listed in a server's gallery, with its job."""

    share: Share
    job: Job


@dataclass(frozen=True)
class Presets:
    """One user's /prefer presets: what their new prompts get unless they say otherwise."""

    user_id: int
    suffix: str = ""  # appended to each new prompt
    negative: str = ""  # the negative prompt when none is given
    aspect_ratio: str | None = None  # the aspect ratio when none is chosen
    options: tuple[tuple[str, str], ...] = ()  # (name, value): ``--name`` in a prompt -> value

    @property
    def empty(self) -> bool:
        """No preset set."""
        return not (self.suffix or self.negative or self.aspect_ratio or self.options)


PRESET_KEYS = frozenset({"suffix", "negative", "aspect_ratio"})
"""Preset names besides options (stored as ``option:<name>``)."""


@dataclass(frozen=True)
class GuildSettings:
    """Per-guild settings; a guild without a row gets these defaults.

    ``allowed_channel_ids`` empty means every channel. ``per_user_limit`` None means the bot's
    default queue limit.
    """

    guild_id: int
    showcase_channel_id: int | None = None
    allowed_channel_ids: tuple[int, ...] = ()
    blocklist_add: tuple[str, ...] = ()
    blocklist_remove: tuple[str, ...] = ()
    safety_mode: SafetyMode = "spoiler"
    per_user_limit: int | None = None
    gallery_enabled: bool = False
    gallery_slug: str | None = None  # the secret part of the gallery's address, once made
    allowed_styles: tuple[str, ...] = ()  # the styles /imagine offers here (empty: all)

    def allows_channel(self, channel_id: int) -> bool:
        """True when /imagine may be used in ``channel_id``."""
        return not self.allowed_channel_ids or channel_id in self.allowed_channel_ids


_JOB_JSON_COLUMNS = {"seeds", "images", "flagged", "withheld", "captions"}
_JOB_BOOL_COLUMNS = {"raw", "nsfw_channel", "uploaded", "from_upload", "tile"}
_JOB_FIELDS = tuple(f.name for f in fields(Job))
_SETTINGS_JSON_COLUMNS = (
    "allowed_channel_ids",
    "blocklist_add",
    "blocklist_remove",
    "allowed_styles",
)
_SETTINGS_FIELDS = tuple(f.name for f in fields(GuildSettings) if f.name != "guild_id")
_SETTINGS_BOOL_COLUMNS = ("gallery_enabled",)
_SHARE_FIELDS = tuple(f.name for f in fields(Share))
_SHARE_BOOL_COLUMNS = ("showcase_nsfw", "listed")


def _job_from_row(row: aiosqlite.Row) -> Job:
    values: dict[str, Any] = {}
    for name in _JOB_FIELDS:
        value = row[name]
        if name in _JOB_JSON_COLUMNS:
            value = tuple(json.loads(value))
        elif name in _JOB_BOOL_COLUMNS:
            value = bool(value)
        values[name] = value
    return Job(**values)


def _settings_from_row(row: aiosqlite.Row) -> GuildSettings:
    values: dict[str, Any] = {"guild_id": row["guild_id"]}
    for name in _SETTINGS_FIELDS:
        value = row[name]
        if name in _SETTINGS_JSON_COLUMNS:
            value = tuple(json.loads(value))
        elif name in _SETTINGS_BOOL_COLUMNS:
            value = bool(value)
        values[name] = value
    return GuildSettings(**values)


def _share_from_row(row: aiosqlite.Row, prefix: str = "") -> Share:
    values = {name: row[prefix + name] for name in _SHARE_FIELDS}
    for name in _SHARE_BOOL_COLUMNS:
        values[name] = bool(values[name])
    return Share(**values)


async def schema_version(db: aiosqlite.Connection) -> int:
    """The database's ``PRAGMA user_version``."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(
    db: aiosqlite.Connection,
    *,
    target: int | None = None,
    migrations: Sequence[str] = MIGRATIONS,
) -> int:
    """Bring ``db`` forward to ``target`` (default: the latest version).

    Each step runs in its own transaction together with the ``user_version`` bump, so a failed
    step leaves the database at the previous version. ``db`` must be in autocommit mode
    (``isolation_level=None``).

    Returns:
        The version the database is at afterwards.

    Raises:
        StorageError: the database is newer than ``migrations`` (downgrades are not supported).
    """
    target = len(migrations) if target is None else target
    current = await schema_version(db)
    if current > len(migrations):
        raise StorageError(
            f"database schema version {current} is newer than this bot knows "
            f"({len(migrations)}); upgrade the bot or restore a backup"
        )
    for version in range(current, target):
        log.info("migrating database schema %d -> %d", version, version + 1)
        script = (
            f"BEGIN IMMEDIATE;\n{migrations[version]}\n"
            f"PRAGMA user_version = {version + 1};\nCOMMIT;"
        )
        try:
            await db.executescript(script)
        except Exception:
            if db.in_transaction:
                await db.rollback()
            raise
    return await schema_version(db)


class Storage:
    """The bot's SQLite database. Create with ``await Storage.open(path)``; one per process."""

    def __init__(self, db: aiosqlite.Connection, *, clock: Callable[[], float] = time.time):
        self._db = db
        self._clock = clock

    @classmethod
    async def open(cls, path: str | Path, *, clock: Callable[[], float] = time.time) -> Storage:
        """Open (creating parent dirs and the file if needed) and migrate to the latest schema.

        Args:
            path: the database file, e.g. ``data_dir / "imagine.sqlite3"``.
            clock: unix-time source for timestamps (tests pass a fake one).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, so every write below is committed when it returns.
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed write survives a power cut too, not only kill -9. Writes are
            # rare (a few per job), so the extra fsync costs nothing noticeable.
            await db.execute("PRAGMA synchronous = FULL")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA busy_timeout = 5000")
            version = await migrate(db)
        except BaseException:
            await db.close()
            raise
        log.info("storage open at %s (schema version %d)", path, version)
        return cls(db, clock=clock)

    async def close(self) -> None:
        """Close the connection (everything is already committed)."""
        await self._db.close()

    async def schema_version(self) -> int:
        """The schema version of the open database."""
        return await schema_version(self._db)

    # --- jobs -------------------------------------------------------------------------------

    async def create_job(self, new: NewJob) -> Job:
        """Store a new job with status ``queued`` and return it with its id.

        When an interaction token is given its expiry is set to creation + 15 minutes.
        """
        if new.kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {new.kind!r}")
        now = self._clock()
        expires = now + INTERACTION_TOKEN_LIFETIME_S if new.interaction_token else None
        columns = {f.name: getattr(new, f.name) for f in fields(NewJob)}
        for name in _JOB_BOOL_COLUMNS:
            columns[name] = int(columns[name])
        columns.update(status="queued", created_at=now, token_expires_at=expires)
        names = ", ".join(columns)
        marks = ", ".join(f":{name}" for name in columns)
        async with self._db.execute(
            f"INSERT INTO jobs ({names}) VALUES ({marks}) RETURNING id", columns
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None  # INSERT ... RETURNING always yields the row
        # Read the row back rather than trusting RETURNING *: RETURNING shows values before
        # column affinity applies (guidance=1 would come back as int, not 1.0).
        job = await self.get_job(row[0])
        assert job is not None
        log.debug("job %d created (%s by %d)", job.id, job.kind, job.requester_id)
        return job

    async def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or None."""
        return await self._fetch_job("SELECT * FROM jobs WHERE id = ?", (job_id,))

    async def sources(self, job_id: int, limit: int = MAX_SOURCES) -> list[Job]:
        """The jobs ``job_id`` was made from, nearest first, back to the first /imagine (at
        most ``limit``)."""
        query = """
            WITH RECURSIVE chain(id, depth) AS (
                SELECT parent_job_id, 1 FROM jobs WHERE id = ? AND parent_job_id IS NOT NULL
                UNION ALL
                SELECT jobs.parent_job_id, chain.depth + 1
                FROM jobs JOIN chain ON jobs.id = chain.id
                WHERE jobs.parent_job_id IS NOT NULL AND chain.depth < ?
            )
            SELECT jobs.* FROM chain JOIN jobs ON jobs.id = chain.id ORDER BY chain.depth
        """
        return await self._fetch_jobs(query, (job_id, limit))

    async def mark_running(self, job_id: int) -> Job | None:
        """queued|running -> running, setting ``started_at``.

        Running is accepted too so a job interrupted by a restart can simply be started again.

        Returns:
            The updated job, or None when it does not exist or is already finished.
        """
        return await self._transition(job_id, "running", "started_at = :now")

    async def mark_done(
        self,
        job_id: int,
        seeds: Iterable[int],
        result_message_id: int | None,
        images: Iterable[str] | None = None,
        *,
        flagged: Iterable[int] = (),
        withheld: Iterable[int] = (),
        captions: Iterable[str] = (),
    ) -> Job | None:
        """queued|running -> done with the seeds used and the result message.

        Args:
            seeds: one seed per image, in order.
            result_message_id: the message with the images (None if it could not be posted).
            images: attachment URLs or file names, in order (optional).
            flagged: 1-based indexes of images the safety filter flagged (shown as spoilers).
            withheld: 1-based indexes of images the safety filter withheld (never posted).
            captions: the prompts a 'describe' job proposes.

        Returns:
            The updated job, or None when it does not exist or is already finished.
        """
        return await self._transition(
            job_id,
            "done",
            "finished_at = :now, error = NULL, seeds = :seeds, "
            "result_message_id = :result_message_id, images = :images, "
            "flagged = :flagged, withheld = :withheld, captions = :captions",
            seeds=json.dumps([int(s) for s in seeds]),
            result_message_id=result_message_id,
            images=json.dumps([str(i) for i in images or ()]),
            flagged=json.dumps(sorted(int(i) for i in flagged)),
            withheld=json.dumps(sorted(int(i) for i in withheld)),
            captions=json.dumps([str(c) for c in captions], ensure_ascii=False),
        )

    async def mark_failed(self, job_id: int, error: str) -> Job | None:
        """queued|running -> failed with a user-facing ``error`` text.

        Returns:
            The updated job, or None when it does not exist or is already finished.
        """
        return await self._transition(
            job_id,
            "failed",
            "finished_at = :now, error = :error",
            error=error,
        )

    async def mark_cancelled(self, job_id: int) -> Job | None:
        """queued|running -> cancelled.

        Returns:
            The updated job, or None when it does not exist or is already finished (e.g. it
            completed just before the user clicked cancel).
        """
        return await self._transition(job_id, "cancelled", "finished_at = :now")

    async def set_status_message(self, job_id: int, message_id: int | None) -> Job | None:
        """Remember (or with None, forget) the bot's queued/progress message for the job."""
        return await self._update_job(job_id, "status_message_id = :value", value=message_id)

    async def set_result_message(self, job_id: int, message_id: int | None) -> Job | None:
        """Remember the message holding the job's images.

        Pass None when that message was deleted: the job row (seeds, prompt, shares) is kept
        for history and buttons that still point at it, but replies and context-menu lookups
        through ``job_by_message`` no longer find it.
        """
        return await self._update_job(job_id, "result_message_id = :value", value=message_id)

    async def set_interpreted_prompt(self, job_id: int, prompt: str | None) -> Job | None:
        """Record what the model actually got (e.g. a translation), None = the user's text."""
        return await self._update_job(job_id, "interpreted_prompt = :value", value=prompt)

    async def unfinished_jobs(self) -> list[Job]:
        """Jobs still queued or running, oldest first: what to resume after a restart."""
        return await self._fetch_jobs(
            "SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY id", ()
        )

    async def recent_jobs(self, requester_id: int, limit: int = 10) -> list[Job]:
        """The requester's newest jobs first, at most ``limit``."""
        return await self._fetch_jobs(
            "SELECT * FROM jobs WHERE requester_id = ? ORDER BY id DESC LIMIT ?",
            (requester_id, limit),
        )

    async def job_by_message(self, message_id: int) -> Job | None:
        """The job whose result message is ``message_id`` (for replies and context menus)."""
        return await self._fetch_job(
            "SELECT * FROM jobs WHERE result_message_id = ? ORDER BY id DESC LIMIT 1",
            (message_id,),
        )

    async def job_by_status_message(self, message_id: int) -> Job | None:
        """The job whose queued/progress message is ``message_id``."""
        return await self._fetch_job(
            "SELECT * FROM jobs WHERE status_message_id = ? ORDER BY id DESC LIMIT 1",
            (message_id,),
        )

    # --- shares -----------------------------------------------------------------------------

    async def add_share(
        self,
        job_id: int,
        image_index: int,
        *,
        guild_id: int | None,
        showcase_channel_id: int,
        shared_by: int,
        showcase_message_id: int | None = None,
        shared_by_name: str | None = None,
        showcase_nsfw: bool = False,
    ) -> Share | None:
        """Claim a share of the job (``image_index`` 0) or of one image (1-based).

        Claim first and post afterwards: the unique constraint makes two quick clicks post once.
        Then call ``set_share_message`` with the showcase message, or ``remove_share`` if
        posting failed.

        Returns:
            The new share, or None when it was already shared.
        """
        share = await self._fetch_share(
            "INSERT INTO shares (job_id, image_index, guild_id, showcase_channel_id, "
            "showcase_message_id, shared_by, shared_at, shared_by_name, showcase_nsfw) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id, image_index) DO NOTHING RETURNING *",
            (
                job_id,
                image_index,
                guild_id,
                showcase_channel_id,
                showcase_message_id,
                shared_by,
                self._clock(),
                shared_by_name,
                int(showcase_nsfw),
            ),
        )
        return share

    async def get_share(self, job_id: int, image_index: int) -> Share | None:
        """The share of this job/image, or None."""
        return await self._fetch_share(
            "SELECT * FROM shares WHERE job_id = ? AND image_index = ?", (job_id, image_index)
        )

    async def share_by_message(self, showcase_message_id: int) -> Share | None:
        """The share posted as ``showcase_message_id``, or None."""
        return await self._fetch_share(
            "SELECT * FROM shares WHERE showcase_message_id = ?", (showcase_message_id,)
        )

    async def shared_job_ids(self) -> set[int]:
        """Ids of jobs with at least one share (retention keeps their files longest)."""
        async with self._db.execute("SELECT DISTINCT job_id FROM shares") as cursor:
            rows = await cursor.fetchall()
        return {int(row[0]) for row in rows}

    async def set_share_message(
        self, job_id: int, image_index: int, showcase_message_id: int | None
    ) -> Share | None:
        """Record the showcase message of a claimed share."""
        return await self._fetch_share(
            "UPDATE shares SET showcase_message_id = ? WHERE job_id = ? AND image_index = ? "
            "RETURNING *",
            (showcase_message_id, job_id, image_index),
        )

    async def remove_share(self, job_id: int, image_index: int) -> bool:
        """Forget a share (posting failed, or the showcase message was deleted)."""
        async with self._db.execute(
            "DELETE FROM shares WHERE job_id = ? AND image_index = ?", (job_id, image_index)
        ) as cursor:
            return cursor.rowcount > 0

    async def shares_of_job(self, job_id: int) -> list[Share]:
        """Every share of the job (the whole set and single images)."""
        async with self._db.execute(
            "SELECT * FROM shares WHERE job_id = ? ORDER BY image_index", (job_id,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [_share_from_row(row) for row in rows]

    async def remove_share_by_message(self, showcase_message_id: int) -> Share | None:
        """Forget the share posted as ``showcase_message_id`` (the post was deleted)."""
        return await self._fetch_share(
            "DELETE FROM shares WHERE showcase_message_id = ? RETURNING *", (showcase_message_id,)
        )

    async def unlist_shares(self, job_ids: Iterable[int]) -> list[Share]:
        """Take these jobs' shares out of the gallery (their images were purged).

        The rows stay, so their showcase posts keep working as the job's messages (Remix).

        Returns:
            The shares that were listed until now.
        """
        ids = sorted({int(i) for i in job_ids})
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        async with self._db.execute(
            f"UPDATE shares SET listed = 0 WHERE listed = 1 AND job_id IN ({marks}) RETURNING *",
            ids,
        ) as cursor:
            rows = await cursor.fetchall()
        return [_share_from_row(row) for row in rows]

    async def gallery_page(
        self, guild_id: int, *, limit: int, offset: int = 0
    ) -> tuple[list[GalleryEntry], int]:
        """One page of a server's gallery, newest share first, and how many entries it has.

        Lists shares that are posted, listed, and neither made in nor shared to an
        age-restricted channel.
        """
        async with self._db.execute(
            f"SELECT COUNT(*) FROM shares JOIN jobs ON jobs.id = shares.job_id {_LISTABLE}",
            (guild_id,),
        ) as cursor:
            row = await cursor.fetchone()
        total = int(row[0]) if row else 0
        entries = await self._gallery_entries(
            f"{_LISTABLE} ORDER BY shares.shared_at DESC, shares.job_id DESC, "
            "shares.image_index DESC LIMIT ? OFFSET ?",
            (guild_id, limit, offset),
        )
        return entries, total

    async def gallery_entries_of_job(self, guild_id: int, job_id: int) -> list[GalleryEntry]:
        """The listable shares of one job in a server's gallery (none: not in the gallery)."""
        return await self._gallery_entries(
            f"{_LISTABLE} AND shares.job_id = ? ORDER BY shares.image_index", (guild_id, job_id)
        )

    async def _gallery_entries(self, where: str, params: Any) -> list[GalleryEntry]:
        shares = ", ".join(f"shares.{name} AS share_{name}" for name in _SHARE_FIELDS)
        async with self._db.execute(
            f"SELECT jobs.*, {shares} FROM shares JOIN jobs ON jobs.id = shares.job_id {where}",
            params,
        ) as cursor:
            rows = await cursor.fetchall()
        return [GalleryEntry(_share_from_row(row, "share_"), _job_from_row(row)) for row in rows]

    # --- guild settings ---------------------------------------------------------------------

    async def guild_settings(self, guild_id: int) -> GuildSettings:
        """The guild's settings, or the defaults when it has none stored."""
        async with self._db.execute(
            "SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return _settings_from_row(row) if row else GuildSettings(guild_id=guild_id)

    async def presets(self, user_id: int) -> Presets:
        """The user's presets (none stored: all empty)."""
        async with self._db.execute(
            "SELECT name, value FROM presets WHERE user_id = ? ORDER BY name", (user_id,)
        ) as cursor:
            rows = await cursor.fetchall()
        values = {name: value for name, value in rows}
        options = tuple(
            (name.removeprefix("option:"), value)
            for name, value in values.items()
            if name.startswith("option:")
        )
        return Presets(
            user_id=user_id,
            suffix=values.get("suffix", ""),
            negative=values.get("negative", ""),
            aspect_ratio=values.get("aspect_ratio"),
            options=options,
        )

    async def set_preset(self, user_id: int, name: str, value: str | None) -> None:
        """Set one preset (``suffix``, ``negative``, ``aspect_ratio`` or ``option:<name>``);
        an empty or None value removes it.

        Raises:
            ValueError: an unknown preset name.
        """
        if name not in PRESET_KEYS and not (name.startswith("option:") and len(name) > 7):
            raise ValueError(f"unknown preset {name!r}")
        if value:
            await self._db.execute(
                "INSERT INTO presets (user_id, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, name) DO UPDATE SET value = excluded.value",
                (user_id, name, value),
            )
        else:
            await self._db.execute(
                "DELETE FROM presets WHERE user_id = ? AND name = ?", (user_id, name)
            )

    async def reset_presets(self, user_id: int) -> int:
        """Remove all of the user's presets; how many there were."""
        async with self._db.execute("DELETE FROM presets WHERE user_id = ?", (user_id,)) as cur:
            return cur.rowcount

    async def guild_by_gallery_slug(self, slug: str) -> GuildSettings | None:
        """The settings of the server whose gallery address has ``slug``, or None."""
        async with self._db.execute(
            "SELECT * FROM guild_settings WHERE gallery_slug = ?", (slug,)
        ) as cursor:
            row = await cursor.fetchone()
        return _settings_from_row(row) if row else None

    async def update_guild_settings(self, guild_id: int, /, **changes: Any) -> GuildSettings:
        """Change some settings of a guild (others keep their value) and return all of them.

        Keyword names are ``GuildSettings`` fields, e.g.
        ``update_guild_settings(g, safety_mode="withhold", allowed_channel_ids=[1, 2])``.

        Raises:
            ValueError: unknown field or invalid value.
        """
        unknown = set(changes) - set(_SETTINGS_FIELDS)
        if unknown:
            raise ValueError(f"unknown guild setting(s): {', '.join(sorted(unknown))}")
        if "safety_mode" in changes and changes["safety_mode"] not in SAFETY_MODES:
            raise ValueError(f"safety_mode must be one of {sorted(SAFETY_MODES)}")
        for name in _SETTINGS_JSON_COLUMNS:
            # A lone string would be stored as a list of its characters.
            if name in changes and isinstance(changes[name], str | bytes):
                raise ValueError(f"{name} must be a list, not a string")
        limit = changes.get("per_user_limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError("per_user_limit must be a positive integer or None")
        if not changes:
            return await self.guild_settings(guild_id)
        values: dict[str, Any] = {"guild_id": guild_id}
        for name, value in changes.items():
            values[name] = json.dumps(list(value)) if name in _SETTINGS_JSON_COLUMNS else value
        names = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        updates = ", ".join(f"{name} = excluded.{name}" for name in changes)
        async with self._db.execute(
            f"INSERT INTO guild_settings ({names}) VALUES ({marks}) "
            f"ON CONFLICT (guild_id) DO UPDATE SET {updates} RETURNING *",
            values,
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return _settings_from_row(row)

    # --- helpers ----------------------------------------------------------------------------

    async def _transition(
        self,
        job_id: int,
        target: JobStatus,
        assignments: str,
        allowed_from: tuple[str, ...] = ("queued", "running"),
        **params: Any,
    ) -> Job | None:
        # One conditional UPDATE: atomic, so a cancel racing a completion cannot both win.
        marks = ", ".join(f"'{status}'" for status in allowed_from)
        job = await self._fetch_job(
            f"UPDATE jobs SET status = :target, {assignments} "
            f"WHERE id = :job_id AND status IN ({marks}) RETURNING *",
            {"job_id": job_id, "target": target, "now": self._clock(), **params},
        )
        if job is None:
            log.info("job %d: not moved to %s (missing or already finished)", job_id, target)
        else:
            log.debug("job %d -> %s", job_id, target)
        return job

    async def _update_job(self, job_id: int, assignments: str, **params: Any) -> Job | None:
        return await self._fetch_job(
            f"UPDATE jobs SET {assignments} WHERE id = :job_id RETURNING *",
            {"job_id": job_id, **params},
        )

    async def _fetch_job(self, sql: str, params: Any) -> Job | None:
        async with self._db.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return _job_from_row(row) if row else None

    async def _fetch_jobs(self, sql: str, params: Any) -> list[Job]:
        async with self._db.execute(sql, params) as cursor:
            rows = await cursor.fetchall()
        return [_job_from_row(row) for row in rows]

    async def _fetch_share(self, sql: str, params: Any) -> Share | None:
        async with self._db.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return _share_from_row(row) if row else None
