"""gallery.server on a real port over a real SQLite file: listing, 404s, images, headers."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from gallery.listing import GalleryListing
from gallery.pages import PER_PAGE
from gallery.server import IMAGE_CACHE, GalleryHandlers, GalleryServer
from gallery.thumbnails import ThumbnailStore
from lifecycle.storage import Job, NewJob, Storage

GUILD, OTHER_GUILD = 222, 999
SLUG, OTHER_SLUG = "s" * 22, "o" * 22


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0  # every row a second later: a stable newest-first order
        return self.now


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


class World:
    """Storage, a running gallery and the stored image bytes it serves."""

    def __init__(self, storage: Storage, listing: GalleryListing, url: str):
        self.storage = storage
        self.listing = listing
        self.url = url
        self.images: dict[tuple[int, int], bytes] = {}
        self.loads = 0

    async def shared_set(
        self,
        prompt: str,
        *,
        guild: int = GUILD,
        nsfw_channel: bool = False,
        showcase_nsfw: bool = False,
        image_index: int = 0,
        size: tuple[int, int] = (64, 64),
    ) -> Job:
        job = await self.storage.create_job(
            NewJob(
                kind="imagine",
                requester_id=1,
                guild_id=guild,
                channel_id=10,
                prompt=prompt,
                seed=100,
                width=size[0],
                height=size[1],
                nsfw_channel=nsfw_channel,
                requester_name="Alice",
            )
        )
        done = await self.storage.mark_done(
            job.id, [100, 101, 102, 103], 5000 + job.id, [f"{i}.png" for i in range(1, 5)]
        )
        assert done is not None
        for i in range(1, 5):
            self.images[(job.id, i)] = png(*size, (job.id * 40 % 256, i * 60, 0))
        await self.storage.add_share(
            job.id,
            image_index,
            guild_id=guild,
            showcase_channel_id=20,
            shared_by=2,
            showcase_message_id=9000 + job.id,
            shared_by_name="Bob",
            showcase_nsfw=showcase_nsfw,
        )
        return done

    async def load(self, job: Job, index: int) -> tuple[str, bytes]:
        self.loads += 1
        try:
            return f"{job.id}-{index}.png", self.images[(job.id, index)]
        except KeyError:
            raise FileNotFoundError(index) from None


@pytest.fixture
async def world(tmp_path: Path):
    storage = await Storage.open(tmp_path / "db.sqlite3", clock=Clock())
    await storage.update_guild_settings(GUILD, gallery_enabled=True, gallery_slug=SLUG)
    await storage.update_guild_settings(OTHER_GUILD, gallery_enabled=False, gallery_slug=OTHER_SLUG)
    thumbnails = ThumbnailStore(tmp_path / "thumbs")
    listing = GalleryListing(storage, thumbnails)
    holder: list[World] = []

    async def load(job: Job, index: int) -> tuple[str, bytes]:
        return await holder[0].load(job, index)

    server = await GalleryServer.start("127.0.0.1", 0, GalleryHandlers(storage, thumbnails, load))
    holder.append(World(storage, listing, f"http://127.0.0.1:{server.port}"))
    yield holder[0]
    await server.close()
    await storage.close()


async def get(url: str, **kwargs) -> tuple[int, Mapping[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, allow_redirects=False, **kwargs) as response,
    ):
        return response.status, response.headers.copy(), await response.read()


def prompts_on(html: bytes) -> list[str]:
    return re.findall(r'<p class="prompt">(.*?)</p>', html.decode())


async def test_the_page_lists_shared_sets_newest_first_and_nothing_else(world: World) -> None:
    first = await world.shared_set("first fox")
    await world.shared_set("age-restricted source", nsfw_channel=True)
    await world.shared_set("age-restricted showcase", showcase_nsfw=True)
    await world.shared_set("another server's", guild=OTHER_GUILD)
    await world.shared_set("second fox")
    status, headers, body = await get(f"{world.url}/g/{SLUG}/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert "script-src" not in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    assert prompts_on(body) == ["second fox", "first fox"]
    html = body.decode()
    assert "2 shared sets" in html
    assert f"https://discord.com/channels/{GUILD}/20/{9000 + first.id}" in html
    assert "/imagine prompt:first fox seed:100" in html
    assert "Made by Alice · shared by Bob" in html


async def test_pages_split_the_listing_and_past_the_end_is_not_found(world: World) -> None:
    for n in range(PER_PAGE + 2):
        await world.shared_set(f"fox {n}")
    _, _, one = await get(f"{world.url}/g/{SLUG}/")
    _, _, two = await get(f"{world.url}/g/{SLUG}/?page=2")
    assert prompts_on(one) == [f"fox {n}" for n in range(PER_PAGE + 1, 1, -1)]
    assert prompts_on(two) == ["fox 1", "fox 0"]
    assert 'href="?page=2"' in one.decode() and 'href="?page=1"' in two.decode()
    assert (await get(f"{world.url}/g/{SLUG}/?page=3"))[0] == 404


async def test_every_miss_gets_the_same_404(world: World) -> None:
    job = await world.shared_set("fox")
    hidden = await world.shared_set("hidden", nsfw_channel=True)
    other = await world.shared_set("elsewhere", guild=OTHER_GUILD)
    misses = [
        f"/g/{'x' * 22}/",  # no such server
        f"/g/{OTHER_SLUG}/",  # a server whose gallery is off
        "/g/short/",  # not a slug at all
        f"/g/{SLUG}/?page=0",
        f"/g/{SLUG}/?page=abc",
        f"/g/{SLUG}/?page=99",
        f"/g/{SLUG}/image/{job.id}-9",
        f"/g/{SLUG}/image/{job.id}",
        f"/g/{SLUG}/image/{hidden.id}-1",  # stored, but not listed
        f"/g/{SLUG}/thumb/{hidden.id}-1.webp",
        f"/g/{SLUG}/image/{other.id}-1",  # listed, but by another server
        f"/g/{OTHER_SLUG}/image/{other.id}-1",
        f"/g/{SLUG}/../../etc/passwd",
        "/",
        "/metrics",
    ]
    answers = {path: await get(world.url + path) for path in misses}
    for path, (status, headers, body) in answers.items():
        assert (status, body, headers.get("Cache-Control")) == (404, b"Not found", "no-store"), path
    async with aiohttp.ClientSession() as session, session.post(f"{world.url}/g/{SLUG}/") as r:
        assert (r.status, await r.read()) == (404, b"Not found")
    # Without the slash: a redirect whether or not the server exists.
    assert (await get(f"{world.url}/g/{SLUG}"))[0] == 301
    assert (await get(f"{world.url}/g/{'x' * 22}"))[0] == 301


async def test_full_images_are_served_as_stored_with_cache_headers(world: World) -> None:
    job = await world.shared_set("fox")
    status, headers, body = await get(f"{world.url}/g/{SLUG}/image/{job.id}-2")
    assert status == 200
    assert body == world.images[(job.id, 2)]
    assert headers["Content-Type"] == "image/png"
    assert headers["Cache-Control"] == IMAGE_CACHE
    again = await get(
        f"{world.url}/g/{SLUG}/image/{job.id}-2", headers={"If-None-Match": headers["ETag"]}
    )
    assert (again[0], again[2]) == (304, b"")


async def test_thumbnails_are_small_webp_made_once(world: World) -> None:
    job = await world.shared_set("wide fox", size=(1344, 768))
    status, headers, body = await get(f"{world.url}/g/{SLUG}/thumb/{job.id}-1.webp")
    assert status == 200 and headers["Content-Type"] == "image/webp"
    assert headers["Cache-Control"] == IMAGE_CACHE
    with Image.open(io.BytesIO(body)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("WEBP", (384, 219))
    loads = world.loads
    second = await get(f"{world.url}/g/{SLUG}/thumb/{job.id}-1.webp")
    assert second[2] == body and world.loads == loads  # read from disk, not made again
    _, _, page = await get(f"{world.url}/g/{SLUG}/")
    assert f'src="thumb/{job.id}-1.webp" width="384" height="219"' in page.decode()


async def test_a_single_shared_image_lists_only_that_image(world: World) -> None:
    job = await world.shared_set("one of four", image_index=3)
    _, _, page = await get(f"{world.url}/g/{SLUG}/")
    assert re.findall(r'src="(thumb/[^"]+)"', page.decode()) == [f"thumb/{job.id}-3.webp"]
    assert (await get(f"{world.url}/g/{SLUG}/image/{job.id}-3"))[0] == 200
    assert (await get(f"{world.url}/g/{SLUG}/image/{job.id}-1"))[0] == 404


async def test_purged_sets_and_deleted_posts_leave_the_gallery(world: World) -> None:
    purged = await world.shared_set("purged")
    deleted = await world.shared_set("post deleted")
    kept = await world.shared_set("kept")
    for job in (purged, deleted, kept):
        assert (await get(f"{world.url}/g/{SLUG}/thumb/{job.id}-1.webp"))[0] == 200
    assert [s.job_id for s in await world.listing.images_purged([purged.id])] == [purged.id]
    removed = await world.listing.post_deleted(9000 + deleted.id)
    assert removed is not None and removed.job_id == deleted.id
    assert await world.listing.post_deleted(123456) is None  # not a showcase post
    _, _, page = await get(f"{world.url}/g/{SLUG}/")
    assert prompts_on(page) == ["kept"]
    for job in (purged, deleted):
        assert (await get(f"{world.url}/g/{SLUG}/thumb/{job.id}-1.webp"))[0] == 404
        assert not (world.listing.thumbnails.root / str(job.id)).exists()
    assert (world.listing.thumbnails.root / str(kept.id) / "1.webp").exists()


async def test_turning_the_gallery_off_hides_the_page_like_an_unknown_one(world: World) -> None:
    await world.shared_set("fox")
    assert (await get(f"{world.url}/g/{SLUG}/"))[0] == 200
    await world.storage.update_guild_settings(GUILD, gallery_enabled=False)
    off = await get(f"{world.url}/g/{SLUG}/")
    unknown = await get(f"{world.url}/g/{'x' * 22}/")
    assert (off[0], off[2]) == (unknown[0], unknown[2]) == (404, b"Not found")
