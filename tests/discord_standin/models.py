"""The stand-in's world: users, guilds, channels, messages, interactions, recorded requests.

Records hold Python values (int ids, bytes); `payload()` methods render the Discord v10 JSON that
discord.py reads (ids as strings).
"""

from __future__ import annotations

import datetime as dt
import enum
import io
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterator

    from PIL import Image

DISCORD_EPOCH_MS = 1_420_070_400_000
_snowflake_counter = itertools.count()


def new_snowflake() -> int:
    """A fresh, increasing Discord snowflake (timestamp in the top bits, like Discord's)."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_snowflake_counter) & 0x3FFFFF)


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class Perm(enum.IntFlag):
    """Discord permission bits (the ones this bot's tests are likely to need)."""

    CREATE_INSTANT_INVITE = 1 << 0
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    USE_APPLICATION_COMMANDS = 1 << 31
    CREATE_PUBLIC_THREADS = 1 << 35
    SEND_MESSAGES_IN_THREADS = 1 << 38


DEFAULT_MEMBER_PERMISSIONS = (
    Perm.CREATE_INSTANT_INVITE
    | Perm.ADD_REACTIONS
    | Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.MENTION_EVERYONE
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.CHANGE_NICKNAME
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.SEND_MESSAGES_IN_THREADS
)
DEFAULT_BOT_PERMISSIONS = (
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.ADD_REACTIONS
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.SEND_MESSAGES_IN_THREADS
)
ALL_PERMISSIONS = (1 << 51) - 1


def permission_value(permissions: Any) -> int:
    """Accept an int, a `Perm` flag or a `discord.Permissions` (anything with `.value`)."""
    return int(getattr(permissions, "value", permissions) or 0)


class MessageFlag(enum.IntFlag):
    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_COMPONENTS_V2 = 1 << 15


class MessageType(enum.IntEnum):
    DEFAULT = 0
    REPLY = 19
    CHAT_INPUT_COMMAND = 20
    CONTEXT_MENU_COMMAND = 23


class InteractionType(enum.IntEnum):
    PING = 1
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


class CallbackType(enum.IntEnum):
    PONG = 1
    CHANNEL_MESSAGE = 4
    DEFERRED_CHANNEL_MESSAGE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7
    AUTOCOMPLETE_RESULT = 8
    MODAL = 9


@dataclass(eq=False)
class User:
    id: int
    name: str
    global_name: str | None = None
    bot: bool = False
    permissions: int = 0  # extra permission bits on top of DEFAULT_MEMBER_PERMISSIONS
    locale: str = "en-US"
    guild_ids: set[int] | None = None  # None: member of every guild

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    @property
    def member_permissions(self) -> int:
        extra = permission_value(self.permissions)
        if extra & Perm.ADMINISTRATOR:
            return ALL_PERMISSIONS
        return int(DEFAULT_MEMBER_PERMISSIONS) | extra

    def is_member_of(self, guild: Guild) -> bool:
        return self.guild_ids is None or guild.id in self.guild_ids

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.global_name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    def member_payload(self, guild: Guild, *, with_user: bool = True) -> dict[str, Any]:
        # The bot holds its managed role (its guild permissions), as when Discord adds a bot.
        is_guild_bot = self.bot and self.id == guild.bot_user_id
        data: dict[str, Any] = {
            "roles": [str(guild.bot_role_id)] if is_guild_bot else [],
            "joined_at": guild.created_at,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.payload()
        return data

    def __repr__(self) -> str:
        return f"<User {self.name} id={self.id}>"


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    owner_id: int
    attachment_size_limit: int = 10 * 2**20
    bot_permissions: int = int(DEFAULT_BOT_PERMISSIONS)
    preferred_locale: str = "en-US"
    channels: list[Channel] = field(default_factory=list)
    created_at: str = field(default_factory=iso_now)
    bot_user_id: int = 0  # the bot's user id (0: no bot role, no overwrites in payloads)
    bot_role_id: int = field(default_factory=new_snowflake)

    @property
    def role_bot_permissions(self) -> int:
        """The bot's guild permissions as Discord computes them: @everyone's plus its role's."""
        value = int(DEFAULT_MEMBER_PERMISSIONS) | permission_value(self.bot_permissions)
        return ALL_PERMISSIONS if value & Perm.ADMINISTRATOR else value

    def bot_role(self) -> dict[str, Any]:
        """The bot's managed role; its permissions are the guild's ``bot_permissions``."""
        return {
            **self.everyone_role(),
            "id": str(self.bot_role_id),
            "name": "Imagine",
            "permissions": str(permission_value(self.bot_permissions)),
            "position": 1,
            "managed": True,
            "tags": {"bot_id": str(self.bot_user_id)},
        }

    def partial_payload(self) -> dict[str, Any]:
        """The guild as ``GET /users/@me/guilds`` lists it (``permissions``: the bot's)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "banner": None,
            "owner": False,
            "permissions": str(self.role_bot_permissions),
            "features": [],
        }

    def everyone_role(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": "@everyone",
            "permissions": str(int(DEFAULT_MEMBER_PERMISSIONS)),
            "position": 0,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }

    def payload(self, *, members: list[dict[str, Any]]) -> dict[str, Any]:
        """The GUILD_CREATE payload."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "region": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "preferred_locale": self.preferred_locale,
            "features": [],
            "roles": [self.everyone_role(), *([self.bot_role()] if self.bot_user_id else [])],
            "emojis": [],
            "stickers": [],
            "channels": [c.payload(with_guild_id=False) for c in self.channels],
            "threads": [],
            "members": members,
            "member_count": len(members),
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "large": False,
            "joined_at": self.created_at,
            "lazy": True,
            "application_id": None,
            "max_members": 500000,
            "premium_progress_bar_enabled": False,
        }

    def __repr__(self) -> str:
        return f"<Guild {self.name} id={self.id}>"


@dataclass(eq=False)
class Channel:
    """A guild text channel, or (guild None, `recipient` set) the bot's DM with a user."""

    id: int
    guild: Guild | None
    name: str
    type: int = 0  # 0 guild text, 1 DM
    nsfw: bool = False
    position: int = 0
    topic: str | None = None
    bot_permissions: int | None = None  # None: the guild's
    recipient: User | None = None
    dm_attachment_size_limit: int = 10 * 2**20

    @property
    def is_dm(self) -> bool:
        return self.guild is None

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    @property
    def attachment_size_limit(self) -> int:
        return (
            self.dm_attachment_size_limit
            if self.guild is None
            else self.guild.attachment_size_limit
        )

    @property
    def effective_bot_permissions(self) -> int:
        if self.bot_permissions is not None:
            value = self.bot_permissions
        elif self.guild is not None:
            value = self.guild.bot_permissions
        else:
            value = int(DEFAULT_BOT_PERMISSIONS)
        value = permission_value(value)
        return ALL_PERMISSIONS if value & Perm.ADMINISTRATOR else value

    def bot_overwrite(self) -> dict[str, Any] | None:
        """A member overwrite for the bot that makes the permissions a client computes from
        roles and overwrites (discord.py's ``permissions_for``) equal the ones the REST routes
        enforce (``effective_bot_permissions``); None when they are equal already."""
        guild = self.guild
        if guild is None or not guild.bot_user_id:
            return None
        base, effective = guild.role_bot_permissions, self.effective_bot_permissions
        allow, deny = effective & ~base, base & ~effective
        if not (allow or deny):
            return None
        return {"id": str(guild.bot_user_id), "type": 1, "allow": str(allow), "deny": str(deny)}

    def payload(self, *, with_guild_id: bool = True) -> dict[str, Any]:
        if self.guild is None:
            assert self.recipient is not None
            return {
                "id": str(self.id),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [self.recipient.payload()],
            }
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "position": self.position,
            "parent_id": None,
            "topic": self.topic,
            "nsfw": self.nsfw,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "permission_overwrites": [o for o in [self.bot_overwrite()] if o is not None],
            "flags": 0,
        }
        if with_guild_id:
            data["guild_id"] = str(self.guild.id)
        return data

    def __repr__(self) -> str:
        if self.guild is None:
            return f"<Channel DM with {self.name} id={self.id}>"
        return f"<Channel #{self.name} id={self.id}>"


