"""What users do: start a generation (command, button, reply), delete, share, cancel, upscale.

Every path that makes new images goes through ``submit`` and so through the same queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot import render
from bot.blocklist import find_blocked
from bot.i18n import t
from bot.jobs import JobRejected, facts_for
from bot.replies import parse_reply, strip_bot_mention
from bot.storage import Job, NewJob
from engine import InvalidRequest, make_request
from engine.requests import SEED_LIMIT
from engine.translation import needs_translation

if TYPE_CHECKING:
    from bot.client import ImagineBot
    from bot.jobs import Jobs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Who asked and where the answer goes."""

    requester_id: int
    channel_id: int
    guild_id: int | None
    locale: str | None
    nsfw_channel: bool
    interaction: discord.Interaction | None = None
    reply_to: discord.Message | None = None


@dataclass(frozen=True)
class Ask:
    """What to generate, before translation and validation."""

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    aspect_ratio: str = "1:1"
    raw: bool = False
    kind: str = "imagine"
    parent: Job | None = None
    parent_index: int | None = None
    count: int | None = None
    interpreted_prompt: str | None = None  # reuse a stored translation (re-rolls, replies)
    size: tuple[int, int] | None = None  # keep the parent's size instead of an aspect ratio


def origin_from_interaction(interaction: discord.Interaction) -> Origin:
    channel = interaction.channel
    nsfw = bool(getattr(channel, "nsfw", False)) or isinstance(channel, discord.DMChannel)
    return Origin(
        requester_id=interaction.user.id,
        channel_id=interaction.channel_id or 0,
        guild_id=interaction.guild_id,
        locale=str(interaction.locale),
        nsfw_channel=nsfw,
        interaction=interaction,
    )


def origin_from_message(message: discord.Message) -> Origin:
    channel = message.channel
    nsfw = bool(getattr(channel, "nsfw", False)) or isinstance(channel, discord.DMChannel)
    locale = str(message.guild.preferred_locale) if message.guild else None
    return Origin(
        requester_id=message.author.id,
        channel_id=message.channel.id,
        guild_id=message.guild.id if message.guild else None,
        locale=locale,
        nsfw_channel=nsfw,
        reply_to=message,
    )


async def _check_policy(bot: ImagineBot, origin: Origin, texts: list[str]) -> int | None:
    """Raise JobRejected when the guild's rules refuse this; return its per-user limit."""
    if origin.guild_id is None:
        return None
    settings = await bot.storage.guild_settings(origin.guild_id)
    if not settings.allows_channel(origin.channel_id):
        allowed = ", ".join(f"<#{c}>" for c in settings.allowed_channel_ids)
        raise JobRejected(f"Image generation is not enabled in this channel. Try {allowed}.")
    if not origin.nsfw_channel:
        term = find_blocked(texts, settings.blocklist_add, settings.blocklist_remove)
        if term is not None:
            # No job exists yet (nothing is stored for a refused prompt): log who and where,
            # and the matched term for moderators, never the prompt itself.
            log.info(
                "prompt refused by blocklist: term=%r user=%s guild=%s channel=%s",
                term,
                origin.requester_id,
                origin.guild_id,
                origin.channel_id,
            )
            raise JobRejected(t("prompt_blocked", origin.locale))
    return settings.per_user_limit


