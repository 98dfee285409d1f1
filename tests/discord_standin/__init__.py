"""Local Discord stand-in (REST v10 + gateway on 127.0.0.1) for end-to-end tests; see README.md."""

from .models import (
    ALL_PERMISSIONS,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_MEMBER_PERMISSIONS,
    Attachment,
    CallbackType,
    Channel,
    Guild,
    InteractionRecord,
    InteractionType,
    Message,
    MessageFlag,
    MessageType,
    Perm,
    RecordedRequest,
    StandinTimeout,
    UploadedFile,
    User,
)
from .server import DiscordStandin

__all__ = [
    "ALL_PERMISSIONS",
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_MEMBER_PERMISSIONS",
    "Attachment",
    "CallbackType",
    "Channel",
    "DiscordStandin",
    "Guild",
    "InteractionRecord",
    "InteractionType",
    "Message",
    "MessageFlag",
    "MessageType",
    "Perm",
    "RecordedRequest",
    "StandinTimeout",
    "UploadedFile",
    "User",
]
