"""/imagine end to end: real discord.py client, local Discord stand-in, tiny SDXL engine."""

from __future__ import annotations

import asyncio
import io
import re

import numpy as np
from PIL import Image

from bot.i18n import t

PNG = b"\x89PNG\r\n\x1a\n"


def seeds_in(text: str) -> list[int]:
    """The seeds listed in a result message ("Seeds 1 · 2 · 3 · 4 · 64×64 · ...")."""
    match = re.search(r"Seeds? (.*)", text)
    assert match, f"no seeds in {text!r}"
    seeds = []
    for part in match.group(1).split(" · "):
        if not part.isdigit():
            break
        seeds.append(int(part))
    return seeds


def rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def same_picture(data: bytes, image: Image.Image) -> bool:
    """Equal up to 8-bit rounding: at most 2 levels apart and >= 99% of values identical."""
    difference = np.abs(rgb(data).astype(int) - np.asarray(image.convert("RGB")).astype(int))
    return difference.max() <= 2 and (difference == 0).mean() >= 0.99


async def job_for_message(bot, message_id: int, timeout: float = 10.0):
    """The stored job of a result message (stored right after the message is posted)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        job = await bot.storage.job_by_message(message_id)
        if job is not None:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"no job stored for message {message_id}")


async def test_commands_are_synced(bot_process, standin, world):
    await bot_process.start()
    names = {c["name"] for c in standin.commands()}
    assert {"imagine", "history", "info", "imagine-settings", "Imagine info"} <= names
    imagine = next(c for c in standin.commands() if c["name"] == "imagine")
    seed = next(o for o in imagine["options"] if o["name"] == "seed")
    assert seed["min_value"] == 0 and seed["max_value"] == 2**32 - 1
    aspect = next(o for o in imagine["options"] if o["name"] == "aspect_ratio")
    assert {"1:1", "16:9", "9:16"} <= {c["value"] for c in aspect["choices"]}


async def test_imagine_posts_four_pngs_whose_seeds_reproduce(bot_process, standin, world):
    bot = await bot_process.start()
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a red fox in the snow", "seed": 1234}
    )
    await ix.wait_ack(3)
    assert ix.ack_type == 5, "a generation is deferred first"
    assert ix.ack_latency < 3
    message = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == 4, timeout=60
    )
    assert [a.data[:8] for a in message.attachments] == [PNG] * 4
    assert all(a.filename.endswith(".png") for a in message.attachments)
    assert all(Image.open(io.BytesIO(a.data)).size == (64, 64) for a in message.attachments)
    assert seeds_in(message.content) == [1234, 1235, 1236, 1237]
    assert "a red fox in the snow" in message.content
    assert f"<@{world.alice.id}>" in message.content
    assert len(message.content) <= 2000
    assert "imagine:reroll:" in " ".join(message.custom_ids())

    # The third image, made again alone from its seed, is the same picture: equal up to 8-bit
    # rounding (BLAS takes other kernels at batch 1, ~1e-5 in latents; docs/architecture.md).
    from engine import GenerationRequest

    job = await job_for_message(bot, message.id)
    assert job.status == "done" and job.seeds == (1234, 1235, 1236, 1237)
    single = GenerationRequest(
        prompt="a red fox in the snow", seed=1236, width=64, height=64, count=1
    )
    [alone] = await bot.runner.generate_batch([single])
    assert same_picture(message.attachments[2].data, alone.images[0].image)
    # The whole request again gives the very same pixels.
    again = GenerationRequest(prompt="a red fox in the snow", seed=1234, width=64, height=64)
    [repeat] = await bot.runner.generate_batch([again])
    for attachment, image in zip(message.attachments, repeat.images, strict=True):
        assert np.array_equal(rgb(attachment.data), np.asarray(image.image.convert("RGB")))


async def test_bad_prompt_gets_ephemeral_error_and_bot_keeps_serving(bot_process, standin, world):
    await bot_process.start()
    bad = await standin.slash_command(world.alice, world.general, "imagine", {"prompt": "   "})
    await bad.wait_ack(3)
    reply = await bad.wait_response(5)
    assert reply.ephemeral and reply.content == t("empty_prompt", "en-US")
    assert not reply.attachments
    # Nothing printable (zero-width space, word joiner, soft hyphen) is empty too.
    invisible = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "\u200b\u2060\u00ad"}
    )
    assert (await invisible.wait_response(5)).content == t("empty_prompt", "en-US")

    good = await standin.slash_command(world.bob, world.general, "imagine", {"prompt": "a boat"})
    message = await standin.wait_for_message(
        lambda m: m.interaction is good and len(m.attachments) == 4, timeout=60
    )
    assert len(seeds_in(message.content)) == 4


async def test_aspect_ratio_and_negative_prompt(bot_process, standin, world):
    await bot_process.start()
    ix = await standin.slash_command(
        world.alice,
        world.general,
        "imagine",
        {"prompt": "a tall tower", "aspect_ratio": "9:16", "negative_prompt": "blurry"},
    )
    message = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == 4, timeout=60
    )
    width, height = Image.open(io.BytesIO(message.attachments[0].data)).size
    assert height > width
    assert "Negative: blurry" in message.content
    assert "guidance 1.5" in message.content  # raised so the negative prompt takes effect


async def test_imagine_in_a_dm(bot_process, standin, world):
    await bot_process.start()
    dm = standin.add_dm_channel(world.alice)
    ix = await standin.slash_command(world.alice, dm, "imagine", {"prompt": "a lighthouse"})
    await ix.wait_ack(3)
    message = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == 4, timeout=60
    )
    assert len(seeds_in(message.content)) == 4


async def test_webp_format_posts_webp_files_that_variations_read(
    bot_process, bot_settings, standin, world
):
    engine = bot_settings.engine.model_copy(update={"image_format": "webp"})
    bot = await bot_process.start(settings=bot_settings.model_copy(update={"engine": engine}))
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a lighthouse", "seed": 42}
    )
    message = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == 4, timeout=60
    )
    assert [a.filename for a in message.attachments] == [
        f"imagine_{message.attachments[0].filename.split('_')[1]}_{i}.webp" for i in range(1, 5)
    ]
    assert all(a.data[:4] == b"RIFF" and a.data[8:12] == b"WEBP" for a in message.attachments)
    assert all(Image.open(io.BytesIO(a.data)).size == (64, 64) for a in message.attachments)
    job = await job_for_message(bot, message.id)
    # V2 starts from the stored WebP file.
    vary = await standin.click(world.alice, message, f"imagine:vary:{job.id}:2")
    varied = await standin.wait_for_message(
        lambda m: m.interaction is vary and len(m.attachments) == 4, timeout=60
    )
    assert all(a.filename.endswith(".webp") for a in varied.attachments)
    child = await job_for_message(bot, varied.id)
    assert child.kind == "variation" and child.parent_index == 2
