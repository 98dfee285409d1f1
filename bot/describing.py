"""/describe: a picture accepted as a 'describe' job, whose result is four proposed prompts.

The job goes through the same queue, GPU side and safety check of the upload as an image
prompt (``lifecycle.service.JobService``); what its buttons 1-4 start is in ``bot.actions``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import discord

from bot.actions import Origin, guild_rules, origin_from_interaction, reject
from bot.blocklist import check_prompt
from bot.i18n import t
from bot.uploads import read_upload
from engine.requests import SEED_LIMIT
from engine.uploads import FittedUpload
from lifecycle.service import JobRejected
from lifecycle.storage import GuildSettings, Job, NewJob

if TYPE_CHECKING:
    from bot.client import ImagineBot


async def submit_describe(bot: ImagineBot, origin: Origin, picture: FittedUpload) -> Job:
    """Store and queue a 'describe' job for ``picture`` (kept as the job's image 0, so that
    🖼 1-4 can use it as an image prompt).

    The channel's rules and the requester's queue limits apply as to /imagine. The picture
    is checked by the safety classifier on the GPU side, as any image prompt is, and the job
    follows the non-NSFW rules wherever it is asked for (``from_upload``).

    Raises:
        JobRejected: /describe is off, not allowed here, or the queue is full.
    """
    if not bot.describe_available:
        raise JobRejected(t("describe_off", origin.locale))
    settings = await guild_rules(bot, origin, "describe")
    per_user_limit = settings.per_user_limit if settings else None
    bot.jobs.check_capacity("describe", origin.requester_id, per_user_limit, origin.locale)
    interaction = origin.interaction
    new = NewJob(
        kind="describe",
        requester_id=origin.requester_id,
        channel_id=origin.channel_id,
        guild_id=origin.guild_id,
        locale=origin.locale,
        prompt="",
        seed=secrets.randbelow(SEED_LIMIT),  # the sampled captions' seed
        width=picture.width,
        height=picture.height,
        count=1,
        interaction_id=interaction.id if interaction else None,
        application_id=interaction.application_id if interaction else None,
        interaction_token=interaction.token if interaction else None,
        nsfw_channel=origin.nsfw_channel,
        requester_name=origin.requester_name,
        uploaded=True,
        from_upload=True,
    )
    return await bot.jobs.accept(new, per_user_limit=per_user_limit, source=picture.png)


def blocked_captions(job: Job, settings: GuildSettings | None) -> frozenset[int]:
    """1-based numbers of ``job``'s proposed prompts that the safety floor or the server's
    blocklist refuses. They come from an uploaded picture, so the ordinary channel's rules
    apply wherever they are shown: a refused one is not shown and has no buttons (and a click
    on a crafted button is refused by ``submit``, which applies the same rules)."""
    return frozenset(
        number
        for number, caption in enumerate(job.captions, start=1)
        if check_prompt(
            [caption],
            nsfw_channel=False,
            extra_terms=settings.blocklist_add if settings else (),
            removed_terms=settings.blocklist_remove if settings else (),
        )
        is not None
    )


async def start_describe(
    bot: ImagineBot, interaction: discord.Interaction, attachment: discord.Attachment | None
) -> None:
    """Answer /describe (or the "Describe picture" menu) on ``attachment``; ack within 3 s."""
    locale = str(interaction.locale)
    if not bot.describe_available:
        await reject(interaction, t("describe_off", locale))
        return
    if attachment is None:
        await reject(interaction, t("describe_no_picture", locale))
        return
    # Downloading and fitting the picture may take a moment: acknowledge first.
    await interaction.response.defer(thinking=True)
    try:
        picture = await read_upload(attachment, bot.settings.engine.resolution, None, locale)
        job = await submit_describe(bot, origin_from_interaction(interaction), picture)
    except JobRejected as exc:
        await reject(interaction, exc.user_message)
        return
    message = await interaction.original_response()
    await bot.jobs.attach_status_message(job.id, message.id)
