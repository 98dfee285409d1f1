"""/describe end to end: a picture becomes four prompts, and their buttons run /imagine.

Real bot, local Discord stand-in, tiny engine, a tiny random-weight BLIP captioner loaded by
path (tests/tiny_captioner.py), real SQLite and files.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.i18n import t
from engine.describe import Describer
from tests.bot.test_image_prompts_e2e import BAD_UPLOAD_IDS, BAD_UPLOADS, photo, size_of
from tests.bot.test_imagine_e2e import job_for_message

# `workers`: that module's fixture (python -m engine.worker processes), used here too.
from tests.bot.test_workers_e2e import redis_settings, wait_workers, workers  # noqa: F401
from tests.engine.test_safety import build_tiny_classifier

NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")


@pytest.fixture
def bot_settings(bot_settings, tiny_captioner_dir):
    """The e2e settings with IMAGINE_DESCRIBE_MODEL set to the tiny captioner."""
    engine = bot_settings.engine.model_copy(update={"describe_model": str(tiny_captioner_dir)})
    return bot_settings.model_copy(update={"engine": engine})


def is_describe_result(message, ix) -> bool:
    return message.interaction is ix and not message.ephemeral and "🔎" in message.content


async def describe(standin, user, channel, upload=("photo.png", None)):
    """/describe a picture: (interaction, the message with the four prompts)."""
    name, data = upload
    ix = await standin.slash_command(
        user, channel, "describe", {"picture": (name, data or photo())}
    )
    await ix.wait_ack(3)
    result = await standin.wait_for_message(lambda m: is_describe_result(m, ix), timeout=60)
    return ix, result


def shown_prompts(content: str) -> list[str]:
    """The numbered prompts of a /describe message, in order."""
    lines = [line for line in content.splitlines() if line[:3] in NUMBERS]
    return [line.split(" ", 1)[1] for line in lines]


async def click(standin, user, message, custom_id):
    ix = await standin.click(user, message, custom_id)
    await ix.wait_ack(3)
    return ix, await standin.wait_for_message(
        lambda m: m.interaction is ix and len(m.attachments) == 4 and not m.ephemeral, timeout=60
    )


async def test_describe_proposes_four_prompts_and_its_buttons_run_them(
    bot_process, standin, world, tiny_captioner_dir
):
    bot = await bot_process.start()
    picture = photo((120, 80))
    _, result = await describe(standin, world.alice, world.general, ("p.png", picture))
    job = await job_for_message(bot, result.id)
    assert job.kind == "describe" and job.status == "done" and job.uploaded and job.from_upload
    # Four different prompts, shown numbered like their buttons, and what the model says for
    # the stored picture with the job's seed (the model really ran, nothing else wrote them).
    assert len(job.captions) == 4 and len({c.casefold() for c in job.captions}) == 4
    assert shown_prompts(result.content) == list(job.captions)
    [(_, stored)] = await bot.jobs.files.load(job.id, [0])
    direct = Describer(str(tiny_captioner_dir), device="cpu").describe([stored], [job.seed])
    assert direct == [job.captions]
    ids = result.custom_ids()
    for i in range(1, 5):
        assert f"imagine:prompt:{job.id}:{i}" in ids and f"imagine:promptpic:{job.id}:{i}" in ids
    assert f"imagine:delete:{job.id}" in ids
    assert result.attachments == []

    # Button 2: /imagine that prompt, the clicker's own job.
    _, made = await click(standin, world.bob, result, f"imagine:prompt:{job.id}:2")
    child = await job_for_message(bot, made.id)
    assert child.prompt == job.captions[1] and child.requester_id == world.bob.id
    assert not child.uploaded and child.parent_job_id == job.id
    assert all(size_of(a.data) == (64, 64) for a in made.attachments)

    # The buttons survive a restart; 🖼 3: prompt 3 with the described picture as image prompt.
    await bot_process.stop()
    bot = await bot_process.start()
    _, made = await click(standin, world.alice, result, f"imagine:promptpic:{job.id}:3")
    child = await job_for_message(bot, made.id)
    assert child.prompt == job.captions[2] and child.uploaded and child.from_upload
    assert (child.width, child.height) == (job.width, job.height)
    [(_, source)] = await bot.jobs.files.load(child.id, [0])
    assert source == stored
    assert {size_of(a.data) for a in made.attachments} == {(job.width, job.height)}

    # /info lists the prompts; a reply to the message says to use the buttons.
    info = await standin.slash_command(world.alice, world.general, "info", {"job": job.id})
    text = (await info.wait_response(5)).content
    assert "(describe)" in text and all(c.replace("`", "ˋ") in text for c in job.captions)
    reply = await standin.user_message(world.alice, world.general, "again", reply_to=result)
    hint = await standin.wait_for_message(lambda m: m.reply_to_id == reply.id, timeout=30)
    assert hint.content == t("describe_reply", None)
    history = await standin.slash_command(world.alice, world.general, "history")
    assert "🔎 /describe" in (await history.wait_response(5)).content


async def test_the_describe_menu_works_on_a_message_with_a_picture(bot_process, standin, world):
    bot = await bot_process.start()
    posted = await standin.user_message(
        world.bob, world.general, "look at this", files=[("cat.jpg", photo(fmt="JPEG"))]
    )
    ix = await standin.context_menu(world.alice, posted, "Describe picture")
    await ix.wait_ack(3)
    result = await standin.wait_for_message(lambda m: is_describe_result(m, ix), timeout=60)
    job = await job_for_message(bot, result.id)
    assert job.requester_id == world.alice.id and len(shown_prompts(result.content)) == 4

    plain = await standin.user_message(world.bob, world.general, "no picture here")
    ix = await standin.context_menu(world.alice, plain, "Describe picture")
    answer = await ix.wait_response(5)
    assert answer.ephemeral and answer.content == t("describe_no_picture", None)


@pytest.mark.parametrize(
    ("upload", "words"),
    BAD_UPLOADS,
    ids=BAD_UPLOAD_IDS,
)
async def test_bad_uploads_get_the_image_prompt_answers_and_nothing_is_kept(
    bot_process, standin, world, upload, words
):
    bot = await bot_process.start()
    ix = await standin.slash_command(world.alice, world.general, "describe", {"picture": upload})
    answer = await standin.wait_for_message(
        lambda m: m.interaction is ix and m.ephemeral and m.content, timeout=30
    )
    assert words in answer.content
    assert await bot.storage.recent_jobs(world.alice.id) == []
    assert not list(bot.settings.images_dir.glob("*/0-source.png"))
    # The bot is fine: the next /describe works.
    _, result = await describe(standin, world.alice, world.general)
    assert len(shown_prompts(result.content)) == 4


async def test_without_a_describe_model_the_command_says_so(bot_process, standin, world):
    settings = bot_process.settings
    engine = settings.engine.model_copy(update={"describe_model": ""})
    bot = await bot_process.start(settings.model_copy(update={"engine": engine}))
    ix = await standin.slash_command(
        world.alice, world.general, "describe", {"picture": ("p.png", photo())}
    )
    answer = await ix.wait_response(5)
    assert answer.ephemeral and "IMAGINE_DESCRIBE_MODEL" in answer.content
    assert await bot.storage.recent_jobs(world.alice.id) == []


async def test_the_safety_filter_refuses_a_flagged_picture_even_in_nsfw_channels(
    bot_process, standin, world, tmp_path
):
    flag_all = build_tiny_classifier(
        tmp_path / "flag_all", nsfw_bias=20.0, labels={0: "normal", 1: "nsfw"}
    )
    settings = bot_process.settings
    engine = settings.engine.model_copy(update={"safety_model": str(flag_all)})
    bot = await bot_process.start(settings.model_copy(update={"engine": engine}))
    for channel in (world.general, world.nsfw):
        ix = await standin.slash_command(
            world.alice, channel, "describe", {"picture": ("p.png", photo())}
        )
        await ix.wait_ack(3)
        answer = await standin.wait_for_message(
            lambda m, ix=ix: m.interaction is ix and t("upload_refused", "en-US") in m.content,
            timeout=60,
        )
        assert answer.components == [] or not answer.custom_ids()
    refused = await bot.storage.recent_jobs(world.alice.id)
    assert len(refused) == 2 and all(j.status == "failed" and j.captions == () for j in refused)
    for job in refused:
        assert not (bot.settings.images_dir / str(job.id)).exists()


async def test_a_describe_job_waits_its_turn_in_the_queue(bot_process, standin, world):
    """Describing is a job like any other: queued behind /imagine, then answered."""
    bot = await bot_process.start()
    first = await standin.slash_command(world.bob, world.general, "imagine", {"prompt": "a fox"})
    await first.wait_ack(3)
    _, result = await describe(standin, world.alice, world.general)
    job = await job_for_message(bot, result.id)
    imagine_job = next(j for j in await bot.storage.recent_jobs(world.bob.id))
    assert any(job.id in batch for batch in bot.jobs.batches)
    # Released in its own batch: a describe ticket never shares a pipeline call.
    assert all(not (job.id in batch and imagine_job.id in batch) for batch in bot.jobs.batches)
    png = Image.open(io.BytesIO((await bot.jobs.files.load(job.id, [0]))[0][1]))
    assert png.format == "PNG"


@pytest.mark.timeout(300)
async def test_with_gpu_workers_the_worker_describes(
    bot_process,
    bot_settings,
    standin,
    world,
    workers,  # noqa: F811 (the fixture imported above)
    tiny_captioner_dir,
):
    """Redis mode: the bot loads no captioner; the worker that runs the job does, and a
    worker without one fails the job with a message that says so."""
    bot = await bot_process.start(settings=redis_settings(bot_settings, workers))
    assert bot.describer is None and bot.describe_available
    workers.start("plain")  # IMAGINE_DESCRIBE_MODEL not set on this one
    await wait_workers(bot, 1, workers)
    ix = await standin.slash_command(
        world.alice, world.general, "describe", {"picture": ("p.png", photo())}
    )
    await ix.wait_ack(3)
    failed = await standin.wait_for_message(
        lambda m: m.interaction is ix and "IMAGINE_DESCRIBE_MODEL" in m.content, timeout=90
    )
    assert "GPU worker" in failed.content
    workers.stop_all()

    workers.start("captioner", IMAGINE_DESCRIBE_MODEL=str(tiny_captioner_dir))
    await wait_workers(bot, 1, workers)
    _, result = await describe(standin, world.alice, world.general, ("p.png", photo()))
    job = await job_for_message(bot, result.id)
    assert len(job.captions) == 4 and shown_prompts(result.content) == list(job.captions)
    assert "captioner: job" in workers.log("captioner")


async def test_prompts_the_blocklist_refuses_are_not_shown_nor_run(bot_process, standin, world):
    """Proposed prompts come from an upload: the ordinary channel's blocklist applies to
    them wherever they are shown, and to a click on one, even in an age-restricted channel."""
    bot = await bot_process.start()
    picture = photo((100, 100))
    _, first = await describe(standin, world.alice, world.nsfw, ("p.png", picture))
    job = await job_for_message(bot, first.id)

    # A word of the best caption (the beam search's: the same for the same picture), the one
    # the fewest other prompts use.
    def using(word: str) -> set[int]:
        return {i for i, c in enumerate(job.captions, start=1) if word in c.split()}

    word = min((w for w in job.captions[0].split() if len(w) > 2), key=lambda w: len(using(w)))
    saved = await standin.slash_command(
        world.mod, world.general, "imagine-settings", {"block": word}
    )
    assert "saved" in (await saved.wait_response(5)).content.lower()

    clicked = await standin.click(world.alice, first, f"imagine:prompt:{job.id}:1")
    assert (await clicked.wait_response(5)).content == t("prompt_blocked", "en-US")

    _, again = await describe(standin, world.alice, world.nsfw, ("p.png", picture))
    second = await job_for_message(bot, again.id)
    assert second.captions[0] == job.captions[0]
    lines = shown_prompts(again.content)
    ids = again.custom_ids()
    hidden = {i for i, c in enumerate(second.captions, start=1) if word in c.split()}
    assert 1 in hidden
    for i, line in enumerate(lines, start=1):
        blocked = i in hidden
        assert (line == f"*{t('describe_hidden', None)}*") is blocked
        assert word not in line.split()  # shown nowhere
        assert (f"imagine:prompt:{second.id}:{i}" in ids) is not blocked
        assert (f"imagine:promptpic:{second.id}:{i}" in ids) is not blocked
