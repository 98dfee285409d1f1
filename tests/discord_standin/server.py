"""`DiscordStandin`: the world, the aiohttp server, and the test-facing API (act as users, wait)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .gateway import (
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_PRESENCES,
    INTENT_MESSAGE_CONTENT,
    OP_RECONNECT,
    PRIVILEGED_INTENTS,
    Gateway,
    GatewaySession,
)
from .models import (
    DEFAULT_BOT_PERMISSIONS,
    Attachment,
    Channel,
    Guild,
    InteractionRecord,
    InteractionType,
    Message,
    MessageType,
    Perm,
    RecordedRequest,
    StandinTimeout,
    User,
    iter_components,
    new_snowflake,
    permission_value,
    reference_to,
)
from .rest import RestApi, json_response, sniff_image

ALL_INTENTS = (1 << 26) - 1
Describe = str | Callable[[], str]


class DiscordStandin:
    """A local Discord (REST v10 + gateway) for the real discord.py client.

    Args:
        ack_deadline: seconds the bot has to acknowledge an interaction (Discord: 3).
        token_lifetime: seconds an interaction token works for follow-ups/edits (Discord: 900).
        heartbeat_interval: seconds announced in HELLO.
        require_token: when True only `standin.token` is accepted (else any token).
        allowed_privileged_intents: intents the "developer portal" allows; asking for others
            closes the gateway with 4014 like Discord.
        enforce_message_content: without the message-content intent the bot gets empty
            content for messages that do not mention it (Discord's rule).
        bot_name: the bot user's name.
    """

    def __init__(
        self,
        *,
        ack_deadline: float = 3.0,
        token_lifetime: float = 900.0,
        heartbeat_interval: float = 41.25,
        require_token: bool = False,
        allowed_privileged_intents: int = PRIVILEGED_INTENTS,
        enforce_message_content: bool = True,
        bot_name: str = "Imagine",
    ) -> None:
        self.ack_deadline = ack_deadline
        self.token_lifetime = token_lifetime
        self.require_token = require_token
        self.enforce_message_content = enforce_message_content
        self.bot_user = User(new_snowflake(), bot_name, bot=True)
        self.recommended_shards = 1  # what GET /gateway/bot tells an auto-sharded client
        self.application_id = self.bot_user.id  # modern apps: application id == bot user id
        self.owner = User(new_snowflake(), "app-owner")
        encoded_id = base64.urlsafe_b64encode(str(self.bot_user.id).encode()).decode().rstrip("=")
        self.token = f"{encoded_id}.standin.{secrets.token_urlsafe(27)}"

        self.guilds: list[Guild] = []
        self.users: list[User] = []
        self.requests: list[RecordedRequest] = []
        self.interactions: list[InteractionRecord] = []
        self._messages: list[Message] = []
        self._messages_by_id: dict[int, Message] = {}
        self._guilds_by_id: dict[int, Guild] = {}
        self._channels_by_id: dict[int, Channel] = {}
        self._users_by_id: dict[int, User] = {
            self.bot_user.id: self.bot_user,
            self.owner.id: self.owner,
        }
        self._attachments_by_id: dict[int, Attachment] = {}
        self._interactions_by_id: dict[int, InteractionRecord] = {}
        self._interactions_by_token: dict[str, InteractionRecord] = {}
        # scope (None = global, else guild id) -> (name, type) -> command as stored
        self._commands: dict[int | None, dict[tuple[str, int], dict[str, Any]]] = {}
        self._commands_synced: set[int | None] = set()
        self._change = asyncio.Event()

        privileged = allowed_privileged_intents
        self.application_flags = (1 << 23) | sum(
            flag
            for intent, flag in (
                (INTENT_GUILD_PRESENCES, 1 << 13),
                (INTENT_GUILD_MEMBERS, 1 << 15),
                (INTENT_MESSAGE_CONTENT, 1 << 19),
            )
            if privileged & intent
        )
        self.gateway = Gateway(
            self, heartbeat_interval=heartbeat_interval, allowed_privileged_intents=privileged
        )
        self._rest = RestApi(self)
        self._runner: web.AppRunner | None = None
        self.base_url = self.api_base = self.gateway_url = ""

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> DiscordStandin:
        """Serve on 127.0.0.1 (random free port); sets `api_base` and `gateway_url`."""
        app = web.Application(client_max_size=256 * 2**20)
        app.router.add_route("*", r"/api/v{version:\d+}/{tail:.*}", self._rest.handle)
        app.router.add_get(
            "/attachments/{channel_id}/{attachment_id}/{filename}", self._serve_attachment
        )
        app.router.add_get("/", self.gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_base = f"{self.base_url}/api/v10"
        self.gateway_url = f"ws://127.0.0.1:{port}/"
        self.gateway.start()
        return self

    async def close(self) -> None:
        """Stop serving. Close the bot first (`await bot.close()`), or it will try to reconnect."""
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordStandin:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def accepts_token(self, token: str | None) -> bool:
        return bool(token) and (not self.require_token or token == self.token)

    # ----------------------------------------------------------------- world

    def add_guild(
        self,
        name: str = "Test guild",
        *,
        attachment_size_limit: int = 10 * 2**20,
        bot_permissions: Any = DEFAULT_BOT_PERMISSIONS,
        preferred_locale: str = "en-US",
    ) -> Guild:
        """Add a guild the bot is in; after the bot connected, GUILD_CREATE is dispatched."""
        guild = Guild(
            id=new_snowflake(),
            name=name,
            owner_id=self.owner.id,
            attachment_size_limit=attachment_size_limit,
            bot_permissions=permission_value(bot_permissions),
            preferred_locale=preferred_locale,
            bot_user_id=self.bot_user.id,
        )
        self.guilds.append(guild)
        self._guilds_by_id[guild.id] = guild
        self.gateway.enqueue(
            "GUILD_CREATE", lambda s: self.guild_create_payload(guild, s), guild_id=guild.id
        )
        return guild

    def add_channel(
        self,
        guild: Guild,
        name: str = "general",
        *,
        nsfw: bool = False,
        topic: str | None = None,
        bot_permissions: Any = None,
    ) -> Channel:
        """Add a text channel; after the bot connected, CHANNEL_CREATE is dispatched."""
        channel = Channel(
            id=new_snowflake(),
            guild=guild,
            name=name,
            nsfw=nsfw,
            topic=topic,
            position=len(guild.channels),
            bot_permissions=None if bot_permissions is None else permission_value(bot_permissions),
        )
        guild.channels.append(channel)
        self._channels_by_id[channel.id] = channel
        self.gateway.enqueue("CHANNEL_CREATE", channel.payload(), guild_id=guild.id)
        return channel

    def add_dm_channel(self, user: User, *, attachment_size_limit: int = 10 * 2**20) -> Channel:
        """The bot's DM channel with `user` (the same one when asked again)."""
        for channel in self._channels_by_id.values():
            if channel.recipient is user:
                return channel
        channel = Channel(
            id=new_snowflake(),
            guild=None,
            name=user.name,
            type=1,
            recipient=user,
            dm_attachment_size_limit=attachment_size_limit,
        )
        self._channels_by_id[channel.id] = channel
        return channel

    def add_user(
        self,
        name: str,
        *,
        permissions: Any = 0,
        locale: str = "en-US",
        guilds: list[Guild] | None = None,
        global_name: str | None = None,
    ) -> User:
        """Add a human user, member of every guild (or of `guilds`).

        `permissions` (int, `Perm` or `discord.Permissions`) is OR-ed onto the default member
        permissions; it is what `interaction.permissions` shows the bot.
        """
        user = User(
            id=new_snowflake(),
            name=name,
            global_name=global_name,
            permissions=permission_value(permissions),
            locale=locale,
            guild_ids=None if guilds is None else {g.id for g in guilds},
        )
        self.users.append(user)
        self._users_by_id[user.id] = user
        return user

    def guild_by_id(self, guild_id: int) -> Guild | None:
        return self._guilds_by_id.get(guild_id)

    def channel_by_id(self, channel_id: int) -> Channel | None:
        return self._channels_by_id.get(channel_id)

    def user_by_id(self, user_id: int) -> User | None:
        return self._users_by_id.get(user_id)

    def message_by_id(self, message_id: int) -> Message | None:
        return self._messages_by_id.get(message_id)

    def members_of(self, guild: Guild) -> list[User]:
        return [u for u in self.users if u.is_member_of(guild)]

    # -------------------------------------------------------------- payloads

    def application_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_user.name,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": self.application_flags,
            "owner": self.owner.payload(),
            "team": None,
            "bot": self.bot_user.payload(),
            "rpc_origins": [],
            "redirect_uris": [],
            "tags": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "approximate_guild_count": len(self.guilds),
        }

    def guild_create_payload(self, guild: Guild, session: GatewaySession) -> dict[str, Any]:
        # Without the members intent Discord sends only the bot's own member.
        members = [self.bot_user.member_payload(guild)]
        if session.has_intent(INTENT_GUILD_MEMBERS):
            members += [u.member_payload(guild) for u in self.members_of(guild)]
        return guild.payload(members=members)

    def bot_view(self, message: Message, intents: int | None = None) -> dict[str, Any]:
        """The message as the bot may see it: no content without the intent unless mentioned."""
        if intents is None:
            sessions = self.gateway.live_sessions
            intents = sessions[-1].intents if sessions else ALL_INTENTS
        payload = message.payload()
        if self.enforce_message_content and not intents & INTENT_MESSAGE_CONTENT:
            self._hide_content(payload, message)
        return payload

    def _hide_content(self, payload: dict[str, Any], message: Message) -> None:
        exempt = (
            message.author is self.bot_user
            or self.bot_user in message.mentions
            or message.guild is None  # DMs are exempt from the intent
        )
        if not exempt:
            payload.update(content="", embeds=[], attachments=[], components=[])
            payload.pop("poll", None)
        referenced = payload.get("referenced_message")
        if referenced and message.referenced is not None:
            self._hide_content(referenced, message.referenced)

    # ------------------------------------------------------- message storage

    def _new_attachment(
        self, filename: str, data: bytes, channel: Channel, **fields: Any
    ) -> Attachment:
        attachment_id = new_snowflake()
        url = f"{self.base_url}/attachments/{channel.id}/{attachment_id}/{quote(filename)}"
        attachment = Attachment(id=attachment_id, filename=filename, data=data, url=url, **fields)
        self._attachments_by_id[attachment_id] = attachment
        return attachment

    def _message_event(self, message: Message) -> Callable[[GatewaySession], dict[str, Any]]:
        """The message as each session may see it, frozen now (events carry that moment's state)."""
        full = self.bot_view(message, ALL_INTENTS)
        hidden = self.bot_view(message, ALL_INTENTS & ~INTENT_MESSAGE_CONTENT)
        return lambda session: full if session.has_intent(INTENT_MESSAGE_CONTENT) else hidden

    async def _store_message(self, message: Message) -> None:
        self._messages.append(message)
        self._messages_by_id[message.id] = message
        message.revisions.append(message.payload())
        self._changed()
        if not message.ephemeral:
            await self.gateway.dispatch(
                "MESSAGE_CREATE", self._message_event(message), guild_id=_guild_id(message)
            )

    async def _message_edited(self, message: Message) -> None:
        message.revisions.append(message.payload())
        self._changed()
        if not message.ephemeral:
            await self.gateway.dispatch(
                "MESSAGE_UPDATE", self._message_event(message), guild_id=_guild_id(message)
            )

    async def _delete_message(self, message: Message) -> None:
        message.deleted = True
        self._changed()
        if not message.ephemeral:
            await self.gateway.dispatch(
                "MESSAGE_DELETE",
                {
                    "id": str(message.id),
                    "channel_id": str(message.channel.id),
                    **({} if message.guild is None else {"guild_id": str(message.guild.id)}),
                },
                guild_id=_guild_id(message),
            )

    async def _serve_attachment(self, request: web.Request) -> web.Response:
        attachment = self._attachments_by_id.get(int(request.match_info["attachment_id"]))
        if attachment is None:
            return web.Response(status=404, text="404: Not Found")
        return web.Response(
            body=attachment.data,
            headers={"Content-Type": attachment.content_type or "application/octet-stream"},
        )

    async def _unknown(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                json=None,
                files=[],
                time=asyncio.get_running_loop().time(),
                status=404,
                response={"code": 0, "message": "404: Not Found"},
                known_route=False,
            )
        )
        self._changed()
        return json_response(404, {"code": 0, "message": "404: Not Found"})

    # ------------------------------------------------------------- acting as users

    def _require_connected(self) -> None:
        if not self.gateway.live_sessions:
            raise AssertionError(
                "the bot is not connected to the stand-in's gateway "
                "(start it, then `await standin.wait_for_identify()`)"
            )

    def _find_command(self, name: str, command_type: int, channel: Channel) -> dict[str, Any]:
        guild = channel.guild
        scopes = (None,) if guild is None else (guild.id, None)
        for scope in scopes:
            command = self._commands.get(scope, {}).get((name, command_type))
            if command is None:
                continue
            contexts = command.get("contexts")
            in_dms = contexts is None and command.get("dm_permission") is not False
            if guild is None and not (in_dms or (contexts and 1 in contexts)):
                raise ValueError(f"{name!r} is not available in DMs (the client does not offer it)")
            return command
        known = {
            scope_name: sorted(n for n, t in self._commands.get(scope, {}) if t == command_type)
            for scope_name, scope in (("global", None), ("guild", guild and guild.id))
        }
        raise AssertionError(
            f"command {name!r} (type {command_type}) is not registered; registered: {known}. "
            "Did the bot sync its command tree? (`await standin.wait_for_commands()`)"
        )

    async def _dispatch_interaction(
        self,
        kind: InteractionType,
        user: User,
        channel: Channel,
        data: dict[str, Any],
        *,
        message: Message | None = None,
        locale: str | None = None,
        command_name: str = "",
    ) -> InteractionRecord:
        self._require_connected()
        guild = channel.guild
        member_permissions = user.member_permissions
        payload: dict[str, Any] = {
            "id": str(new_snowflake()),
            "application_id": str(self.application_id),
            "type": int(kind),
            "data": data,
            "channel_id": str(channel.id),
            "channel": {**channel.payload(), "permissions": str(member_permissions)},
            "token": secrets.token_urlsafe(96),
            "version": 1,
            "app_permissions": str(channel.effective_bot_permissions),
            "locale": locale or user.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            # guild install: the guild's id, or "0" in the bot's DM
            "authorizing_integration_owners": {"0": str(guild.id if guild else 0)},
            "context": 0 if guild else 1,  # GUILD or BOT_DM
            "attachment_size_limit": channel.attachment_size_limit,
        }
        if guild is None:
            payload["user"] = user.payload()
        else:
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": guild.preferred_locale, "features": []},
                member={**user.member_payload(guild), "permissions": str(member_permissions)},
                guild_locale=guild.preferred_locale,
            )
        if message is not None:
            payload["message"] = message.payload()
        ix = InteractionRecord(
            id=int(payload["id"]),
            token=payload["token"],
            type=kind,
            user=user,
            channel=channel,
            payload=payload,
            command_name=command_name,
            message=message,
            _standin=self,
        )
        self.interactions.append(ix)
        self._interactions_by_id[ix.id] = ix
        self._interactions_by_token[ix.token] = ix
        ix.created_at = asyncio.get_running_loop().time()
        await self.gateway.dispatch(
            "INTERACTION_CREATE", payload, guild_id=None if guild is None else guild.id
        )
        return ix

    async def slash_command(
        self,
        user: User,
        channel: Channel,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        locale: str | None = None,
        strict: bool = True,
    ) -> InteractionRecord:
        """Use a registered slash command, like the Discord client would send it.

        Args:
            name: the command, or `"group sub"` / `"command sub"` for subcommands.
            options: option name -> value. STRING str, INTEGER int, NUMBER float, BOOLEAN bool,
                USER `User`, CHANNEL `Channel` (or id), ROLE id, ATTACHMENT bytes or
                (filename, bytes). Checked against the registered command (types, required,
                choices, ranges) unless `strict=False`.
        """
        self._require_connected()
        data, _ = self._command_data(name, options or {}, user, channel, strict=strict)
        return await self._dispatch_interaction(
            InteractionType.APPLICATION_COMMAND,
            user,
            channel,
            data,
            locale=locale,
            command_name=name,
        )

    async def autocomplete(
        self,
        user: User,
        channel: Channel,
        name: str,
        options: dict[str, Any],
        *,
        focused: str,
        locale: str | None = None,
    ) -> InteractionRecord:
        """Type 4: the user is typing `options[focused]`; `ix.choices` holds the answer."""
        self._require_connected()
        data, _ = self._command_data(name, options, user, channel, strict=False, focused=focused)
        return await self._dispatch_interaction(
            InteractionType.AUTOCOMPLETE, user, channel, data, locale=locale, command_name=name
        )

    def _command_data(
        self,
        name: str,
        values: dict[str, Any],
        user: User,
        channel: Channel,
        *,
        strict: bool,
        focused: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        parts = name.split()
        command = self._find_command(parts[0], 1, channel)
        data: dict[str, Any] = {"id": command["id"], "name": parts[0], "type": 1}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        container, definitions = data, command.get("options") or []
        for sub in parts[1:]:
            found = next((o for o in definitions if o["name"] == sub and o["type"] in (1, 2)), None)
            if found is None:
                subs = [o["name"] for o in definitions if o["type"] in (1, 2)]
                raise ValueError(f"/{name}: no subcommand {sub!r} (has {subs})")
            entry: dict[str, Any] = {"name": sub, "type": found["type"], "options": []}
            container["options"] = [entry]
            container, definitions = entry, found.get("options") or []
        if any(o["type"] in (1, 2) for o in definitions):
            subs = [o["name"] for o in definitions if o["type"] in (1, 2)]
            raise ValueError(f"/{name} needs a subcommand: one of {subs}")
        resolved: dict[str, Any] = {}
        container["options"] = self._options(
            name, definitions, values, user, channel, resolved, strict=strict, focused=focused
        )
        if resolved:
            data["resolved"] = resolved
        return data, resolved

    def _options(
        self,
        command: str,
        definitions: list[dict[str, Any]],
        values: dict[str, Any],
        user: User,
        channel: Channel,
        resolved: dict[str, Any],
        *,
        strict: bool,
        focused: str | None,
    ) -> list[dict[str, Any]]:
        by_name = {o["name"]: o for o in definitions}
        for key in values:
            if key not in by_name:
                raise ValueError(f"/{command} has no option {key!r}; it has {list(by_name)}")
        if strict:
            missing = [
                o["name"]
                for o in definitions
                if o.get("required") and values.get(o["name"]) is None
            ]
            if missing:
                raise ValueError(f"/{command}: required option(s) {missing} missing")
        options = []
        for key, value in values.items():
            if value is None:
                continue
            definition = by_name[key]
            if key == focused:
                options.append(
                    {"name": key, "type": definition["type"], "value": str(value), "focused": True}
                )
                continue
            options.append(
                {
                    "name": key,
                    "type": definition["type"],
                    "value": self._option_value(
                        command, definition, value, user, channel, resolved, strict=strict
                    ),
                }
            )
        return options

    def _option_value(
        self,
        command: str,
        definition: dict[str, Any],
        value: Any,
        user: User,
        channel: Channel,
        resolved: dict[str, Any],
        *,
        strict: bool,
    ) -> Any:
        kind, name = definition["type"], definition["name"]
        where = f"/{command} option {name!r}"

        def refuse(reason: str) -> ValueError:
            return ValueError(f"{where}: {reason} (the Discord client would not send this)")

        python_types = {3: (str,), 4: (int,), 5: (bool,), 10: (int, float)}
        if kind in python_types:
            if not isinstance(value, python_types[kind]) or (
                kind in (4, 10) and isinstance(value, bool)
            ):
                raise refuse(f"expected {python_types[kind]}, got {value!r}")
            if strict:
                choices = [c["value"] for c in definition.get("choices") or []]
                if choices and value not in choices:
                    raise refuse(f"{value!r} is not one of the choices {choices}")
                low, high = definition.get("min_value"), definition.get("max_value")
                if kind in (4, 10) and (
                    (low is not None and value < low) or (high is not None and value > high)
                ):
                    raise refuse(f"{value!r} is outside [{low}, {high}]")
                min_len, max_len = definition.get("min_length"), definition.get("max_length", 6000)
                if kind == 3 and (
                    (min_len is not None and len(value) < min_len) or len(value) > max_len
                ):
                    raise refuse(f"length {len(value)} is outside [{min_len}, {max_len}]")
            return value
        guild = channel.guild
        if kind in (6, 9):  # USER, MENTIONABLE
            target = value if isinstance(value, User) else self.user_by_id(int(value))
            if target is None:
                raise refuse(f"unknown user {value!r}")
            resolved.setdefault("users", {})[str(target.id)] = target.payload()
            if guild is not None and (target is self.bot_user or target.is_member_of(guild)):
                member = target.member_payload(guild, with_user=False)
                member["permissions"] = str(target.member_permissions)
                resolved.setdefault("members", {})[str(target.id)] = member
            return str(target.id)
        if kind == 7:  # CHANNEL
            target = value if isinstance(value, Channel) else self.channel_by_id(int(value))
            if target is None:
                raise refuse(f"unknown channel {value!r}")
            types = definition.get("channel_types")
            if strict and types and target.type not in types:
                raise refuse(f"channel type {target.type} not in {types}")
            resolved.setdefault("channels", {})[str(target.id)] = {
                "id": str(target.id),
                "name": target.name,
                "type": target.type,
                "permissions": str(user.member_permissions),
                "nsfw": target.nsfw,
                "parent_id": None,
                "guild_id": str(target.guild.id) if target.guild else None,
                "topic": target.topic,
                "position": target.position,
                "flags": 0,
            }
            return str(target.id)
        if kind == 8 and guild is not None:  # ROLE: only @everyone exists
            resolved.setdefault("roles", {})[str(guild.id)] = guild.everyone_role()
            return str(guild.id)
        if kind == 11:  # ATTACHMENT
            if isinstance(value, Attachment):
                attachment = value
            else:
                filename, data = value if isinstance(value, tuple) else ("upload.png", value)
                content_type, width, height = sniff_image(data, filename, None)
                attachment = self._new_attachment(
                    filename, data, channel, content_type=content_type, width=width, height=height
                )
            payload = attachment.payload()
            payload["ephemeral"] = True
            resolved.setdefault("attachments", {})[str(attachment.id)] = payload
            return str(attachment.id)
        raise refuse(f"option type {kind} is not supported by the stand-in")

    async def click(self, user: User, message: Message, custom_id: str) -> InteractionRecord:
        """Click a button on a stored message (type 3 interaction)."""
        component = self._usable_component(message, custom_id)
        if component.get("type") != 2:
            raise AssertionError(
                f"{custom_id!r} on message {message.id} is not a button; use select()"
            )
        return await self._dispatch_interaction(
            InteractionType.MESSAGE_COMPONENT,
            user,
            message.channel,
            {"custom_id": custom_id, "component_type": 2},
            message=message,
        )

    async def select(
        self, user: User, message: Message, custom_id: str, values: list[str]
    ) -> InteractionRecord:
        """Pick `values` in a string select menu on a stored message."""
        component = self._usable_component(message, custom_id)
        if component.get("type") != 3:
            raise AssertionError(f"{custom_id!r} on message {message.id} is not a string select")
        offered = [o["value"] for o in component.get("options") or []]
        unknown = [v for v in values if v not in offered]
        low, high = component.get("min_values", 1), component.get("max_values", 1)
        if unknown or not low <= len(values) <= high:
            raise ValueError(
                f"select {custom_id!r}: {values} not allowed (options {offered}, "
                f"{low}..{high} values)"
            )
        return await self._dispatch_interaction(
            InteractionType.MESSAGE_COMPONENT,
            user,
            message.channel,
            {"custom_id": custom_id, "component_type": 3, "values": list(values)},
            message=message,
        )

    def _usable_component(self, message: Message, custom_id: str) -> dict[str, Any]:
        self._require_connected()
        if message.deleted:
            raise AssertionError(f"message {message.id} was deleted; nobody can click on it")
        current = self._messages_by_id.get(message.id, message)
        try:
            component = current.component(custom_id)
        except KeyError as error:
            raise AssertionError(str(error.args[0])) from None
        if component.get("disabled"):
            raise AssertionError(
                f"{custom_id!r} on message {message.id} is disabled; a user cannot use it"
            )
        return component

    async def delete_message(self, user: User, message: Message) -> None:
        """A member deletes `message` in the client (their own, or anyone's with Manage
        Messages): it is gone and MESSAGE_DELETE is dispatched."""
        self._require_connected()
        if message.deleted:
            raise AssertionError(f"message {message.id} is already deleted")
        guild = message.guild
        if message.author is not user:
            allowed = guild is not None and bool(
                user.member_permissions & (Perm.MANAGE_MESSAGES | Perm.ADMINISTRATOR)
            )
            if not allowed:
                raise ValueError(f"{user!r} may not delete message {message.id} of another member")
        await self._delete_message(message)

    async def context_menu(
        self,
        user: User,
        target: Message | User,
        name: str,
        *,
        channel: Channel | None = None,
        locale: str | None = None,
    ) -> InteractionRecord:
        """Use a message context-menu command on `target`, or a user one (pass `channel` then)."""
        if isinstance(target, Message):
            channel = target.channel
        elif channel is None:
            raise ValueError("a user context menu needs the channel it is used in: channel=...")
        self._require_connected()
        is_message = isinstance(target, Message)
        command = self._find_command(name, 3 if is_message else 2, channel)
        if is_message:
            resolved = {"messages": {str(target.id): target.payload()}}
        else:
            resolved = {"users": {str(target.id): target.payload()}}
            if channel.guild is not None:
                member = target.member_payload(channel.guild, with_user=False)
                resolved["members"] = {str(target.id): member}
        data = {
            "id": command["id"],
            "name": name,
            "type": 3 if is_message else 2,
            "target_id": str(target.id),
            "resolved": resolved,
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._dispatch_interaction(
            InteractionType.APPLICATION_COMMAND,
            user,
            channel,
            data,
            locale=locale,
            command_name=name,
        )

    async def submit_modal(
        self, user: User, ix: InteractionRecord, values: dict[str, str | list[str]]
    ) -> InteractionRecord:
        """Submit the modal the bot opened in answer to `ix` (callback type 9)."""
        if ix.modal is None:
            raise AssertionError(f"the bot did not answer {ix!r} with a modal")
        inputs = {
            c["custom_id"]: c
            for c in iter_components(ix.modal.get("components"))
            if "custom_id" in c
        }
        unknown = set(values) - set(inputs)
        if unknown:
            raise ValueError(
                f"modal {ix.modal.get('custom_id')!r} has no inputs {sorted(unknown)}; "
                f"it has {sorted(inputs)}"
            )
        missing = [
            k
            for k, c in inputs.items()
            if c.get("type") == 4 and c.get("required", True) and k not in values
        ]
        if missing:
            raise ValueError(
                f"modal {ix.modal.get('custom_id')!r}: required inputs {missing} missing"
            )

        def answer(component: dict[str, Any]) -> dict[str, Any]:
            custom_id = component["custom_id"]
            if component["type"] == 4:
                return {"type": 4, "custom_id": custom_id, "value": str(values.get(custom_id, ""))}
            picked = values.get(custom_id, [])
            return {
                "type": component["type"],
                "custom_id": custom_id,
                "values": [picked] if isinstance(picked, str) else list(picked),
            }

        components = []
        for top in ix.modal.get("components") or []:
            if top.get("type") == 1:
                components.append({"type": 1, "components": [answer(c) for c in top["components"]]})
            elif top.get("type") == 18:
                components.append(
                    {"type": 18, "id": top.get("id"), "component": answer(top["component"])}
                )
        return await self._dispatch_interaction(
            InteractionType.MODAL_SUBMIT,
            user,
            ix.channel,
            {"custom_id": ix.modal["custom_id"], "components": components},
            message=ix.message,
        )

    async def user_message(
        self,
        user: User,
        channel: Channel,
        content: str = "",
        *,
        reply_to: Message | None = None,
        mentions_bot: bool | None = None,
        files: list[tuple[str, bytes]] | None = None,
    ) -> Message:
        """A user posts in `channel` (MESSAGE_CREATE).

        `mentions_bot` defaults to True for a reply to the bot (Discord keeps the reply ping on)
        and to whether `content` contains the bot's mention otherwise.
        """
        self._require_connected()
        mentions = [
            u for uid in map(int, _mention_ids(content)) if (u := self.user_by_id(uid)) is not None
        ]
        if mentions_bot is None:
            mentions_bot = reply_to is not None and reply_to.author is self.bot_user
        if mentions_bot and self.bot_user not in mentions:
            mentions.append(self.bot_user)
        if not mentions_bot and self.bot_user in mentions:
            mentions.remove(self.bot_user)
        message = Message(
            id=new_snowflake(),
            channel=channel,
            author=user,
            content=content,
            type=MessageType.REPLY if reply_to is not None else MessageType.DEFAULT,
            mentions=mentions,
        )
        for filename, data in files or []:
            content_type, width, height = sniff_image(data, filename, None)
            message.attachments.append(
                self._new_attachment(
                    filename, data, channel, content_type=content_type, width=width, height=height
                )
            )
        if reply_to is not None:
            message.reference = reference_to(reply_to)
            message.referenced = reply_to
        await self._store_message(message)
        return message

    # ------------------------------------------------------- gateway control

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the bot's gateway connection; discord.py reconnects and RESUMEs."""
        await self.gateway.drop(code)

    async def send_reconnect(self) -> None:
        """Send op 7 RECONNECT; discord.py reconnects and RESUMEs."""
        await self.gateway.send_op(OP_RECONNECT)

    # ---------------------------------------------------------------- tokens

    def expire_token(self, interaction: InteractionRecord | str) -> None:
        """Make an interaction token invalid: webhook calls then answer 401 50027."""
        ix = (
            interaction
            if isinstance(interaction, InteractionRecord)
            else self._interactions_by_token[interaction]
        )
        ix.expired = True

    # ------------------------------------------------------- queries and waits

    def commands(self, guild: Guild | None = None) -> list[dict[str, Any]]:
        """Registered commands (global, or of `guild`) as stored: the body sent plus ids."""
        return list(self._commands.get(None if guild is None else guild.id, {}).values())

    def messages(
        self,
        channel: Channel | None = None,
        *,
        include_deleted: bool = False,
        include_ephemeral: bool = True,
    ) -> list[Message]:
        """Stored messages in creation order."""
        return [
            m
            for m in self._messages
            if (channel is None or m.channel is channel)
            and (include_deleted or not m.deleted)
            and (include_ephemeral or not m.ephemeral)
        ]

    @property
    def failed_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.status is not None and r.status >= 400]

    @property
    def unknown_routes(self) -> list[RecordedRequest]:
        return [r for r in self.requests if not r.known_route]

    def requests_to(
        self, method: str | None = None, path_contains: str = ""
    ) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and path_contains in r.path
        ]

    def assert_no_failed_requests(self) -> None:
        """Fail listing every REST request Discord would have refused."""
        if self.failed_requests:
            lines = "\n".join(f"  {r!r} {r.response}" for r in self.failed_requests)
            raise AssertionError(f"{len(self.failed_requests)} REST request(s) failed:\n{lines}")

    def _changed(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def wait_until(self, check: Callable[[], Any], what: Describe, timeout: float) -> Any:
        """Wait until `check()` is truthy (re-checked on every change); return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = check()
            if result:
                return result
            event = self._change
            remaining = deadline - loop.time()
            if remaining <= 0:
                description = what() if callable(what) else what
                raise StandinTimeout(
                    f"timed out after {timeout:g}s waiting for {description}\n{self.describe()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    def describe(self, last: int = 8) -> str:
        """A short account of recent traffic, for failure messages."""
        sessions = self.gateway.live_sessions
        lines = [
            f"gateway: {len(sessions)} session(s), {len(self.gateway.connections)} "
            f"connection(s), {self.gateway.identify_count} identify"
        ]
        lines.append(f"last {last} REST requests:")
        lines += [f"  {r!r}" for r in self.requests[-last:]] or ["  (none)"]
        if self.failed_requests:
            lines.append("failed requests:")
            lines += [f"  {r!r} {r.response}" for r in self.failed_requests[-last:]]
        lines.append(f"last {last} messages:")
        lines += [f"  {m!r}" for m in self._messages[-last:]] or ["  (none)"]
        return "\n".join(lines)

    async def wait_for_identify(self, timeout: float = 5.0, *, count: int = 1) -> None:
        """Wait until the bot has identified `count` times (READY and GUILD_CREATEs sent)."""
        await self.wait_until(
            lambda: self.gateway.identify_count >= count,
            f"IDENTIFY number {count} from the bot",
            timeout,
        )

    async def wait_for_resume(self, timeout: float = 5.0, *, count: int = 1) -> None:
        await self.wait_until(
            lambda: self.gateway.resume_count >= count,
            f"RESUME number {count} from the bot",
            timeout,
        )

    async def wait_for_commands(
        self, guild: Guild | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Wait until the bot registered its commands (global, or for `guild`); return them."""
        scope = None if guild is None else guild.id
        await self.wait_until(
            lambda: scope in self._commands_synced,
            f"the bot to register {'global' if guild is None else guild!r} commands",
            timeout,
        )
        return self.commands(guild)

    async def wait_for_message(
        self,
        predicate: Callable[[Message], bool] | None = None,
        *,
        timeout: float = 10.0,
        channel: Channel | None = None,
        after: Message | None = None,
        include_deleted: bool = False,
    ) -> Message:
        """Wait for a stored message (created or edited) matching `predicate`; the first wins.

        `after`: only messages created after this one.
        """

        def check() -> Message | None:
            for message in self.messages(channel, include_deleted=include_deleted):
                if after is not None and message.id <= after.id:
                    continue
                if predicate is None or predicate(message):
                    return message
            return None

        name = getattr(predicate, "__name__", "predicate")
        where = f" in #{channel.name}" if channel else ""
        return await self.wait_until(check, f"a message{where} matching {name}", timeout)

    async def wait_for_request(
        self,
        method: str | None = None,
        path_contains: str = "",
        *,
        timeout: float = 10.0,
        count: int = 1,
    ) -> RecordedRequest:
        """Wait until `count` matching REST requests were answered; return the last."""

        def check() -> RecordedRequest | None:
            found = [r for r in self.requests_to(method, path_contains) if r.status is not None]
            return found[count - 1] if len(found) >= count else None

        return await self.wait_until(
            check, f"{method or 'any'} request to {path_contains!r}", timeout
        )


def _guild_id(message: Message) -> int | None:
    return None if message.guild is None else message.guild.id


def _mention_ids(content: str) -> list[str]:
    return re.findall(r"<@!?(\d+)>", content or "")
