"""The Redis side of the wire: key names, consumer groups and worker heartbeats.

Shared by the bot's ``RedisBackend`` and ``python -m engine.worker`` so that both read and
write the same keys (docs/redis-streams.md has the whole protocol):

- ``{prefix}:tickets``: a stream of tickets (``engine.tickets`` wire format); workers read it
  in the consumer group ``workers``.
- ``{prefix}:events``: a stream of events from the workers; the bot reads it in the group
  ``bot``.
- ``{prefix}:workers``: the set of worker names; ``{prefix}:worker:{name}``: a worker's
  heartbeat (JSON, expires after three missed beats).
- ``{prefix}:claim:{job}``: who runs a ticket, or ``cancelled``; cancel wins only before a
  worker claimed it.
- ``{prefix}:epoch``: a token the bot sets; when it is gone, Redis lost its data (a restart
  with nothing on disk, a flush) and the bot publishes its unfinished tickets again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from engine.tickets import SCHEMA_VERSION

if TYPE_CHECKING:
    from redis.asyncio import Redis

TICKET_GROUP = "workers"
EVENT_GROUP = "bot"
CANCELLED = b"cancelled"
CLAIM_TTL_S = 86400  # a claim outlives any batch; it is deleted with its ticket
EVENTS_MAXLEN = 100_000  # approximate cap of the events stream while no bot reads it

# Atomically: a ticket the bot cancelled stays cancelled; otherwise this worker holds it
# (taking it over from a worker that died with it).
CLAIM_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class StreamKeys:
    """The Redis key names under one prefix (``IMAGINE_QUEUE_PREFIX``)."""

    prefix: str = "imagine"

    @property
    def tickets(self) -> str:
        return f"{self.prefix}:tickets"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def claim(self, job_id: int) -> str:
        return f"{self.prefix}:claim:{job_id}"


@dataclass(frozen=True)
class WorkerBeat:
    """What a worker announces every heartbeat.

    ``capacity``: most images it takes at once (running plus waiting for its GPU);
    ``busy``: images it holds now; ``seconds_per_image``: its smoothed GPU time per image.
    """

    name: str
    capacity: int
    busy: int = 0
    seconds_per_image: float = 0.1
    v: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> WorkerBeat | None:
        """The beat, or None when it is unreadable or of another schema version."""
        try:
            beat = cls(**json.loads(data))
        except (ValueError, TypeError):
            return None
        if beat.v != SCHEMA_VERSION or beat.capacity < 1:
            return None
        return beat


QUEUE_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def check_queue_url(url: str, *, required: bool = False) -> str:
    """``url`` when it names a Redis (``IMAGINE_QUEUE_URL``); empty is allowed unless
    ``required``.

    Raises:
        ValueError: what is wrong, in words for the operator (never the URL: it may hold a
            password).
    """
    if not url:
        if required:
            raise ValueError("is empty: set it to the Redis URL the bot uses")
        return url
    if not url.startswith(QUEUE_URL_SCHEMES):
        raise ValueError(
            "must start with redis://, rediss:// (TLS) or unix://, e.g. redis://127.0.0.1:6379/0"
        )
    return url


def connect(url: str) -> Redis:
    """A client for ``url`` (``redis://`` or ``rediss://`` with TLS; passwords in the URL).

    Values stay bytes (images travel in them). Nothing is sent until the first command, so
    this works while Redis is down.
    """
    from redis.asyncio import Redis

    return Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2,
        socket_timeout=10,  # above every BLOCK used here (1 s)
        retry_on_timeout=False,
    )


def is_redis_error(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis (or the way to it) failing, not a bug of ours."""
    from redis.exceptions import RedisError

    return isinstance(exc, RedisError | OSError | TimeoutError)


def is_nogroup(exc: BaseException) -> bool:
    """Whether a Redis error says the stream or its group is gone (Redis lost its data)."""
    return "NOGROUP" in str(exc)


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create ``stream`` and its consumer ``group`` unless they exist.

    The group starts at id 0, so entries added before it was made (tickets republished after
    a flush, outcomes written while the bot was away) are delivered too.
    """
    from redis.exceptions import ResponseError

    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
