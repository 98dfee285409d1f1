"""What crosses between the bot and a GPU worker: tickets in, events out, with a wire format.

A ``Ticket`` is one accepted job as the GPU side needs it (the generation request, how to check
and encode its images); the GPU side answers with events: ``Started`` (a batch began),
``Progress`` (a step, with an optional preview PNG), ``Finished`` (the encoded files, seeds and
safety verdicts; a ``describe`` job's prompts) or ``Failed`` (a message for the user). All are
frozen and carry bytes, never PIL objects, so the in-process backend and the Redis one move
exactly the same values.

On the wire (Redis stream entries) every value is a flat ``{field: bytes}`` map: ``v`` (the
schema version), ``type``, ``meta`` (JSON) and the binary parts (``init``, ``preview``,
``file0``...) as raw bytes, so images are never base64-inflated. Never pickle: bot and workers
are upgraded one at a time, and a version this code does not know raises ``WireVersionError``
instead of being guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

from engine.requests import GenerationRequest

SCHEMA_VERSION = 1
SafetyMode = Literal["off", "spoiler", "withhold"]
FailReason = Literal["engine", "timeout", "version", "gave_up", "crash", "refused"]
DEFAULT_FILE_LIMIT = 10 * 2**20
# Request fields added after schema version 1 shipped, with the values that mean "as before".
_OPTIONAL_REQUEST_FIELDS = {"operation": "generate", "zoom": 1.0, "tile": False, "style": ""}


class WireError(ValueError):
    """A stream entry is not a ticket or event this code can read."""

    def __init__(self, message: str, job_id: int | None = None):
        super().__init__(message)
        self.job_id = job_id


class WireVersionError(WireError):
    """The entry was written with a schema version this code does not know."""


@dataclass(frozen=True)
class Ticket:
    """One job for the GPU side: ``count`` images that share a prompt and differ by seed.

    ``safety``: what to do with images the safety classifier flags (``off`` skips the check).
    ``file_limit``: most bytes per encoded file (the guild's upload limit).
    ``check_source``: the safety classifier checks ``request.init_image`` first (an upload);
    when it flags it, the job fails with reason ``refused`` and nothing is generated.
    """

    job_id: int
    user_id: int
    request: GenerationRequest
    safety: SafetyMode = "off"
    file_limit: int = DEFAULT_FILE_LIMIT
    check_source: bool = False

    @property
    def batch_key(self) -> tuple:
        """Tickets with equal keys can share one pipeline call."""
        return self.request.batch_key

    @property
    def stem(self) -> str:
        """File names of the result: ``{stem}_{n}.png``."""
        return f"imagine_{self.job_id}"


@dataclass(frozen=True)
class ImageFile:
    """One encoded result image; ``index`` is its 1-based number in the set (and seed)."""

    index: int
    filename: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Started:
    """A batch with these jobs began on a GPU."""

    job_ids: tuple[int, ...]
    worker: str = "local"


@dataclass(frozen=True)
class Progress:
    """A denoising step of a running job; ``preview`` is a small PNG of its first image."""

    job_id: int
    step: int
    total: int
    preview: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Finished:
    """A job's images, encoded. Withheld images are missing from ``files`` but keep numbers.

    ``captions``: a ``describe`` job's proposed prompts (it has no files or seeds)."""

    job_id: int
    files: tuple[ImageFile, ...]
    seeds: tuple[int, ...]
    seconds: float
    flagged: tuple[int, ...] = ()
    withheld: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()
    worker: str = "local"
    captions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failed:
    """A job could not be made; ``user_message`` says why (English; ``reason`` is a code)."""

    job_id: int
    user_message: str
    reason: FailReason = "engine"


Event = Started | Progress | Finished | Failed


# ---------------------------------------------------------------------------------- wire
def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _text(fields: Mapping[bytes, bytes], name: str) -> str:
    value = fields.get(name.encode())
    if value is None:
        raise WireError(f"entry has no '{name}' field")
    return value.decode()


def _read(fields: Mapping[bytes, bytes], kind: str) -> dict:
    try:
        version = int(_text(fields, "v"))
    except ValueError:
        raise WireError("entry has a bad 'v' field") from None
    try:
        meta = json.loads(_text(fields, "meta"))
    except json.JSONDecodeError:
        raise WireError("entry has a bad 'meta' field") from None
    job_id = meta.get("job_id") if isinstance(meta, dict) else None
    job_id = job_id if isinstance(job_id, int) else None
    if version != SCHEMA_VERSION:
        raise WireVersionError(
            f"{kind} written with schema version {version}; this side reads {SCHEMA_VERSION}. "
            "Upgrade the bot and the workers to the same release.",
            job_id,
        )
    if not isinstance(meta, dict):
        raise WireError("entry 'meta' is not an object")
    return meta


def ticket_to_fields(ticket: Ticket) -> dict[bytes, bytes]:
    """A ticket as a stream entry."""
    meta = asdict(ticket)
    init = meta["request"].pop("init_image")
    meta["request"].pop("notes")  # shown by the bot, which made them; not the GPU's business
    # Written only when not the default, so a ticket for plain /imagine is what workers of the
    # previous release read: they keep serving those during a rolling upgrade.
    for name, default in _OPTIONAL_REQUEST_FIELDS.items():
        if meta["request"][name] == default:
            del meta["request"][name]
    if not meta["check_source"]:
        del meta["check_source"]
    fields = {b"v": str(SCHEMA_VERSION).encode(), b"type": b"ticket", b"meta": _json(meta)}
    if init is not None:
        fields[b"init"] = init
    return fields


def ticket_from_fields(fields: Mapping[bytes, bytes]) -> Ticket:
    """Read a ticket entry.

    Raises:
        WireVersionError: another schema version (``job_id`` set when it could be read).
        WireError: not a ticket.
    """
    meta = _read(fields, "ticket")
    try:
        request = GenerationRequest(**meta.pop("request"), init_image=fields.get(b"init"))
        return Ticket(**meta, request=request)
    except (TypeError, KeyError) as exc:
        raise WireError(f"bad ticket: {exc}", meta.get("job_id")) from None


def event_to_fields(event: Event) -> dict[bytes, bytes]:
    """An event as a stream entry."""
    fields: dict[bytes, bytes] = {b"v": str(SCHEMA_VERSION).encode()}
    if isinstance(event, Finished):
        meta = asdict(event)
        files = meta.pop("files")
        meta["files"] = [[f["index"], f["filename"]] for f in files]
        if not meta["captions"]:
            del meta["captions"]  # what a bot of the previous release reads
        for i, image in enumerate(event.files):
            fields[f"file{i}".encode()] = image.data
    elif isinstance(event, Progress):
        meta = asdict(event)
        preview = meta.pop("preview")
        if preview is not None:
            fields[b"preview"] = preview
    else:
        meta = asdict(event)
    fields[b"type"] = type(event).__name__.lower().encode()
    fields[b"meta"] = _json(meta)
    return fields


def event_from_fields(fields: Mapping[bytes, bytes]) -> Event:
    """Read an event entry.

    Raises:
        WireVersionError, WireError: as ``ticket_from_fields``.
    """
    kind = _text(fields, "type")
    meta = _read(fields, kind)
    try:
        if kind == "started":
            return Started(job_ids=tuple(meta["job_ids"]), worker=meta.get("worker", "?"))
        if kind == "progress":
            return Progress(**meta, preview=fields.get(b"preview"))
        if kind == "finished":
            files = tuple(
                ImageFile(index, name, fields[f"file{i}".encode()])
                for i, (index, name) in enumerate(meta.pop("files"))
            )
            for key in ("seeds", "flagged", "withheld", "notes", "captions"):
                meta[key] = tuple(meta.get(key, ()))
            return Finished(**meta, files=files)
        if kind == "failed":
            return Failed(**meta)
    except (TypeError, KeyError, ValueError) as exc:
        raise WireError(f"bad {kind} event: {exc}", meta.get("job_id")) from None
    raise WireError(f"unknown event type '{kind}'", meta.get("job_id"))
