"""A picture attached to /imagine or to a reply, read from Discord and fitted as an image prompt.

What Discord says of the file (size, type) is checked before it is downloaded; the download is
read and fitted in a worker thread (``engine.uploads``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging

import discord

from bot.i18n import t
from engine import InvalidRequest
from engine.uploads import FittedUpload, check_declared, fit_upload
from lifecycle.service import JobRejected

log = logging.getLogger(__name__)


def first_picture(message: discord.Message) -> discord.Attachment | None:
    """The first attachment of ``message`` that Discord calls an image (or any one, when
    Discord did not say what it is: the download is checked anyway)."""
    for attachment in message.attachments:
        if (attachment.content_type or "").startswith("image/"):
            return attachment
    return message.attachments[0] if message.attachments else None


async def read_upload(
    attachment: discord.Attachment,
    resolution: int,
    aspect_ratio: str | None,
    locale: str | None,
) -> FittedUpload:
    """Download ``attachment`` and fit it to the SDXL size of its shape (or ``aspect_ratio``).

    Raises:
        JobRejected: too large, not a picture, damaged, or it could not be downloaded.
    """
    try:
        # What Discord says of the file first: a refused one is never downloaded.
        check_declared(attachment.size, attachment.content_type)
    except InvalidRequest as exc:
        raise JobRejected(exc.user_message) from exc
    try:
        data = await attachment.read()
    except (discord.HTTPException, discord.NotFound) as exc:
        log.warning("upload %s could not be downloaded: %s", attachment.id, exc)
        raise JobRejected(t("upload_unreadable", locale)) from exc
    try:
        return await asyncio.to_thread(fit_upload, data, resolution, aspect_ratio)
    except InvalidRequest as exc:
        raise JobRejected(exc.user_message) from exc
