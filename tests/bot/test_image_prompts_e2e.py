"""Image prompts end to end: a picture attached to /imagine or to a reply, its checks and rules.

Real bot, local Discord stand-in, tiny engine, real SQLite and files.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.i18n import t
from engine.requests import size_for_aspect_ratio
from engine.uploads import MAX_UPLOAD_BYTES
from tests.bot.test_conversation_e2e import imagine
from tests.bot.test_imagine_e2e import job_for_message, seeds_in
from tests.engine.test_safety import build_tiny_classifier
from tests.engine.test_uploads import png_header_claiming


def photo(size=(96, 64), fmt="PNG") -> bytes:
    """A smooth, photo-like picture (a gradient with a disc)."""
    width, height = size
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    pixels = np.stack([x * 255, y * 255, (1 - x) * 200], axis=-1)
    pixels[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.05] = (250, 240, 20)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


#: Uploads every picture-taking command refuses, with words of its answer.
BAD_UPLOADS = [
    (("notes.txt", b"just some text, not a picture"), "not a PNG, JPEG or WebP"),
    (("broken.png", photo((300, 300))[:400]), "damaged"),
    (("bomb.png", png_header_claiming(30000, 30000)), "too many pixels"),
    (("huge.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_UPLOAD_BYTES + 1)), "too large"),
    (("tiny.png", photo((20, 20))), "too small"),
]
BAD_UPLOAD_IDS = ["not-an-image", "corrupt", "huge-dimensions", "huge-file", "too-small"]


async def imagine_with(standin, user, channel, upload, **options):
    """/imagine with a picture: (interaction, the 4-image result)."""
    ix = await standin.slash_command(
        user, channel, "imagine", {"prompt": "a castle", "image": upload, **options}
    )
    await ix.wait_ack(3)
    result = await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == 4 and not m.ephemeral, timeout=60
    )
    return ix, result


async def test_an_uploaded_picture_is_fitted_and_run_as_image_to_image(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine_with(
        standin, world.alice, world.general, ("photo.png", photo()), seed=9, strength=0.5
    )
    expected = size_for_aspect_ratio("3:2", bot.settings.engine.resolution)
    assert {size_of(a.data) for a in result.attachments} == {expected}
    assert seeds_in(result.content) == [9, 10, 11, 12]
    assert "from an uploaded picture (strength 0.5)" in result.content
    job = await job_for_message(bot, result.id)
    assert job.uploaded and job.from_upload and job.strength == 0.5
    assert (job.width, job.height) == expected
    # The fitted picture is stored with the set, so a restart, 🔄 or a reply can use it.
    [(_, stored)] = await bot.jobs.files.load(job.id, [0])
    assert size_of(stored) == expected

    # /info says how to make the same pixels; a reply with --seed does.
    info = await standin.slash_command(world.alice, world.general, "info", {"job": job.id})
    text = (await info.wait_response(5)).content
    assert (
        "`--seed 9`" in text and "the uploaded picture" in text and "strength:        0.5" in text
    )
    reply = await standin.user_message(world.alice, world.general, "--seed 9", reply_to=result)
    again = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    assert [a.data for a in again.attachments] == [a.data for a in result.attachments]
    child = await job_for_message(bot, again.id)
    assert child.uploaded and child.strength == 0.5

    # 🔄: the same picture with new seeds.
    reroll = await standin.click(world.alice, result, f"imagine:reroll:{job.id}")
    await reroll.wait_ack(3)
    rerolled = await standin.wait_for_message(
        lambda m: m.interaction is reroll and len(m.attachments) == 4, timeout=60
    )
    assert {size_of(a.data) for a in rerolled.attachments} == {expected}
    assert (await job_for_message(bot, rerolled.id)).uploaded


async def test_the_asked_aspect_ratio_crops_the_picture(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine_with(
        standin, world.alice, world.general, ("photo.jpg", photo(fmt="JPEG")), aspect_ratio="1:1"
    )
    side = bot.settings.engine.resolution
    assert {size_of(a.data) for a in result.attachments} == {(side, side)}


@pytest.mark.parametrize(
    ("upload", "words"),
    BAD_UPLOADS,
    ids=BAD_UPLOAD_IDS,
)
async def test_bad_uploads_get_a_clear_answer_and_nothing_is_kept(
    bot_process, standin, world, upload, words
):
    bot = await bot_process.start()
    ix = await standin.slash_command(
        world.alice, world.general, "imagine", {"prompt": "a castle", "image": upload}
    )
    answer = await standin.wait_for_message(
        lambda m: m.interaction is ix and m.ephemeral and m.content, timeout=30
    )
    assert words in answer.content
    assert await bot.storage.recent_jobs(world.alice.id) == []
    assert not list(bot.settings.images_dir.glob("*/0-source.png"))
    # The bot is fine: the next /imagine works.
    _, result = await imagine(standin, world.alice, world.general)
    assert len(result.attachments) == 4


async def test_a_reply_that_brings_a_picture_is_an_image_prompt(bot_process, standin, world):
    bot = await bot_process.start()
    _, result = await imagine(standin, world.alice, world.general, prompt="a lighthouse")
    reply = await standin.user_message(
        world.bob,
        world.general,
        "at dusk --strength 0.8 --seed 5",
        reply_to=result,
        files=[("tall.webp", photo((64, 96), fmt="WEBP"))],
    )
    answer = await standin.wait_for_message(
        lambda m: m.reply_to_id == reply.id and len(m.attachments) == 4, timeout=60
    )
    expected = size_for_aspect_ratio("2:3", bot.settings.engine.resolution)
    assert {size_of(a.data) for a in answer.attachments} == {expected}
    child = await job_for_message(bot, answer.id)
    assert (child.kind, child.prompt, child.strength, child.seed) == ("reply", "at dusk", 0.8, 5)
    assert child.uploaded and child.requester_id == world.bob.id

    broken = await standin.user_message(
        world.bob, world.general, "again", reply_to=result, files=[("x.png", b"\x89PNG\r\nxx")]
    )
    refusal = await standin.wait_for_message(lambda m: m.reply_to_id == broken.id, timeout=30)
    assert "damaged" in refusal.content or "not a PNG" in refusal.content


async def test_uploads_follow_the_ordinary_rules_even_in_age_restricted_channels(
    bot_process, standin, world
):
    bot = await bot_process.start()
    # Allowed there as text alone...
    _, free = await imagine(standin, world.alice, world.nsfw, prompt="a NUDE statue")
    assert len(free.attachments) == 4
    # ...but never with an uploaded picture, there or in a DM.
    dm = standin.add_dm_channel(world.alice)
    for channel in (world.nsfw, dm):
        ix = await standin.slash_command(
            world.alice,
            channel,
            "imagine",
            {"prompt": "a NUDE statue", "image": ("me.png", photo())},
        )
        answer = await standin.wait_for_message(
            lambda m, ix=ix: m.interaction is ix and m.ephemeral and m.content, timeout=30
        )
        assert answer.content == t("prompt_blocked", "en-US")
    # And what is made from an upload keeps those rules: a reply there cannot add it either.
    _, result = await imagine_with(standin, world.alice, world.nsfw, ("me.png", photo()))
    job = await job_for_message(bot, result.id)
    assert job.nsfw_channel and job.from_upload
    reply = await standin.user_message(world.alice, world.nsfw, "a nude statue", reply_to=result)
    refusal = await standin.wait_for_message(lambda m: m.reply_to_id == reply.id, timeout=30)
    assert refusal.content == t("prompt_blocked", "en-US")
    vary = await standin.click(world.alice, result, f"imagine:vary:{job.id}:1")
    await vary.wait_ack(3)
    varied = await standin.wait_for_message(
        lambda m: m.interaction is vary and len(m.attachments) == 4, timeout=60
    )
    assert (await job_for_message(bot, varied.id)).from_upload


@pytest.fixture(scope="module")
def flag_everything(tmp_path_factory):
    return build_tiny_classifier(
        tmp_path_factory.mktemp("flag_all"), nsfw_bias=20.0, labels={0: "normal", 1: "nsfw"}
    )


async def test_the_safety_filter_checks_the_upload_and_the_results(
    bot_process, standin, world, flag_everything
):
    # Made before a classifier was configured: an image prompt and a plain set, both in an
    # age-restricted channel.
    bot = await bot_process.start()
    _, uploaded = await imagine_with(standin, world.alice, world.nsfw, ("p.png", photo()))
    from_upload = await job_for_message(bot, uploaded.id)
    _, plain = await imagine(standin, world.alice, world.nsfw, prompt="a castle")
    plain_job = await job_for_message(bot, plain.id)
    await bot_process.stop()

    engine = bot_process.settings.engine.model_copy(update={"safety_model": str(flag_everything)})
    bot = await bot_process.start(bot_process.settings.model_copy(update={"engine": engine}))
    # The upload is checked, even in an age-restricted channel (where the filter is otherwise
    # off): refused, nothing generated, the picture not kept.
    for channel in (world.general, world.nsfw):
        ix = await standin.slash_command(
            world.alice, channel, "imagine", {"prompt": "a castle", "image": ("p.png", photo())}
        )
        await ix.wait_ack(3)
        answer = await standin.wait_for_message(
            lambda m, ix=ix: m.interaction is ix and t("upload_refused", "en-US") in m.content,
            timeout=60,
        )
        assert answer.attachments == []
    refused = [j for j in await bot.storage.recent_jobs(world.alice.id) if j.status == "failed"]
    assert len(refused) == 2 and all(j.uploaded for j in refused)
    for job in refused:
        assert not (bot.settings.images_dir / str(job.id)).exists()

    # The results are checked too: what is made from an upload is withheld when flagged, even
    # there; a plain set's variation in that channel is not filtered.
    vary = await standin.click(world.alice, plain, f"imagine:vary:{plain_job.id}:1")
    await vary.wait_ack(3)
    free = await standin.wait_for_message(
        lambda m: m.interaction is vary and len(m.attachments) == 4, timeout=60
    )
    assert not any(a.spoiler for a in free.attachments)
    vary = await standin.click(world.alice, uploaded, f"imagine:vary:{from_upload.id}:1")
    await vary.wait_ack(3)
    held = await standin.wait_for_message(
        lambda m: m.interaction is vary and "withheld" in m.content.lower(), timeout=60
    )
    assert held.attachments == []