def reference_to(message: Message) -> dict[str, Any]:
    """A reply's `message_reference` pointing at `message`."""
    reference = {"type": 0, "message_id": str(message.id), "channel_id": str(message.channel.id)}
    if message.guild is not None:
        reference["guild_id"] = str(message.guild.id)
    return reference


class UploadedFile(NamedTuple):
    """One file part of a multipart request, as it arrived: (filename, data, content_type)."""

    filename: str
    data: bytes
    content_type: str | None


@dataclass(eq=False)
class Attachment:
    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def spoiler(self) -> bool:
        return self.filename.startswith("SPOILER_")

    def image(self) -> Image.Image:
        """Open the bytes with PIL (fully loaded)."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "flags": 8 if self.spoiler else 0,  # IS_SPOILER
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.description is not None:
            data["description"] = self.description
        if self.width is not None:
            data["width"] = self.width
            data["height"] = self.height
        return data

    def __repr__(self) -> str:
        return f"<Attachment {self.filename} {self.size} B id={self.id}>"


def iter_components(components: Any) -> Iterator[dict[str, Any]]:
    """Every component dict, depth first (action rows, sections, accessories, containers, and
    the one component of a modal's label)."""
    if isinstance(components, list):
        for item in components:
            yield from iter_components(item)
    elif isinstance(components, dict):
        if "type" in components:
            yield components
        for key in ("components", "accessory", "component"):
            if key in components:
                yield from iter_components(components[key])


@dataclass(eq=False)
class Message:
    id: int
    channel: Channel
    author: User
    content: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    type: int = MessageType.DEFAULT
    reference: dict[str, Any] | None = None
    mentions: list[User] = field(default_factory=list)
    mention_everyone: bool = False
    allowed_mentions: dict[str, Any] | None = None
    interaction: InteractionRecord | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    created_at: str = field(default_factory=iso_now)
    edited_at: str | None = None
    deleted: bool = False
    reactions: dict[str, set[int]] = field(default_factory=dict)
    revisions: list[dict[str, Any]] = field(default_factory=list)
    referenced: Message | None = field(default=None, repr=False)  # the message replied to

    @property
    def guild(self) -> Guild | None:
        return self.channel.guild

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MessageFlag.EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & MessageFlag.LOADING)

    @property
    def reply_to_id(self) -> int | None:
        if self.reference and self.reference.get("message_id"):
            return int(self.reference["message_id"])
        return None

    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in iter_components(self.components) if "custom_id" in c]

    def component(self, custom_id: str) -> dict[str, Any]:
        for c in iter_components(self.components):
            if c.get("custom_id") == custom_id:
                return c
        raise KeyError(f"no component {custom_id!r} on message {self.id}; has {self.custom_ids()}")

    def buttons(self) -> list[dict[str, Any]]:
        return [c for c in iter_components(self.components) if c.get("type") == 2]

    def payload(self, *, with_referenced: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel.id),
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": self.created_at,
            "edited_timestamp": self.edited_at,
            "tts": False,
            "mention_everyone": self.mention_everyone,
            "mentions": [self._mention_payload(u) for u in self.mentions],
            "mention_roles": [],
            "mention_channels": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "reactions": [
                {
                    "emoji": {"id": None, "name": emoji},
                    "count": len(users),
                    "me": False,
                    "me_burst": False,
                    "burst_count": 0,
                    "burst_colors": [],
                    "count_details": {"burst": 0, "normal": len(users)},
                }
                for emoji, users in self.reactions.items()
                if users
            ],
            "pinned": False,
            "type": int(self.type),
            "flags": self.flags,
        }
        guild = self.guild
        if guild is not None:
            data["guild_id"] = str(guild.id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        elif guild is not None:
            data["member"] = self.author.member_payload(guild, with_user=False)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.reference is not None:
            data["message_reference"] = self.reference
            if with_referenced and self.referenced is not None:
                ref = self.referenced
                data["referenced_message"] = (
                    None if ref.deleted else ref.payload(with_referenced=False)
                )
        ix = self.interaction
        if ix is not None and ix.type in (
            InteractionType.APPLICATION_COMMAND,
            InteractionType.MESSAGE_COMPONENT,
            InteractionType.MODAL_SUBMIT,
        ):
            data["interaction_metadata"] = ix.metadata_payload(self)
            if ix.type == InteractionType.APPLICATION_COMMAND:
                data["interaction"] = {
                    "id": str(ix.id),
                    "type": int(ix.type),
                    "name": ix.command_name,
                    "user": ix.user.payload(),
                }
                if guild is not None:
                    data["interaction"]["member"] = ix.user.member_payload(guild, with_user=False)
        return data

    def _mention_payload(self, user: User) -> dict[str, Any]:
        if self.guild is None:
            return user.payload()
        return {**user.payload(), "member": user.member_payload(self.guild, with_user=False)}

    def __repr__(self) -> str:
        state = " deleted" if self.deleted else ""
        state += " ephemeral" if self.ephemeral else ""
        state += " loading" if self.loading else ""
        text = self.content if len(self.content) <= 40 else self.content[:37] + "..."
        return (
            f"<Message id={self.id} #{self.channel.name} by {self.author.name}{state} "
            f"content={text!r} files={[a.filename for a in self.attachments]} "
            f"custom_ids={self.custom_ids()}>"
        )


@dataclass(eq=False)
class InteractionRecord:
    """One interaction the stand-in dispatched, and what the bot did with it."""

    id: int
    token: str
    type: InteractionType
    user: User
    channel: Channel
    payload: dict[str, Any]
    command_name: str = ""
    message: Message | None = None  # the message a component/modal was used on
    created_at: float = 0.0  # loop time when it was dispatched
    ack_type: int | None = None
    ack_at: float | None = None
    ack_payload: dict[str, Any] | None = None
    ack_files: list[UploadedFile] = field(default_factory=list)
    ephemeral: bool = False
    original: Message | None = None
    messages: list[Message] = field(default_factory=list)
    followups: list[Message] = field(default_factory=list)
    response: Message | None = None
    modal: dict[str, Any] | None = None
    choices: list[dict[str, Any]] | None = None
    late_callbacks: list[float] = field(default_factory=list)  # latencies of rejected callbacks
    expired: bool = False
    _standin: Any = field(default=None, repr=False)  # for waits on the stand-in's change event

    @property
    def guild(self) -> Guild | None:
        return self.channel.guild

    @property
    def data(self) -> dict[str, Any]:
        return self.payload.get("data", {})

    @property
    def attachment_size_limit(self) -> int:
        return self.payload["attachment_size_limit"]

    @property
    def acked(self) -> bool:
        return self.ack_type is not None

    @property
    def ack_latency(self) -> float | None:
        return None if self.ack_at is None else self.ack_at - self.created_at

    @property
    def awaiting_first_followup(self) -> bool:
        """After a type 5 defer the first follow-up fills in the "thinking" message."""
        return (
            self.ack_type == CallbackType.DEFERRED_CHANNEL_MESSAGE
            and self.original is not None
            and self.original.loading
            and not self.original.deleted
        )

    def metadata_payload(self, message: Message) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": int(self.type),
            "user": self.user.payload(),
            # guild install: the guild's id, or "0" in the bot's DM
            "authorizing_integration_owners": {"0": str(self.guild.id if self.guild else 0)},
        }
        if self.type == InteractionType.APPLICATION_COMMAND:
            data["name"] = self.command_name
            data["command_type"] = self.data.get("type", 1)
        if self.original is not None and message is not self.original:
            data["original_response_message_id"] = str(self.original.id)
        if self.message is not None:
            data["interacted_message_id"] = str(self.message.id)
        return data

    async def wait_ack(self, timeout: float = 3.0) -> InteractionRecord:
        """Wait until the bot acknowledged the interaction (any callback type)."""

        def check() -> bool:
            if self.late_callbacks and not self.acked:
                raise AssertionError(
                    f"interaction {self.id} was acknowledged {self.late_callbacks[0]:.2f}s after "
                    f"dispatch, past the deadline: Discord answered 10062 Unknown interaction"
                )
            return self.acked

        await self._standin.wait_until(check, lambda: f"the callback of {self!r}", timeout)
        return self

    async def wait_response(self, timeout: float = 10.0) -> Message:
        """Wait for the first visible (not "thinking") message this interaction produced."""
        return await self._standin.wait_until(
            lambda: self.response, lambda: f"a visible response to {self!r}", timeout
        )

    def __repr__(self) -> str:
        latency = "-" if self.ack_latency is None else f"{self.ack_latency:.3f}s"
        name = f" /{self.command_name}" if self.command_name else ""
        custom = self.data.get("custom_id")
        custom = f" custom_id={custom!r}" if custom else ""
        return (
            f"<InteractionRecord id={self.id} type={self.type.name}{name}{custom} "
            f"user={self.user.name} ack_type={self.ack_type} ack_latency={latency} "
            f"messages={[m.id for m in self.messages]} late_callbacks={self.late_callbacks}>"
        )


@dataclass(eq=False)
class RecordedRequest:
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    time: float  # loop time
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    response: Any = None
    known_route: bool = True

    def __repr__(self) -> str:
        files = f" files={[f.filename for f in self.files]}" if self.files else ""
        return f"<{self.method} {self.path} -> {self.status}{files}>"


class StandinTimeout(AssertionError, TimeoutError):
    """A stand-in wait ran out of time; the message says what it waited for."""
