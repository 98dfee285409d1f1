"""The gateway: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, RESUME, dispatches.

Sessions outlive connections: a dispatch made while the bot is reconnecting is buffered and
replayed on RESUME, as Discord does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .server import DiscordStandin

log = logging.getLogger(__name__)

OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_RESUME = 0, 1, 2, 3, 6
OP_RECONNECT, OP_REQUEST_MEMBERS, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 7, 8, 9, 10, 11

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Which intent an event needs; events not listed (READY, INTERACTION_CREATE, ...) need none.
EVENT_INTENTS = {
    "GUILD_CREATE": INTENT_GUILDS,
    "CHANNEL_CREATE": INTENT_GUILDS,
    "MESSAGE_CREATE": INTENT_GUILD_MESSAGES,
    "MESSAGE_UPDATE": INTENT_GUILD_MESSAGES,
    "MESSAGE_DELETE": INTENT_GUILD_MESSAGES,
}

# A dispatch's data may depend on the receiving session (message content intent).
Payload = dict[str, Any] | Callable[["GatewaySession"], dict[str, Any]]


@dataclass(eq=False)
class Connection:
    ws: web.WebSocketResponse
    compress: bool
    zlib_context: Any = field(default_factory=zlib.compressobj)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed_by_standin: bool = False

    async def send(self, packet: dict[str, Any]) -> None:
        raw = json.dumps(packet, separators=(",", ":"))
        async with self.lock:  # zlib-stream frames must go out in compression order
            if self.ws.closed:
                return
            try:
                if self.compress:
                    data = self.zlib_context.compress(raw.encode())
                    await self.ws.send_bytes(data + self.zlib_context.flush(zlib.Z_SYNC_FLUSH))
                else:
                    await self.ws.send_str(raw)
            except ConnectionError:
                # The bot is going away mid-send; a dispatch stays in the session for RESUME.
                log.debug("gateway connection closed while sending %s", packet.get("t"))


@dataclass(eq=False)
class GatewaySession:
    session_id: str
    intents: int
    shard: tuple[int, int] | None
    connection: Connection | None = None
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # dispatches, for RESUME replay
    presence: dict[str, Any] | None = None

    def has_intent(self, intent: int) -> bool:
        return bool(self.intents & intent)

    def owns_guild(self, guild_id: int | None) -> bool:
        """Sharding: a guild's events go to (guild_id >> 22) % shards; DMs go to shard 0."""
        if self.shard is None:
            return True
        shard_id, count = self.shard
        if guild_id is None:
            return shard_id == 0
        return (guild_id >> 22) % count == shard_id