async def submit(bot: ImagineBot, origin: Origin, ask: Ask) -> Job:
    """Validate, translate, check the guild's rules, store and queue a generation.

    For interactions the caller must have deferred (or answer the rejection ephemerally).

    Raises:
        JobRejected: with a user-facing message; nothing was queued.
    """
    interpreted = ask.interpreted_prompt
    if interpreted is None and not ask.raw and needs_translation(ask.prompt):
        interpreted = await bot.interpret(ask.prompt)
    model_prompt = interpreted or ask.prompt
    per_user_limit = await _check_policy(bot, origin, [ask.prompt, model_prompt])
    try:
        request = make_request(
            model_prompt,
            settings=bot.settings.engine,
            negative_prompt=ask.negative_prompt,
            seed=ask.seed,
            aspect_ratio=ask.aspect_ratio,
            count=ask.count,
        )
    except InvalidRequest as exc:
        raise JobRejected(exc.user_message) from exc
    width, height = ask.size or (request.width, request.height)
    interaction = origin.interaction
    new = NewJob(
        kind=ask.kind,  # type: ignore[arg-type]
        requester_id=origin.requester_id,
        channel_id=origin.channel_id,
        guild_id=origin.guild_id,
        locale=origin.locale,
        prompt=ask.prompt,
        interpreted_prompt=interpreted if interpreted != ask.prompt else None,
        raw=ask.raw,
        negative_prompt=request.negative_prompt,
        seed=request.seed,
        width=width,
        height=height,
        steps=request.steps,
        guidance=request.guidance,
        count=request.count,
        strength=request.strength if ask.kind == "variation" else None,
        parent_job_id=ask.parent.id if ask.parent else None,
        parent_index=ask.parent_index,
        interaction_id=interaction.id if interaction else None,
        application_id=interaction.application_id if interaction else None,
        interaction_token=interaction.token if interaction else None,
        reply_to_message_id=origin.reply_to.id if origin.reply_to else None,
        nsfw_channel=origin.nsfw_channel,
    )
    job = await bot.jobs.accept(new, per_user_limit=per_user_limit)
    bot.jobs.set_notes(job.id, request.notes)
    return job


async def reject(interaction: discord.Interaction, message: str) -> None:
    """Tell the user why, ephemerally, whether or not the interaction was deferred."""
    if interaction.response.is_done():
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
        await interaction.followup.send(message, ephemeral=True)
    else:
        await interaction.response.send_message(message, ephemeral=True)


async def start_from_interaction(
    bot: ImagineBot, interaction: discord.Interaction, ask: Ask
) -> None:
    """Accept a generation asked for by a slash command or button; ack within 3 s."""
    origin = origin_from_interaction(interaction)
    slow = ask.interpreted_prompt is None and not ask.raw and needs_translation(ask.prompt)
    if slow:
        # Translation may take a moment on the CPU: acknowledge first, then decide.
        await interaction.response.defer(thinking=True)
    try:
        job = await submit(bot, origin, ask)
    except JobRejected as exc:
        await reject(interaction, exc.user_message)
        return
    if not slow:
        await interaction.response.defer(thinking=True)
    message = await interaction.original_response()
    await bot.jobs.attach_status_message(job.id, message.id)


async def start_from_reply(
    bot: ImagineBot, message: discord.Message, ask: Ask, hint: str | None
) -> None:
    origin = origin_from_message(message)
    try:
        job = await submit(bot, origin, ask)
    except JobRejected as exc:
        await message.reply(exc.user_message, mention_author=False)
        return
    text = "⏳ Queued." + (f"\n-# {hint}" if hint else "")
    status = await message.reply(text, mention_author=False)
    await bot.jobs.attach_status_message(job.id, status.id)


