"""REST API v10: request parsing and recording, routing, and Discord's semantics per route."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .models import (
    Attachment,
    CallbackType,
    InteractionRecord,
    InteractionType,
    Message,
    MessageFlag,
    MessageType,
    Perm,
    RecordedRequest,
    UploadedFile,
    User,
    iso_now,
    new_snowflake,
    reference_to,
)
from .validation import MAX_ATTACHMENTS, MAX_REQUEST_BYTES, is_empty_message, validate_message

if TYPE_CHECKING:
    from .models import Channel
    from .server import DiscordStandin

Result = tuple[int, Any]
Handler = Callable[..., Awaitable[Result]]


class ApiError(Exception):
    """An error answer, shaped like Discord's: {"code": ..., "message": ...[, "errors": ...]}."""

    def __init__(self, status: int, code: int, message: str, errors: dict | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: dict[str, Any] = {"code": code, "message": message}
        if errors is not None:
            self.body["errors"] = errors

    @classmethod
    def form(cls, body: dict[str, Any]) -> ApiError:
        return cls(400, body["code"], body["message"], body.get("errors"))


def unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


def invalid_webhook_token() -> ApiError:
    return ApiError(401, 50027, "Invalid Webhook Token")


def missing_permissions() -> ApiError:
    return ApiError(403, 50013, "Missing Permissions")


def entity_too_large() -> ApiError:
    return ApiError(413, 40005, "Request entity too large")


@dataclass
class ParsedBody:
    json: Any = None
    uploads: dict[int, UploadedFile] = field(default_factory=dict)  # files[n] -> file
    size: int = 0


async def read_body(request: web.Request) -> ParsedBody:
    """Read JSON or multipart (`payload_json` + `files[n]`) fully, counting the bytes."""
    body = ParsedBody()
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        fallback_index = 0
        while (part := await reader.next()) is not None:
            data = await part.read(decode=False)  # type: ignore[union-attr]
            body.size += len(data)
            name = part.name or ""
            if name == "payload_json":
                body.json = json.loads(data or b"null")
                continue
            # files[n]; Discord also takes file, file1, ...: those are numbered in order.
            match = re.fullmatch(r"files?\[(\d+)\]", name)
            index = int(match.group(1)) if match else fallback_index
            fallback_index = max(fallback_index, index) + 1
            body.uploads[index] = UploadedFile(
                filename=part.filename or name,  # type: ignore[union-attr]
                data=bytes(data),
                content_type=part.headers.get("Content-Type"),
            )
    else:
        raw = await request.read()
        body.size = len(raw)
        if raw:
            try:
                body.json = json.loads(raw)
            except ValueError:
                body.json = raw.decode(errors="replace")
    return body


def json_response(status: int, body: Any) -> web.Response:
    if status == 204 or body is None:
        return web.Response(status=204)
    # Exactly "application/json": discord.py parses nothing else (no "; charset=...").
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )


def sniff_image(
    data: bytes, filename: str, declared: str | None
) -> tuple[str | None, int | None, int | None]:
    """Content type and size as Discord reports them: it sniffs (discord.py says octet-stream)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "image/png", width, height
    kind = None
    if data.startswith(b"\xff\xd8\xff"):
        kind = "image/jpeg"
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        kind = "image/gif"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "image/webp"
    if kind is not None:
        try:
            import io

            from PIL import Image

            with Image.open(io.BytesIO(data)) as image:
                return kind, image.width, image.height
        except Exception:  # a broken image still uploads; Discord just omits the size
            return kind, None, None
    if declared and declared != "application/octet-stream":
        return declared, None, None
    return mimetypes.guess_type(filename)[0], None, None


_MENTION_RE = re.compile(r"<@!?(\d+)>")
# Route templates: {name} matches a snowflake unless listed here.
_SNOWFLAKE = r"\d+"
_PLACEHOLDERS = {
    "token": r"[^/]+",
    "emoji": r"[^/]+",
    "user": r"@me|\d+",
    "message_ref": r"\d+|@original",
}


def _compile(template: str) -> re.Pattern[str]:
    def group(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"(?P<{name}>{_PLACEHOLDERS.get(name, _SNOWFLAKE)})"

    return re.compile(re.sub(r"\{(\w+)\}", group, template) + "/?")


class RestApi:
    def __init__(self, standin: DiscordStandin) -> None:
        self.standin = standin
        app_commands = "/applications/{app_id}/commands"
        guild_commands = "/applications/{app_id}/guilds/{guild_id}/commands"
        webhook_message = "/webhooks/{app_id}/{token}/messages/{message_ref}"
        message = "/channels/{channel_id}/messages/{message_id}"
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self.get_me),
            ("GET", "/users/@me/guilds", self.get_my_guilds),
            ("GET", "/users/{user_id}", self.get_user),
            ("POST", "/users/@me/channels", self.create_dm),
            ("GET", "/oauth2/applications/@me", self.get_application),
            ("GET", "/applications/@me", self.get_application),
            ("GET", "/gateway", self.get_gateway),
            ("GET", "/gateway/bot", self.get_gateway_bot),
            ("GET", app_commands, self.get_commands),
            ("PUT", app_commands, self.put_commands),
            ("POST", app_commands, self.post_command),
            ("GET", app_commands + "/{command_id}", self.get_command),
            ("PATCH", app_commands + "/{command_id}", self.patch_command),
            ("DELETE", app_commands + "/{command_id}", self.delete_command),
            ("GET", guild_commands, self.get_commands),
            ("PUT", guild_commands, self.put_commands),
            ("POST", guild_commands, self.post_command),
            ("GET", guild_commands + "/{command_id}", self.get_command),
            ("PATCH", guild_commands + "/{command_id}", self.patch_command),
            ("DELETE", guild_commands + "/{command_id}", self.delete_command),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.interaction_callback),
            ("POST", "/webhooks/{app_id}/{token}", self.webhook_execute),
            ("GET", webhook_message, self.webhook_get_message),
            ("PATCH", webhook_message, self.webhook_edit_message),
            ("DELETE", webhook_message, self.webhook_delete_message),
            ("GET", "/channels/{channel_id}", self.get_channel),
            ("GET", "/channels/{channel_id}/messages", self.get_messages),
            ("POST", "/channels/{channel_id}/messages", self.create_message),
            ("GET", message, self.get_message),
            ("PATCH", message, self.edit_message),
            ("DELETE", message, self.delete_message),
            ("POST", "/channels/{channel_id}/messages/bulk-delete", self.bulk_delete),
            ("PUT", message + "/reactions/{emoji}/@me", self.add_reaction),
            ("DELETE", message + "/reactions/{emoji}/{user}", self.remove_reaction),
            ("POST", "/channels/{channel_id}/typing", self.typing),
            ("GET", "/guilds/{guild_id}", self.get_guild),
            ("GET", "/guilds/{guild_id}/channels", self.get_guild_channels),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member),
        ]
        self.routes = [(method, _compile(path), handler) for method, path, handler in table]

    # ----------------------------------------------------------------- plumbing

    async def handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body = await read_body(request)
        record = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=body.json,
            files=[body.uploads[i] for i in sorted(body.uploads)],
            time=asyncio.get_running_loop().time(),
            headers={
                k: v
                for k, v in request.headers.items()
                if k.lower() in ("authorization", "content-type", "x-audit-log-reason")
            },
        )
        self.standin.requests.append(record)
        try:
            handler, params = self._route(request.method, path)
            if handler is None:
                record.known_route = False
                raise ApiError(404, 0, "404: Not Found")
            if body.size > MAX_REQUEST_BYTES:
                raise entity_too_large()
            if not path.startswith(("/interactions/", "/webhooks/")):
                self._check_auth(request)
            status, result = await handler(record, body, **params)
        except ApiError as error:
            status, result = error.status, error.body
        record.status, record.response = status, result
        self.standin._changed()
        return json_response(status, result)

    def _route(self, method: str, path: str) -> tuple[Handler | None, dict[str, str]]:
        for route_method, pattern, handler in self.routes:
            if route_method == method and (match := pattern.fullmatch(path)):
                return handler, match.groupdict()
        return None, {}

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header[4:] if header.startswith("Bot ") else None
        if token is None or not self.standin.accepts_token(token):
            raise ApiError(401, 0, "401: Unauthorized")

    def _channel(self, channel_id: str) -> Channel:
        channel = self.standin.channel_by_id(int(channel_id))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def _channel_message(self, channel: Channel, message_id: str) -> Message:
        message = self.standin.message_by_id(int(message_id))
        if (
            message is None
            or message.deleted
            or message.ephemeral
            or message.channel is not channel
        ):
            raise unknown_message()
        return message

    def _require(self, channel: Channel, permissions: int) -> None:
        if channel.is_dm:  # no permissions in DMs, but nobody moderates them either
            if permissions & Perm.MANAGE_MESSAGES:
                raise ApiError(403, 50003, "Cannot execute action on a DM channel")
            return
        have = channel.effective_bot_permissions
        if not have & Perm.VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        if have & permissions != permissions:
            raise missing_permissions()

    # ---------------------------------------------------------- users and apps

    async def get_me(self, record: RecordedRequest, body: ParsedBody) -> Result:
        user = self.standin.bot_user
        return 200, {
            **user.payload(),
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "email": None,
            "locale": "en-US",
            "banner": None,
            "accent_color": None,
        }

    async def get_my_guilds(self, record: RecordedRequest, body: ParsedBody) -> Result:
        """The bot's guilds by id, paged like Discord (``before``, ``after``, ``limit``)."""
        guilds = sorted(self.standin.guilds, key=lambda g: g.id)
        if "after" in record.query:
            guilds = [g for g in guilds if g.id > int(record.query["after"])]
        if "before" in record.query:
            guilds = [g for g in guilds if g.id < int(record.query["before"])]
        limit = max(1, min(200, int(record.query.get("limit", 200))))
        guilds = guilds[-limit:] if "before" in record.query else guilds[:limit]
        with_counts = record.query.get("with_counts", "false").lower() in ("true", "1")
        listed = []
        for guild in guilds:
            data = guild.partial_payload()
            if with_counts:
                data["approximate_member_count"] = len(self.standin.members_of(guild)) + 1
                data["approximate_presence_count"] = 0
            listed.append(data)
        return 200, listed

    async def get_user(self, record: RecordedRequest, body: ParsedBody, user_id: str) -> Result:
        user = self.standin.user_by_id(int(user_id))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, user.payload()

    async def create_dm(self, record: RecordedRequest, body: ParsedBody) -> Result:
        recipient = (body.json or {}).get("recipient_id")
        user = None if recipient is None else self.standin.user_by_id(int(recipient))
        if user is None or user.bot:
            raise ApiError(400, 50007, "Cannot send messages to this user")
        return 200, self.standin.add_dm_channel(user).payload()

    async def get_application(self, record: RecordedRequest, body: ParsedBody) -> Result:
        return 200, self.standin.application_payload()

    async def get_gateway(self, record: RecordedRequest, body: ParsedBody) -> Result:
        return 200, {"url": self.standin.gateway_url}

    async def get_gateway_bot(self, record: RecordedRequest, body: ParsedBody) -> Result:
        return 200, {
            "url": self.standin.gateway_url,
            "shards": self.standin.recommended_shards,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 0,
                "max_concurrency": 1,
            },
        }

    # ------------------------------------------------------ application commands

    def _command_scope(self, app_id: str, guild_id: str | None) -> dict[tuple[str, int], dict]:
        if int(app_id) != self.standin.application_id:
            raise ApiError(403, 50001, "Missing Access")
        if guild_id is not None and self.standin.guild_by_id(int(guild_id)) is None:
            raise ApiError(404, 10004, "Unknown Guild")
        key = None if guild_id is None else int(guild_id)
        return self.standin._commands.setdefault(key, {})

    def _store_command(self, scope: dict, payload: dict[str, Any], guild_id: str | None) -> dict:
        if not isinstance(payload, dict) or not payload.get("name"):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "name": {
                        "_errors": [
                            {"code": "BASE_TYPE_REQUIRED", "message": "This field is required"}
                        ]
                    }
                },
            )
        key = (payload["name"], int(payload.get("type", 1)))
        old = scope.get(key)
        stored = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            **payload,
            "id": old["id"] if old else str(new_snowflake()),
            "application_id": str(self.standin.application_id),
            "version": str(new_snowflake()),
        }
        if guild_id is not None:
            stored["guild_id"] = guild_id
        scope[key] = stored
        return stored

    async def get_commands(
        self, record: RecordedRequest, body: ParsedBody, app_id: str, guild_id: str | None = None
    ) -> Result:
        return 200, list(self._command_scope(app_id, guild_id).values())

    async def put_commands(
        self, record: RecordedRequest, body: ParsedBody, app_id: str, guild_id: str | None = None
    ) -> Result:
        scope = self._command_scope(app_id, guild_id)
        previous = dict(scope)
        scope.clear()
        result = []
        for payload in body.json or []:
            key = (payload.get("name"), int(payload.get("type", 1)))
            if key in previous:
                scope[key] = previous[key]  # keeps the id, like Discord's bulk overwrite
            result.append(self._store_command(scope, payload, guild_id))
        self.standin._commands_synced.add(None if guild_id is None else int(guild_id))
        return 200, result

    async def post_command(
        self, record: RecordedRequest, body: ParsedBody, app_id: str, guild_id: str | None = None
    ) -> Result:
        scope = self._command_scope(app_id, guild_id)
        existed = (body.json or {}).get("name") in {k[0] for k in scope}
        stored = self._store_command(scope, body.json, guild_id)
        self.standin._commands_synced.add(None if guild_id is None else int(guild_id))
        return (200 if existed else 201), stored

    def _find_command(self, scope: dict, command_id: str) -> tuple[tuple[str, int], dict]:
        for key, command in scope.items():
            if command["id"] == command_id:
                return key, command
        raise ApiError(404, 10063, "Unknown application command")

    async def get_command(
        self,
        record: RecordedRequest,
        body: ParsedBody,
        app_id: str,
        command_id: str,
        guild_id: str | None = None,
    ) -> Result:
        return 200, self._find_command(self._command_scope(app_id, guild_id), command_id)[1]

    async def patch_command(
        self,
        record: RecordedRequest,
        body: ParsedBody,
        app_id: str,
        command_id: str,
        guild_id: str | None = None,
    ) -> Result:
        scope = self._command_scope(app_id, guild_id)
        key, command = self._find_command(scope, command_id)
        del scope[key]
        return 200, self._store_command(scope, {**command, **(body.json or {})}, guild_id)

    async def delete_command(
        self,
        record: RecordedRequest,
        body: ParsedBody,
        app_id: str,
        command_id: str,
        guild_id: str | None = None,
    ) -> Result:
        scope = self._command_scope(app_id, guild_id)
        key, _ = self._find_command(scope, command_id)
        del scope[key]
        return 204, None

    # ----------------------------------------------------------- interactions

    async def interaction_callback(
        self, record: RecordedRequest, body: ParsedBody, interaction_id: str, token: str
    ) -> Result:
        ix = self.standin._interactions_by_id.get(int(interaction_id))
        if ix is None or ix.token != token or ix.expired:
            raise ApiError(404, 10062, "Unknown interaction")
        latency = record.time - ix.created_at
        if ix.acked:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if latency > self.standin.ack_deadline:
            ix.late_callbacks.append(latency)
            raise ApiError(404, 10062, "Unknown interaction")
        payload = body.json if isinstance(body.json, dict) else {}
        kind = int(payload.get("type", 0))
        data = payload.get("data") or {}
        self._check_callback_type(ix, kind)

        message: Message | None = None
        if kind == CallbackType.CHANNEL_MESSAGE:
            self._check_message(
                data, body, ("data",), limit=ix.attachment_size_limit, creating=True
            )
            flags = int(data.get("flags") or 0) & (
                MessageFlag.EPHEMERAL
                | MessageFlag.IS_COMPONENTS_V2
                | MessageFlag.SUPPRESS_EMBEDS
                | MessageFlag.SUPPRESS_NOTIFICATIONS
            )
            message = self._new_message(
                ix.channel,
                data,
                body.uploads,
                interaction=ix,
                flags=flags,
                type=self._response_type(ix),
            )
            ix.original = message
            ix.ephemeral = message.ephemeral
        elif kind == CallbackType.DEFERRED_CHANNEL_MESSAGE:
            flags = MessageFlag.LOADING | (int(data.get("flags") or 0) & MessageFlag.EPHEMERAL)
            message = self._new_message(
                ix.channel,
                {},
                {},
                interaction=ix,
                flags=flags,
                type=self._response_type(ix),
            )
            ix.original = message
            ix.ephemeral = message.ephemeral
        elif kind == CallbackType.DEFERRED_UPDATE_MESSAGE:
            ix.original = ix.message
        elif kind == CallbackType.UPDATE_MESSAGE:
            assert ix.message is not None  # checked by _check_callback_type
            if ix.message.deleted:
                raise unknown_message()
            self._check_message(
                data, body, ("data",), limit=ix.attachment_size_limit, creating=False
            )
            message = ix.message
            ix.original = message
            await self._edit(message, data, body.uploads)
        elif kind == CallbackType.AUTOCOMPLETE_RESULT:
            ix.choices = list(data.get("choices") or [])
        elif kind == CallbackType.MODAL:
            ix.modal = data

        ix.ack_type = kind
        ix.ack_at = record.time
        ix.ack_payload = payload
        ix.ack_files = record.files
        if message is not None and kind != CallbackType.UPDATE_MESSAGE:
            await self.standin._store_message(message)
        self._responded(ix, message)

        if record.query.get("with_response", "").lower() not in ("1", "true"):
            return 204, None
        info: dict[str, Any] = {"id": str(ix.id), "type": int(ix.type)}
        if message is not None:
            info.update(
                response_message_id=str(message.id),
                response_message_loading=message.loading,
                response_message_ephemeral=message.ephemeral,
            )
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            resource["message"] = self.standin.bot_view(message)
        return 200, {"interaction": info, "resource": resource}

    def _check_callback_type(self, ix: InteractionRecord, kind: int) -> None:
        allowed = {
            InteractionType.APPLICATION_COMMAND: {4, 5, 9},
            InteractionType.MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
            InteractionType.AUTOCOMPLETE: {8},
            InteractionType.MODAL_SUBMIT: {4, 5, 6, 7} if ix.message is not None else {4, 5},
        }[ix.type]
        if kind not in allowed:
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "type": {
                        "_errors": [
                            {
                                "code": "INTERACTION_CALLBACK_TYPE_INVALID",
                                "message": f"Callback type {kind} is not valid for a "
                                f"{ix.type.name} interaction (allowed: {sorted(allowed)})",
                            }
                        ]
                    }
                },
            )

    @staticmethod
    def _response_type(ix: InteractionRecord) -> int:
        if ix.type == InteractionType.APPLICATION_COMMAND:
            command_type = ix.data.get("type", 1)
            return (
                MessageType.CHAT_INPUT_COMMAND
                if command_type == 1
                else MessageType.CONTEXT_MENU_COMMAND
            )
        return MessageType.DEFAULT

    def _responded(self, ix: InteractionRecord, message: Message | None) -> None:
        if message is None:
            return
        if message not in ix.messages:
            ix.messages.append(message)
        if ix.response is None and not message.loading:
            ix.response = message

    def _interaction_for_token(self, app_id: str, token: str) -> InteractionRecord:
        if int(app_id) != self.standin.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        ix = self.standin._interactions_by_token.get(token)
        if ix is None:
            raise invalid_webhook_token()
        loop_time = asyncio.get_running_loop().time()
        if ix.expired or loop_time - ix.created_at > self.standin.token_lifetime:
            ix.expired = True
            raise invalid_webhook_token()
        if not ix.acked:
            raise ApiError(404, 10015, "Unknown Webhook")
        return ix

    def _webhook_message(self, ix: InteractionRecord, message_id: str) -> Message:
        if message_id == "@original":
            message = ix.original
        else:
            message = self.standin.message_by_id(int(message_id))
            if message is not None and message is not ix.original and message not in ix.messages:
                message = None
        if message is None or message.deleted:
            raise unknown_message()
        return message

    async def webhook_execute(
        self, record: RecordedRequest, body: ParsedBody, app_id: str, token: str
    ) -> Result:
        ix = self._interaction_for_token(app_id, token)
        payload = body.json if isinstance(body.json, dict) else {}
        limit = ix.attachment_size_limit
        self._check_message(payload, body, (), limit=limit, creating=True)
        if ix.awaiting_first_followup:
            # Discord fills the "thinking" message with the first follow-up after a type 5 defer.
            assert ix.original is not None
            message = ix.original
            await self._edit(message, payload, body.uploads)
        else:
            flags = int(payload.get("flags") or 0) & (
                MessageFlag.EPHEMERAL
                | MessageFlag.IS_COMPONENTS_V2
                | MessageFlag.SUPPRESS_EMBEDS
                | MessageFlag.SUPPRESS_NOTIFICATIONS
            )
            reference = None
            original = ix.original
            if original is not None and not original.deleted:
                reference = original
            message = self._new_message(
                ix.channel,
                payload,
                body.uploads,
                interaction=ix,
                flags=flags,
                reply_to=reference,
                type=MessageType.REPLY if reference else MessageType.DEFAULT,
            )
            ix.followups.append(message)
            await self.standin._store_message(message)
        self._responded(ix, message)
        if record.query.get("wait", "").lower() in ("1", "true"):
            return 200, self.standin.bot_view(message)
        return 204, None

    async def webhook_get_message(
        self, record: RecordedRequest, body: ParsedBody, app_id: str, token: str, message_ref: str
    ) -> Result:
        ix = self._interaction_for_token(app_id, token)
        return 200, self.standin.bot_view(self._webhook_message(ix, message_ref))

    async def webhook_edit_message(
        self, record: RecordedRequest, body: ParsedBody, app_id: str, token: str, message_ref: str
    ) -> Result:
        ix = self._interaction_for_token(app_id, token)
        message = self._webhook_message(ix, message_ref)
        payload = body.json if isinstance(body.json, dict) else {}
        self._check_message(payload, body, (), limit=ix.attachment_size_limit, creating=False)
        await self._edit(message, payload, body.uploads)
        self._responded(ix, message)
        return 200, self.standin.bot_view(message)

    async def webhook_delete_message(
        self, record: RecordedRequest, body: ParsedBody, app_id: str, token: str, message_ref: str
    ) -> Result:
        ix = self._interaction_for_token(app_id, token)
        await self.standin._delete_message(self._webhook_message(ix, message_ref))
        return 204, None

    # ---------------------------------------------------------------- channels

    async def get_channel(
        self, record: RecordedRequest, body: ParsedBody, channel_id: str
    ) -> Result:
        return 200, self._channel(channel_id).payload()

    async def get_messages(
        self, record: RecordedRequest, body: ParsedBody, channel_id: str
    ) -> Result:
        channel = self._channel(channel_id)
        self._require(channel, Perm.READ_MESSAGE_HISTORY)
        limit = max(1, min(100, int(record.query.get("limit", 50))))
        messages = [m for m in self.standin.messages(channel, include_ephemeral=False)]
        if "before" in record.query:
            messages = [m for m in messages if m.id < int(record.query["before"])]
        if "after" in record.query:
            after = [m for m in messages if m.id > int(record.query["after"])]
            messages = after[:limit]
        if "around" in record.query:
            around = int(record.query["around"])
            older = [m for m in messages if m.id <= around][-((limit + 1) // 2) :]
            newer = [m for m in messages if m.id > around][: limit // 2]
            messages = older + newer
        messages = messages[-limit:]
        return 200, [self.standin.bot_view(m) for m in reversed(messages)]

    async def get_message(
        self, record: RecordedRequest, body: ParsedBody, channel_id: str, message_id: str
    ) -> Result:
        channel = self._channel(channel_id)
        self._require(channel, Perm.READ_MESSAGE_HISTORY)
        return 200, self.standin.bot_view(self._channel_message(channel, message_id))

    async def create_message(
        self, record: RecordedRequest, body: ParsedBody, channel_id: str
    ) -> Result:
        channel = self._channel(channel_id)
        payload = body.json if isinstance(body.json, dict) else {}
        needed = Perm.SEND_MESSAGES | (Perm.ATTACH_FILES if body.uploads else 0)
        self._require(channel, needed)
        limit = channel.attachment_size_limit
        self._check_message(payload, body, (), limit=limit, creating=True)
        reply_to = None
        ref = payload.get("message_reference")
        if ref and ref.get("message_id"):
            target = self.standin.message_by_id(int(ref["message_id"]))
            if target is None or target.deleted or target.ephemeral:
                if ref.get("fail_if_not_exists", True):
                    raise ApiError(
                        400,
                        50035,
                        "Invalid Form Body",
                        {
                            "message_reference": {
                                "_errors": [
                                    {
                                        "code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                        "message": "Unknown message",
                                    }
                                ]
                            }
                        },
                    )
            else:
                reply_to = target
        flags = int(payload.get("flags") or 0) & (
            MessageFlag.IS_COMPONENTS_V2
            | MessageFlag.SUPPRESS_EMBEDS
            | MessageFlag.SUPPRESS_NOTIFICATIONS
        )
        message = self._new_message(
            channel,
            payload,
            body.uploads,
            flags=flags,
            reply_to=reply_to,
            type=MessageType.REPLY if reply_to else MessageType.DEFAULT,
        )
        await self.standin._store_message(message)
        return 200, self.standin.bot_view(message)

    async def edit_message(
        self, record: RecordedRequest, body: ParsedBody, channel_id: str, message_id: str
    ) -> Result:
        channel = self._channel(channel_id)
        message = self._channel_message(channel, message_id)
        if message.author is not self.standin.bot_user:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        payload = body.json if isinstance(body.json, dict) else {}
        if body.uploads:
            self._require(channel, Perm.ATTACH_FILES)
        limit = channel.attachment_size_limit
        self._check_message(payload, body, (), limit=limit, creating=False)
        await self._edit(message, payload, body.uploads)
        return 200, self.standin.bot_view(message)

    async def delete_message(
        self, record: RecordedRequest, body: ParsedBody, channel_id: str, message_id: str
    ) -> Result:
        channel = self._channel(channel_id)
        message = self._channel_message(channel, message_id)
        if message.author is not self.standin.bot_user:
            self._require(channel, Perm.MANAGE_MESSAGES)
        await self.standin._delete_message(message)
        return 204, None

    async def bulk_delete(
        self, record: RecordedRequest, body: ParsedBody, channel_id: str
    ) -> Result:
        channel = self._channel(channel_id)
        self._require(channel, Perm.MANAGE_MESSAGES)
        ids = (body.json or {}).get("messages") or []
        if not 2 <= len(ids) <= 100:
            raise ApiError(400, 50016, "You must provide at least 2 and fewer than 100 messages")
        for message_id in ids:
            message = self.standin.message_by_id(int(message_id))
            if message is not None and message.channel is channel and not message.deleted:
                await self.standin._delete_message(message)
        return 204, None

    async def add_reaction(
        self,
        record: RecordedRequest,
        body: ParsedBody,
        channel_id: str,
        message_id: str,
        emoji: str,
    ) -> Result:
        channel = self._channel(channel_id)
        message = self._channel_message(channel, message_id)
        self._require(channel, Perm.ADD_REACTIONS | Perm.READ_MESSAGE_HISTORY)
        message.reactions.setdefault(emoji, set()).add(self.standin.bot_user.id)
        return 204, None

    async def remove_reaction(
        self,
        record: RecordedRequest,
        body: ParsedBody,
        channel_id: str,
        message_id: str,
        emoji: str,
        user: str,
    ) -> Result:
        channel = self._channel(channel_id)
        message = self._channel_message(channel, message_id)
        user_id = self.standin.bot_user.id if user == "@me" else int(user)
        if user_id != self.standin.bot_user.id:
            self._require(channel, Perm.MANAGE_MESSAGES)
        message.reactions.get(emoji, set()).discard(user_id)
        return 204, None

    async def typing(self, record: RecordedRequest, body: ParsedBody, channel_id: str) -> Result:
        self._require(self._channel(channel_id), Perm.SEND_MESSAGES)
        return 204, None

    # ------------------------------------------------------------------ guilds

    def _guild(self, guild_id: str) -> Any:
        guild = self.standin.guild_by_id(int(guild_id))
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    async def get_guild(self, record: RecordedRequest, body: ParsedBody, guild_id: str) -> Result:
        payload = self._guild(guild_id).payload(members=[])
        for key in ("channels", "members", "threads", "voice_states", "presences"):
            payload.pop(key, None)
        return 200, payload

    async def get_guild_channels(
        self, record: RecordedRequest, body: ParsedBody, guild_id: str
    ) -> Result:
        return 200, [c.payload() for c in self._guild(guild_id).channels]

    async def get_member(
        self, record: RecordedRequest, body: ParsedBody, guild_id: str, user_id: str
    ) -> Result:
        guild = self._guild(guild_id)
        user = self.standin.user_by_id(int(user_id))
        if user is None or (user is not self.standin.bot_user and not user.is_member_of(guild)):
            raise ApiError(404, 10007, "Unknown Member")
        return 200, user.member_payload(guild)

    # -------------------------------------------------------- message building

    def _check_message(
        self,
        payload: dict[str, Any],
        body: ParsedBody,
        prefix: tuple,
        *,
        limit: int,
        creating: bool,
    ) -> None:
        """Discord's answers to a bad message: 413 per file, 400 form errors, 50006 empty."""
        for upload in body.uploads.values():
            if len(upload.data) > limit:
                raise entity_too_large()
        errors = validate_message(payload, prefix=prefix)
        if errors is not None:
            raise ApiError.form(errors)
        if creating and is_empty_message(payload, len(body.uploads)):
            raise ApiError(400, 50006, "Cannot send an empty message")

    def _attachments(
        self,
        payload: dict[str, Any],
        uploads: dict[int, UploadedFile],
        existing: list[Attachment],
        channel: Channel,
    ) -> list[Attachment]:
        """`attachments` lists what to keep (existing ids) and describes new uploads (files[n])."""
        by_id = {a.id: a for a in existing}
        result: list[Attachment] = []
        used: set[int] = set()
        if "attachments" in payload:
            for i, entry in enumerate(payload.get("attachments") or []):
                ident = int(entry["id"])
                if ident in by_id:
                    result.append(by_id[ident])
                elif ident in uploads:
                    used.add(ident)
                    result.append(self._attachment(uploads[ident], channel, entry))
                else:
                    raise ApiError(
                        400,
                        50035,
                        "Invalid Form Body",
                        {
                            "attachments": {
                                str(i): {
                                    "_errors": [
                                        {
                                            "code": "ATTACHMENT_NOT_FOUND",
                                            "message": f"Unknown attachment id {ident}",
                                        }
                                    ]
                                }
                            }
                        },
                    )
        else:
            result.extend(existing)
        for index in sorted(set(uploads) - used):
            result.append(self._attachment(uploads[index], channel, {}))
        if len(result) > MAX_ATTACHMENTS:
            raise ApiError(
                400,
                30015,
                f"Maximum number of attachments in a message reached ({MAX_ATTACHMENTS})",
            )
        return result

    def _attachment(
        self, upload: UploadedFile, channel: Channel, entry: dict[str, Any]
    ) -> Attachment:
        filename = entry.get("filename") or upload.filename
        content_type, width, height = sniff_image(upload.data, filename, upload.content_type)
        return self.standin._new_attachment(
            filename,
            upload.data,
            channel,
            content_type=content_type,
            width=width,
            height=height,
            description=entry.get("description"),
        )

    def _mentions(
        self, content: str, allowed: dict[str, Any] | None, reply_to: Message | None
    ) -> list[User]:
        users: list[User] = []
        parse = None if allowed is None else set(allowed.get("parse") or [])
        explicit = set() if allowed is None else {int(u) for u in allowed.get("users") or []}
        for user_id in map(int, _MENTION_RE.findall(content or "")):
            if parse is None or "users" in parse or user_id in explicit:
                user = self.standin.user_by_id(user_id)
                if user is not None and user not in users:
                    users.append(user)
        ping_reply = allowed is None or allowed.get("replied_user", False)
        if reply_to is not None and ping_reply and reply_to.author not in users:
            users.append(reply_to.author)
        return users

    def _new_message(
        self,
        channel: Channel,
        payload: dict[str, Any],
        uploads: dict[int, UploadedFile],
        *,
        flags: int,
        type: int,
        interaction: InteractionRecord | None = None,
        reply_to: Message | None = None,
    ) -> Message:
        bot = self.standin.bot_user
        allowed = payload.get("allowed_mentions")
        message = Message(
            id=new_snowflake(),
            channel=channel,
            author=bot,
            content=payload.get("content") or "",
            attachments=self._attachments(payload, uploads, [], channel),
            embeds=list(payload.get("embeds") or []),
            components=list(payload.get("components") or []),
            flags=flags,
            type=type,
            allowed_mentions=allowed,
            interaction=interaction,
            webhook_id=self.standin.application_id if interaction else None,
            application_id=self.standin.application_id if interaction else None,
        )
        if reply_to is not None:
            message.reference = reference_to(reply_to)
            message.referenced = reply_to
        message.mentions = self._mentions(message.content, allowed, reply_to)
        return message

    async def _edit(
        self, message: Message, payload: dict[str, Any], uploads: dict[int, UploadedFile]
    ) -> None:
        """PATCH semantics: only given fields change; `attachments` lists what stays."""
        content = (payload["content"] or "") if "content" in payload else message.content
        embeds = list(payload["embeds"] or []) if "embeds" in payload else message.embeds
        components = (
            list(payload["components"] or []) if "components" in payload else message.components
        )
        attachments = self._attachments(payload, uploads, message.attachments, message.channel)
        if not (content.strip() or embeds or components or attachments):
            raise ApiError(400, 50006, "Cannot send an empty message")
        message.content, message.embeds, message.components = content, embeds, components
        message.attachments = attachments
        if "allowed_mentions" in payload:
            message.allowed_mentions = payload["allowed_mentions"]
        if "flags" in payload and payload["flags"] is not None:
            settable = MessageFlag.SUPPRESS_EMBEDS | MessageFlag.IS_COMPONENTS_V2
            message.flags = (message.flags & ~MessageFlag.SUPPRESS_EMBEDS) | (
                int(payload["flags"]) & settable
            )
        was_loading = message.loading
        message.flags &= ~MessageFlag.LOADING
        message.mentions = self._mentions(
            message.content, message.allowed_mentions, message.referenced
        )
        if not was_loading:
            message.edited_at = iso_now()
        await self.standin._message_edited(message)