class Gateway:
    def __init__(
        self, standin: DiscordStandin, *, heartbeat_interval: float, allowed_privileged_intents: int
    ) -> None:
        self.standin = standin
        self.heartbeat_interval = heartbeat_interval
        self.allowed_privileged_intents = allowed_privileged_intents
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: list[Connection] = []
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0
        self.received: list[dict[str, Any]] = []  # every packet the bot sent, in order
        # One worker sends every dispatch, so events keep the order they were made in even when
        # made from synchronous code (add_guild) or from concurrent REST handlers.
        self._queue: asyncio.Queue[tuple[str, Payload, int | None, asyncio.Future[int]]] = (
            asyncio.Queue()
        )
        self._order = asyncio.Lock()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="standin-gateway")

    async def _work(self) -> None:
        while True:
            event, payload, guild_id, done = await self._queue.get()
            try:
                async with self._order:
                    count = await self._dispatch_now(event, payload, guild_id)
            except Exception as error:  # reported to whoever awaits the dispatch
                log.exception("dispatching %s failed", event)
                if not done.done():
                    done.set_exception(error)
            else:
                if not done.done():
                    done.set_result(count)

    @property
    def live_sessions(self) -> list[GatewaySession]:
        return list(self.sessions.values())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        compress = request.query.get("compress") == "zlib-stream"
        connection = Connection(ws=ws, compress=compress)
        self.connections.append(connection)
        session: GatewaySession | None = None
        try:
            await connection.send(
                {
                    "op": OP_HELLO,
                    "d": {"heartbeat_interval": int(self.heartbeat_interval * 1000)},
                    "s": None,
                    "t": None,
                }
            )
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                packet = json.loads(msg.data)
                self.received.append(packet)
                session = await self._on_packet(connection, session, packet) or session
        finally:
            self.connections.remove(connection)
            if session is not None and session.connection is connection:
                session.connection = None
                # A client closing with 1000/1001 ends its session; anything else may resume.
                if not connection.closed_by_standin and ws.close_code in (1000, 1001):
                    self.sessions.pop(session.session_id, None)
            self.standin._changed()
        return ws

    async def _on_packet(
        self, connection: Connection, session: GatewaySession | None, packet: dict[str, Any]
    ) -> GatewaySession | None:
        op, data = packet.get("op"), packet.get("d")
        if op == OP_HEARTBEAT:
            self.heartbeat_count += 1
            await connection.send({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == OP_IDENTIFY:
            async with self._order:
                return await self._identify(connection, data)
        elif op == OP_RESUME:
            async with self._order:
                return await self._resume(connection, data)
        elif op == OP_PRESENCE and session is not None:
            session.presence = data
        elif op == OP_REQUEST_MEMBERS and session is not None:
            await self._members_chunk(session, data)
        return None

    async def _identify(
        self, connection: Connection, data: dict[str, Any]
    ) -> GatewaySession | None:
        if not self.standin.accepts_token(data.get("token")):
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = int(data.get("intents", (1 << 26) - 1))
        if intents & PRIVILEGED_INTENTS & ~self.allowed_privileged_intents:
            await connection.ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard = tuple(data["shard"]) if data.get("shard") else None
        session = GatewaySession(secrets.token_hex(16), intents, shard)  # type: ignore[arg-type]
        session.presence = data.get("presence")
        self.sessions[session.session_id] = session
        session.connection = connection
        guilds = [g for g in self.standin.guilds if session.owns_guild(g.id)]
        ready = {
            "v": 10,
            "user": {
                **self.standin.bot_user.payload(),
                "verified": True,
                "mfa_enabled": False,
                "flags": 0,
                "email": None,
                "locale": "en-US",
            },
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.standin.gateway_url,
            "application": {
                "id": str(self.standin.application_id),
                "flags": self.standin.application_flags,
            },
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
            "_trace": ["discord-standin"],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        await self._send_dispatch(session, "READY", ready)
        for guild in guilds:
            payload = self.standin.guild_create_payload(guild, session)
            await self._send_dispatch(session, "GUILD_CREATE", {**payload, "unavailable": False})
        self.identify_count += 1
        self.standin._changed()
        return session

    async def _resume(self, connection: Connection, data: dict[str, Any]) -> GatewaySession | None:
        session = self.sessions.get(data.get("session_id", ""))
        if session is None or not self.standin.accepts_token(data.get("token")):
            await connection.send({"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return None
        session.connection = connection
        last = int(data.get("seq") or 0)
        for packet in session.sent:
            if packet["s"] > last:
                await connection.send(packet)
        session.seq += 1
        await connection.send({"op": OP_DISPATCH, "t": "RESUMED", "s": session.seq, "d": {}})
        self.resume_count += 1
        self.standin._changed()
        return session

    async def _members_chunk(self, session: GatewaySession, data: dict[str, Any]) -> None:
        guild = self.standin.guild_by_id(int(data["guild_id"]))
        if guild is None:
            return
        ids = {int(i) for i in data.get("user_ids") or []}
        members = [
            u.member_payload(guild)
            for u in self.standin.members_of(guild)
            if not ids or u.id in ids
        ]
        await self._send_dispatch(
            session,
            "GUILD_MEMBERS_CHUNK",
            {
                "guild_id": str(guild.id),
                "members": members,
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                "nonce": data.get("nonce"),
            },
        )

    async def _send_dispatch(
        self, session: GatewaySession, event: str, data: dict[str, Any]
    ) -> None:
        session.seq += 1
        packet = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.sent.append(packet)
        if session.connection is not None:
            await session.connection.send(packet)

    def enqueue(
        self, event: str, payload: Payload, *, guild_id: int | None = None
    ) -> asyncio.Future[int] | None:
        """Queue an event for every session that should get it (in order); never blocks.

        Returns None when no bot session exists: its IDENTIFY will get the world as it is then.
        """
        if not self.sessions:
            return None
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, payload, guild_id, done))
        return done

    async def dispatch(self, event: str, payload: Payload, *, guild_id: int | None = None) -> int:
        """Send an event (after those queued before it); returns how many sessions got it."""
        done = self.enqueue(event, payload, guild_id=guild_id)
        return 0 if done is None else await done

    async def _dispatch_now(self, event: str, payload: Payload, guild_id: int | None) -> int:
        needed = EVENT_INTENTS.get(event, 0)
        if guild_id is None and needed == INTENT_GUILD_MESSAGES:
            needed = INTENT_DIRECT_MESSAGES  # a message without a guild is a DM
        count = 0
        for session in self.live_sessions:
            if needed and not session.has_intent(needed):
                continue
            if not session.owns_guild(guild_id):
                continue
            data = payload(session) if callable(payload) else payload
            await self._send_dispatch(session, event, data)
            count += 1
        return count

    async def drop(self, code: int = 4000) -> None:
        """Close every connection (the sessions stay resumable unless the code says otherwise)."""
        for connection in list(self.connections):
            connection.closed_by_standin = True
            await connection.ws.close(code=code, message=b"stand-in dropped the connection")

    async def send_op(self, op: int, data: Any = None) -> None:
        for connection in list(self.connections):
            await connection.send({"op": op, "d": data, "s": None, "t": None})

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        await self.drop(code=1001)