def ask_from_job(job: Job, **changes: object) -> Ask:
    """The same generation as ``job`` (same prompt, translation, size, settings), new seeds."""
    ask = Ask(
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        seed=secrets.randbelow(SEED_LIMIT),
        raw=job.raw,
        kind="reroll",
        parent=job,
        count=job.count if job.kind != "upscale" else None,
        interpreted_prompt=job.interpreted_prompt or (job.prompt if job.raw else None),
        size=(job.width, job.height),
    )
    return dataclasses.replace(ask, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- buttons
async def handle_button(
    jobs: Jobs, interaction: discord.Interaction, action: str, job_id: int, index: int | None
) -> None:
    bot: ImagineBot = jobs.bot
    job = await bot.storage.get_job(job_id)
    if job is None:
        await interaction.response.send_message(
            t("job_not_found", interaction.locale), ephemeral=True
        )
        return
    try:
        await _dispatch(bot, interaction, action, job, index)
    except JobRejected as exc:
        await reject(interaction, exc.user_message)
    except Exception:
        # Buttons bypass the command tree's error handler: answer here so no click hangs.
        log.exception("button %s on job %s failed", action, job_id)
        with contextlib.suppress(discord.HTTPException):
            await reject(interaction, t("generation_failed", interaction.locale))


async def _dispatch(
    bot: ImagineBot, interaction: discord.Interaction, action: str, job: Job, index: int | None
) -> None:
    if action == "reroll":
        await start_from_interaction(bot, interaction, ask_from_job(job))
    elif action == "vary":
        await _vary(bot, interaction, job, index or 1)
    elif action == "upscale":
        await _upscale(bot, interaction, job, index or 1)
    elif action == "delete":
        await _delete(bot, interaction, job)
    elif action == "share":
        await _share(bot, interaction, job, index)
    elif action == "cancel":
        await _cancel(bot, interaction, job)


def _check_index(job: Job, index: int) -> None:
    if not 1 <= index <= max(len(job.seeds), 1):
        raise JobRejected(f"Image {index} does not exist in this set.")


async def _vary(bot: ImagineBot, interaction: discord.Interaction, job: Job, index: int) -> None:
    if job.status != "done":
        await interaction.response.send_message(
            "These images are not finished yet.", ephemeral=True
        )
        return
    ask = ask_from_job(job, kind="variation", parent_index=index, count=None)
    await start_from_interaction(bot, interaction, ask)


async def _upscale(bot: ImagineBot, interaction: discord.Interaction, job: Job, index: int) -> None:
    """Post one image of the set on its own, with its own seed and buttons."""
    if job.status != "done" or not 1 <= index <= len(job.seeds):
        await interaction.response.send_message("That image is not available.", ephemeral=True)
        return
    try:
        [blob] = await bot.jobs.load_images(job.id, [index])
    except FileNotFoundError:
        # Not stored any more: its seed recreates it (up to 8-bit rounding), so generate it again.
        ask = ask_from_job(
            job, kind="upscale", seed=job.seeds[index - 1], count=1, parent_index=index
        )
        await start_from_interaction(bot, interaction, ask)
        return
    await interaction.response.defer(thinking=True)
    origin = origin_from_interaction(interaction)
    new = NewJob(
        kind="upscale",
        requester_id=origin.requester_id,
        channel_id=origin.channel_id,
        guild_id=origin.guild_id,
        locale=origin.locale,
        prompt=job.prompt,
        interpreted_prompt=job.interpreted_prompt,
        raw=job.raw,
        negative_prompt=job.negative_prompt,
        seed=job.seeds[index - 1],
        width=job.width,
        height=job.height,
        steps=job.steps,
        guidance=job.guidance,
        count=1,
        parent_job_id=job.id,
        parent_index=index,
        nsfw_channel=origin.nsfw_channel,
    )
    single = await bot.storage.create_job(new)
    await bot.storage.mark_running(single.id)
    single = dataclasses.replace(single, seeds=(job.seeds[index - 1],))
    await bot.jobs.store_images(single.id, [blob])
    message = await interaction.edit_original_response(
        content=render.result_text(facts_for(single)),
        attachments=render.image_files([blob]),
        view=render.result_view(single.id, 1),
        allowed_mentions=discord.AllowedMentions.none(),
    )
    await bot.storage.mark_done(single.id, [job.seeds[index - 1]], message.id)


async def _delete(bot: ImagineBot, interaction: discord.Interaction, job: Job) -> None:
    perms = interaction.permissions
    if interaction.user.id != job.requester_id and not perms.manage_messages:
        await interaction.response.send_message(t("not_yours", interaction.locale), ephemeral=True)
        return
    await interaction.response.defer()
    if interaction.message is not None:
        await interaction.message.delete()
    await bot.storage.set_result_message(job.id, None)


async def _cancel(bot: ImagineBot, interaction: discord.Interaction, job: Job) -> None:
    if interaction.user.id != job.requester_id:
        await interaction.response.send_message(t("not_yours", interaction.locale), ephemeral=True)
        return
    if await bot.jobs.cancel(job):
        await interaction.response.edit_message(
            content=f"✖️ {t('cancelled', interaction.locale)} {render.shorten(job.prompt, 200)}",
            view=None,
        )
    else:
        await interaction.response.send_message(
            "Too late to cancel: this job already started or finished.", ephemeral=True
        )


async def _share(
    bot: ImagineBot, interaction: discord.Interaction, job: Job, index: int | None
) -> None:
    if interaction.guild_id is None:
        await interaction.response.send_message("Sharing works in servers only.", ephemeral=True)
        return
    settings = await bot.storage.guild_settings(interaction.guild_id)
    if settings.showcase_channel_id is None:
        await interaction.response.send_message(
            t("showcase_not_set", interaction.locale), ephemeral=True
        )
        return
    image_index = index or 0
    share = await bot.storage.add_share(
        job.id,
        image_index,
        guild_id=interaction.guild_id,
        showcase_channel_id=settings.showcase_channel_id,
        shared_by=interaction.user.id,
    )
    if share is None:
        existing = await bot.storage.get_share(job.id, image_index)
        where = (
            render.message_link(
                interaction.guild_id, existing.showcase_channel_id, existing.showcase_message_id
            )
            if existing and existing.showcase_message_id
            else f"<#{settings.showcase_channel_id}>"
        )
        await interaction.response.send_message(
            t("already_shared", interaction.locale, link=where), ephemeral=True
        )
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        indexes = [image_index] if image_index else list(range(1, len(job.seeds) + 1))
        blobs = await bot.jobs.load_images(job.id, indexes)
        channel = bot.get_partial_messageable(
            settings.showcase_channel_id, guild_id=interaction.guild_id
        )
        text = "⭐ " + render.result_text(facts_for(job)) + f"\nShared by <@{interaction.user.id}>"
        posted = await channel.send(
            content=text[: render.MESSAGE_LIMIT],
            files=render.image_files(blobs),
            allowed_mentions=discord.AllowedMentions.none(),
        )
    except (discord.HTTPException, FileNotFoundError) as exc:
        await bot.storage.remove_share(job.id, image_index)
        log.warning("job %s: share failed: %s", job.id, exc)
        await interaction.followup.send("Could not post to the showcase channel.", ephemeral=True)
        return
    await bot.storage.set_share_message(job.id, image_index, posted.id)
    link = render.message_link(interaction.guild_id, settings.showcase_channel_id, posted.id)
    await interaction.followup.send(t("shared", interaction.locale, link=link), ephemeral=True)


# --------------------------------------------------------------------------------- replies
async def handle_reply(bot: ImagineBot, message: discord.Message) -> bool:
    """Regenerate when a user replies to one of the bot's results. True when handled."""
    ref = message.reference
    if ref is None or ref.message_id is None or message.author.bot:
        return False
    job = await bot.storage.job_by_message(ref.message_id)
    if job is None:
        return False
    assert bot.user is not None
    mentioned = bot.user in message.mentions
    content = strip_bot_mention(message.content or "", bot.user.id)
    hint = None
    content_hidden = not bot.intents.message_content and not mentioned
    if not content.strip() and content_hidden and message.guild is not None:
        # Without the message-content intent Discord sends replies without their text unless
        # they ping the bot: all we know is "a reply". Re-roll and say how to change the prompt.
        hint = (
            "To give a new prompt, reply with the ping on (@mention) so the bot can read your text."
        )
    command = parse_reply(content)
    if command.bad_seed is not None:
        await message.reply(
            "`--seed` needs a whole number from 0 to 4294967295.", mention_author=False
        )
        return True
    changes: dict[str, object] = {"kind": "reply"}
    if command.prompt is not None:
        changes.update(prompt=command.prompt, interpreted_prompt=None, raw=command.raw)
    if command.seed is not None:
        changes["seed"] = command.seed
    if command.negative_prompt is not None:
        changes["negative_prompt"] = command.negative_prompt
    if command.aspect_ratio is not None:
        changes.update(aspect_ratio=command.aspect_ratio, size=None)
    await start_from_reply(bot, message, ask_from_job(job, **changes), hint)
    return True
