"""Community sharing end to end: ⭐ to the showcase, Remix from it, and the server's gallery page.

Real discord.py client, local Discord stand-in, tiny SDXL engine, real SQLite file and the real
gallery listener on a free port, read over HTTP like a browser would.
"""

from __future__ import annotations

import asyncio
import html
import io
import re

import aiohttp
import numpy as np
from PIL import Image

from bot.i18n import t
from tests.bot.conftest import GALLERY_URL as PUBLIC_URL
from tests.bot.test_conversation_e2e import imagine, pixels, wait_deleted
from tests.bot.test_imagine_e2e import job_for_message, seeds_in
from tests.discord_standin import Perm

ADDRESS = re.compile(re.escape(PUBLIC_URL) + r"/g/([A-Za-z0-9_-]{22})/")


async def fetch(bot, path: str) -> tuple[int, bytes, str]:
    """GET ``path`` from the bot's gallery listener: (status, body, content type)."""
    url = f"http://127.0.0.1:{bot.gallery_server.port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read(), response.content_type


async def settings_answer(standin, user, channel, options) -> str:
    ix = await standin.slash_command(user, channel, "imagine-settings", options)
    answer = await ix.wait_response(5)
    assert answer.ephemeral
    return answer.content


async def turn_gallery_on(standin, world) -> str:
    """The moderator sets the showcase and turns the gallery on; returns its path."""
    text = await settings_answer(
        standin, world.mod, world.general, {"showcase": world.showcase, "gallery": "on"}
    )
    match = ADDRESS.search(text)
    assert match, text
    return f"/g/{match[1]}/"


async def share(standin, user, result, job, channel):
    """⭐ a result; returns the showcase post."""
    ix = await standin.click(user, result, f"imagine:share:{job.id}")
    await ix.wait_ack(3)
    return await standin.wait_for_message(
        lambda m: len(m.attachments) == 4 and job.prompt[:20] in m.content,
        channel=channel,
        timeout=10,
    )


async def listed(bot, path: str, expected: list[str], timeout: float = 10.0) -> list[str]:
    """The gallery's prompts once they are ``expected`` (or whatever they are at the timeout):
    deletions reach the gallery through events the bot handles after the test's call returns."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        prompts = cards((await fetch(bot, path))[1])
        if prompts == expected or loop.time() > deadline:
            return prompts
        await asyncio.sleep(0.05)


def cards(page: bytes) -> list[str]:
    """The prompts on a gallery page, as a browser shows them (unescaped)."""
    return [html.unescape(p) for p in re.findall(r'<p class="prompt">(.*?)</p>', page.decode())]


async def test_opt_in_lists_shares_by_name_with_thumbnails_and_the_command(
    bot_process, standin, world, gallery_settings
):
    bot = await bot_process.start(gallery_settings)
    carol = standin.add_user("carol", global_name="Carol the Painter")

    # Off by default; only Manage Server turns it on; the address is for admins' eyes only.
    assert "- gallery: off" in await settings_answer(standin, world.bob, world.general, {})
    refused = await settings_answer(standin, world.bob, world.general, {"gallery": "on"})
    assert refused == t("no_permission", "en-US")
    path = await turn_gallery_on(standin, world)
    member_view = await settings_answer(standin, world.bob, world.general, {})
    assert "- gallery: on" in member_view and "/g/" not in member_view
    assert path in await settings_answer(standin, world.mod, world.general, {})

    hostile = 'a lighthouse <script>alert("x")</script> & <b>friends</b>'
    _, result = await imagine(standin, carol, world.general, prompt=hostile, seed=321)
    job = await job_for_message(bot, result.id)
    posted = await share(standin, carol, result, job, world.showcase)
    assert {"imagine:remix:" + str(job.id), f"imagine:delete:{job.id}"} <= set(posted.custom_ids())

    status, page, content_type = await fetch(bot, path)
    assert (status, content_type) == (200, "text/html")
    text = page.decode()
    assert cards(page) == [hostile]
    assert "<script>" not in text and "<b>friends</b>" not in text
    assert "&lt;script&gt;" in text
    assert "Made by Carol the Painter · shared by Carol the Painter" in text
    assert str(carol.id) not in text and "carol" not in text  # names, never ids or usernames
    assert f"https://discord.com/channels/{world.guild.id}/{world.showcase.id}/{posted.id}" in text
    command = html.unescape(re.search(r'<code class="copy">(.*?)</code>', text)[1])
    assert command == f"/imagine prompt:{hostile} seed:321"
    assert seeds_in(result.content) == [321, 322, 323, 324]

    thumbs = re.findall(r'src="(thumb/[^"]+\.webp)"', text)
    fulls = re.findall(r'href="(image/[^"]+)"', text)
    assert len(thumbs) == len(fulls) == 4
    for thumb, full, attachment in zip(thumbs, fulls, result.attachments, strict=True):
        status, data, kind = await fetch(bot, path + thumb)
        assert (status, kind) == (200, "image/webp")
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "WEBP"
            assert image.size == Image.open(io.BytesIO(attachment.data)).size  # tiny: not upscaled
        status, data, _ = await fetch(bot, path + full)
        assert status == 200 and data == attachment.data
    assert sorted(p.name for p in (gallery_settings.thumbnails_dir / str(job.id)).iterdir()) == [
        "1.webp",
        "2.webp",
        "3.webp",
        "4.webp",
    ]  # made when it was shared, before anyone asked

    # Off again: the same 404 as an address that never existed; on again: the same address.
    await settings_answer(standin, world.mod, world.general, {"gallery": "off"})
    assert await fetch(bot, path) == await fetch(bot, "/g/" + "x" * 22 + "/")
    assert (await fetch(bot, path))[:2] == (404, b"Not found")
    assert await turn_gallery_on(standin, world) == path
    assert cards((await fetch(bot, path))[1]) == [hostile]


async def test_nsfw_sets_are_never_listed(bot_process, standin, world, gallery_settings):
    bot = await bot_process.start(gallery_settings)
    path = await turn_gallery_on(standin, world)
    adult_showcase = standin.add_channel(world.guild, name="after-dark-showcase", nsfw=True)

    _, ordinary = await imagine(standin, world.alice, world.general, prompt="a calm harbour")
    ordinary_job = await job_for_message(bot, ordinary.id)
    await share(standin, world.alice, ordinary, ordinary_job, world.showcase)

    await settings_answer(standin, world.mod, world.general, {"showcase": adult_showcase})
    _, adult = await imagine(standin, world.alice, world.nsfw, prompt="a night out")
    adult_job = await job_for_message(bot, adult.id)
    await share(standin, world.alice, adult, adult_job, adult_showcase)
    # Even a set from an ordinary channel, once shown in an age-restricted showcase.
    _, second = await imagine(standin, world.alice, world.general, prompt="a second harbour")
    second_job = await job_for_message(bot, second.id)
    await share(standin, world.alice, second, second_job, adult_showcase)

    _, page, _ = await fetch(bot, path)
    assert cards(page) == ["a calm harbour"]
    assert "1 shared set," in page.decode()
    for job in (adult_job, second_job):
        assert (await fetch(bot, f"{path}image/{job.id}-1"))[0] == 404
        assert (await fetch(bot, f"{path}thumb/{job.id}-1.webp"))[0] == 404


async def test_remix_runs_the_clickers_own_job_and_same_seed_reproduces(
    bot_process, standin, world, gallery_settings
):
    bot = await bot_process.start(gallery_settings)
    await turn_gallery_on(standin, world)
    _, result = await imagine(
        standin, world.alice, world.general, prompt="a red fox", negative_prompt="blurry", seed=40
    )
    job = await job_for_message(bot, result.id)
    posted = await share(standin, world.alice, result, job, world.showcase)

    # The form comes pre-filled with the prompt, the negative prompt and the seed choice.
    opened = await standin.click(world.bob, posted, f"imagine:remix:{job.id}")
    await opened.wait_ack(3)
    assert opened.modal is not None
    fields = {
        c["custom_id"]: c
        for top in opened.modal["components"]
        for c in [top.get("component") or {}]
        if "custom_id" in c
    }
    assert fields["prompt"]["value"] == "a red fox"
    assert fields["negative_prompt"]["value"] == "blurry"
    assert [o["value"] for o in fields["seed"]["options"]] == ["new", "same"]

    # Edited: bob's own job, posted where he clicked, with the edited prompt and new seeds.
    form = {"prompt": "a red fox, watercolour", "negative_prompt": "", "seed": "new"}
    edited = await standin.submit_modal(world.bob, opened, form)
    await edited.wait_ack(3)
    remixed = await standin.wait_for_message(
        lambda m: m.interaction is edited and len(m.attachments) == 4, timeout=60
    )
    assert remixed.channel is world.showcase
    remix_job = await job_for_message(bot, remixed.id)
    assert (remix_job.kind, remix_job.requester_id) == ("remix", world.bob.id)
    assert (remix_job.prompt, remix_job.negative_prompt) == ("a red fox, watercolour", "")
    assert remix_job.seed != 40 and seeds_in(remixed.content) != [40, 41, 42, 43]
    assert "a red fox, watercolour" in remixed.content

    # Same seed, prompt as it was: the original pixels again.
    again = await standin.click(world.bob, posted, f"imagine:remix:{job.id}")
    await again.wait_ack(3)
    same = await standin.submit_modal(
        world.bob, again, {"prompt": "a red fox", "negative_prompt": "blurry", "seed": "same"}
    )
    await same.wait_ack(3)
    reproduced = await standin.wait_for_message(
        lambda m: m.interaction is same and len(m.attachments) == 4, timeout=60
    )
    assert seeds_in(reproduced.content) == [40, 41, 42, 43]
    for ours, theirs in zip(reproduced.attachments, result.attachments, strict=True):
        assert np.array_equal(pixels(ours.data), pixels(theirs.data))

    # The same rules as /imagine: a blocked prompt is refused with a message, nothing queued.
    await settings_answer(standin, world.mod, world.general, {"block": "forbiddenword"})
    third = await standin.click(world.bob, posted, f"imagine:remix:{job.id}")
    await third.wait_ack(3)
    blocked = await standin.submit_modal(
        world.bob, third, {"prompt": "a forbiddenword fox", "seed": "new"}
    )
    answer = await blocked.wait_response(5)
    assert answer.ephemeral and answer.content == t("prompt_blocked", "en-US")
    bobs = await bot.storage.recent_jobs(world.bob.id)
    assert "a forbiddenword fox" not in [j.prompt for j in bobs]


async def test_remix_where_the_bot_may_not_post_says_where_to_run_it(
    bot_process, standin, world, gallery_settings
):
    bot = await bot_process.start(gallery_settings)
    await turn_gallery_on(standin, world)
    _, result = await imagine(standin, world.alice, world.general, prompt="a quiet pier", seed=7)
    job = await job_for_message(bot, result.id)
    posted = await share(standin, world.alice, result, job, world.showcase)
    # The showcase became read-only for the bot: it may no longer attach files there.
    world.showcase.bot_permissions = int(Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES)

    ix = await standin.click(world.bob, posted, f"imagine:remix:{job.id}")
    answer = await ix.wait_response(5)
    assert ix.modal is None and answer.ephemeral
    assert "/imagine prompt:a quiet pier seed:7" in answer.content
    assert not [j for j in await bot.storage.recent_jobs(world.bob.id) if j.kind == "remix"]

    # In the clicker's language.
    wen = standin.add_user("wen", locale="zh-CN")
    ix = await standin.click(wen, posted, f"imagine:remix:{job.id}")
    answer = await ix.wait_response(5)
    assert answer.content.startswith("我无法在此频道发送图片")
    assert "/imagine prompt:a quiet pier seed:7" in answer.content
    # Where it may post, the form is in their language too.
    _, own = await imagine(standin, wen, world.general, prompt="一座安静的码头", seed=8)
    own_job = await job_for_message(bot, own.id)
    world.showcase.bot_permissions = None  # the server's permissions again
    mine = await share(standin, wen, own, own_job, world.showcase)
    opened = await standin.click(wen, mine, f"imagine:remix:{own_job.id}")
    await opened.wait_ack(3)
    assert opened.modal["title"] == "混搭重绘"


async def test_deleting_in_discord_takes_sets_off_the_gallery(
    bot_process, standin, world, gallery_settings
):
    bot = await bot_process.start(gallery_settings)
    path = await turn_gallery_on(standin, world)
    posts = {}
    for prompt in ("by the author", "by the showcase button", "by a moderator", "stays"):
        _, result = await imagine(standin, world.alice, world.general, prompt=prompt)
        job = await job_for_message(bot, result.id)
        post = await share(standin, world.alice, result, job, world.showcase)
        posts[prompt] = (result, job, post)
    assert sorted(cards((await fetch(bot, path))[1])) == sorted(posts)

    # The author's 🗑 on the result: the set is gone, from the gallery too.
    result, job, _ = posts["by the author"]
    ix = await standin.click(world.alice, result, f"imagine:delete:{job.id}")
    await ix.wait_ack(3)
    await wait_deleted(result)
    # 🗑 on the showcase post.
    _, job2, post2 = posts["by the showcase button"]
    ix = await standin.click(world.alice, post2, f"imagine:delete:{job2.id}")
    await ix.wait_ack(3)
    await wait_deleted(post2)
    # A moderator deletes the post in Discord itself (MESSAGE_DELETE).
    _, job3, post3 = posts["by a moderator"]
    await standin.delete_message(world.mod, post3)

    assert await listed(bot, path, ["stays"]) == ["stays"]
    for gone in (job, job2, job3):
        assert (await fetch(bot, f"{path}image/{gone.id}-1"))[0] == 404
        assert not (gallery_settings.thumbnails_dir / str(gone.id)).exists()
    assert await bot.storage.shares_of_job(job3.id) == []


async def test_a_retention_purge_takes_sets_off_the_gallery(
    bot_process, standin, world, gallery_settings
):
    bot = await bot_process.start(gallery_settings)
    path = await turn_gallery_on(standin, world)
    _, result = await imagine(standin, world.alice, world.general, prompt="a shared harbour")
    job = await job_for_message(bot, result.id)
    await share(standin, world.alice, result, job, world.showcase)
    assert cards((await fetch(bot, path))[1]) == ["a shared harbour"]
    await bot_process.stop()

    # Restart over the size cap: the first sweep removes even shared sets, and the gallery
    # stops listing them (their showcase post stays in Discord).
    squeezed = gallery_settings.model_copy(update={"retention_max_gb": 1e-9})
    bot = await bot_process.start(squeezed)
    assert await listed(bot, path, []) == []
    assert [s.listed for s in await bot.storage.shares_of_job(job.id)] == [False]
    assert (await fetch(bot, f"{path}thumb/{job.id}-1.webp"))[0] == 404


async def test_gallery_on_needs_the_operators_port(bot_process, standin, world):
    bot = await bot_process.start()
    text = await settings_answer(standin, world.mod, world.general, {"gallery": "on"})
    assert "IMAGINE_GALLERY_PORT" in text
    settings = await bot.storage.guild_settings(world.guild.id)
    assert not settings.gallery_enabled and settings.gallery_slug is None
    assert bot.gallery_server is None
