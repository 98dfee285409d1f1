"""The server gallery page with 10 000 shared sets: time to serve page 1, a middle page, the last.

    python bench/gallery_bench.py [--sets 10000] [--repeat 50] [--warmup 3] [--quick] [--out PATH]

Builds a fresh SQLite database (``lifecycle.storage.Storage``, in a temporary folder) through
the storage's own methods, as the bot writes it: ``--sets`` finished jobs in the measured server,
each shared (⭐) to its showcase channel with a showcase message and the sharer's name (every
7th share is a single image, index 1..4), mixed in random order with rows the page must not
list: shares in another server (``--sets`` / 5), shares of jobs made in an age-restricted
channel (``nsfw_channel``, / 10) and shares posted to an age-restricted showcase
(``showcase_nsfw``, / 20), both in the measured server. Then the real ``GalleryServer`` listens
on 127.0.0.1 (a free port) with ``GalleryHandlers`` (pages load no image, so ``load_image``
raises ``FileNotFoundError``), and an ``aiohttp.ClientSession`` in the same process GETs page
1, the middle page and the last page ``--repeat`` times each after ``--warmup`` untimed GETs:
time from sending the request to the whole body read.

Each page is checked: status 200, the total the page states equals ``--sets`` (so the other
server's and the age-restricted rows are excluded), "Page N of M" with M = ceil(sets / 24),
24 cards on a full page and the remainder on the last, and every card is one of the measured
server's listed shares. A failed check exits 1. The ``storage ms`` column times
``Storage.gallery_page`` alone for the same page (its COUNT and its page query), so the rest of
the page time is rendering and HTTP.

Prints a markdown table for BENCHMARKS.md and the verdict against the 200 ms target (issue 12);
``--out`` also writes the numbers as JSON. ``--quick``: 300 sets, 5 repeats, 1 warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gallery.pages import PER_PAGE  # noqa: E402
from gallery.server import GalleryHandlers, GalleryServer  # noqa: E402
from gallery.thumbnails import ThumbnailStore  # noqa: E402
from lifecycle.storage import Job, NewJob, Storage  # noqa: E402

TARGET_MS = 200.0
GUILD, OTHER_GUILD = 111_111_111_111_111_111, 222_222_222_222_222_222
SHOWCASE, OTHER_SHOWCASE = 333_333_333_333_333_333, 444_444_444_444_444_444
SLUG = "GalleryBench_slug-0123"  # 22 characters, like the bot's secrets.token_urlsafe(16)
CARD = '<article id="set-'  # one per card in gallery/templates/gallery.html
_TOTAL = re.compile(r"<p>(\d+) shared sets?, newest first")
_PAGES = re.compile(r"<span>Page (\d+) of (\d+)</span>")
_KEY = re.compile(r'<article id="set-(\d+-\d+)">')

SUBJECTS = (
    "a lighthouse on a basalt cliff at dusk",
    "portrait of an old fisherman, weathered skin, knitted cap",
    "a cyberpunk noodle stand in the rain, neon reflections",
    "isometric cozy library with a sleeping cat",
    "watercolor fox in a birch forest, early snow",
    "a retro-futuristic train crossing a desert canyon",
    "macro photo of dew on a spider web, morning light",
    "medieval market square, bustling crowd, banners",
)
STYLES = (
    "highly detailed, 35mm photograph, soft light",
    "studio ghibli style, pastel colors",
    "oil painting, thick brush strokes, warm palette",
    "octane render, volumetric fog, cinematic",
    "ink sketch, cross hatching",
)
NEGATIVES = ("", "", "blurry, low quality", "text, watermark, extra fingers")
SIZES = ((1024, 1024), (1152, 896), (896, 1152), (1344, 768), (768, 1344))
KINDS = ("imagine", "imagine", "imagine", "reroll", "variation", "upscale", "remix")
NAMES = ("Alice", "bob_the_builder", "Çağla", "<script>x</script>", "山田", None)


class Clock:
    """Unix time that moves one minute per call: every row later than the one before."""

    def __init__(self, start: float = 1_760_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 60.0
        return self.now


@dataclass
class Built:
    """What went into the database and what the measured server's gallery must list."""

    listed: set[str] = field(default_factory=set)  # card keys "<job>-<image_index>"
    other_guild: int = 0
    nsfw_channel: int = 0
    showcase_nsfw: int = 0
    single_image: int = 0
    seconds: float = 0.0


@dataclass
class PageRow:
    name: str
    page: int
    pages: int
    cards: int
    expected_cards: int
    total: int
    kib: float
    p50_ms: float
    p95_ms: float
    max_ms: float
    storage_p50_ms: float
    problems: list[str]


async def _shared_set(
    storage: Storage,
    rng: random.Random,
    *,
    guild: int,
    showcase: int,
    image_index: int,
    nsfw_channel: bool = False,
    showcase_nsfw: bool = False,
) -> Job:
    width, height = rng.choice(SIZES)
    seed = rng.randrange(2**31)
    prompt = f"{rng.choice(SUBJECTS)}, {rng.choice(STYLES)}, variation {rng.randrange(10**6)}"
    job = await storage.create_job(
        NewJob(
            kind=rng.choice(KINDS),  # type: ignore[arg-type]
            requester_id=rng.randrange(10**17, 10**18),
            guild_id=guild,
            channel_id=555_555_555_555_555_555,
            prompt=prompt,
            interpreted_prompt=f"translated: {prompt}" if rng.random() < 0.1 else None,
            negative_prompt=rng.choice(NEGATIVES),
            seed=seed,
            width=width,
            height=height,
            raw=rng.random() < 0.2,
            nsfw_channel=nsfw_channel,
            requester_name=rng.choice(NAMES),
        )
    )
    done = await storage.mark_done(
        job.id,
        [seed + i for i in range(4)],
        rng.randrange(10**17, 10**18),
        [f"{job.id}-{i}.png" for i in range(1, 5)],
        flagged=[2] if rng.random() < 0.05 else [],
    )
    assert done is not None
    share = await storage.add_share(
        job.id,
        image_index,
        guild_id=guild,
        showcase_channel_id=showcase,
        shared_by=rng.randrange(10**17, 10**18),
        showcase_message_id=rng.randrange(10**17, 10**18),
        shared_by_name=rng.choice(NAMES),
        showcase_nsfw=showcase_nsfw,
    )
    assert share is not None
    return done


async def build(storage: Storage, sets: int, seed: int = 12) -> Built:
    """Fill ``storage`` with ``sets`` listable shares in GUILD and the noise around them."""
    rng = random.Random(seed)
    kinds = (
        ["listed"] * sets
        + ["other_guild"] * (sets // 5)
        + ["nsfw_channel"] * (sets // 10)
        + ["showcase_nsfw"] * (sets // 20)
    )
    rng.shuffle(kinds)
    built = Built()
    started = time.perf_counter()
    listed_so_far = 0
    for kind in kinds:
        if kind == "listed":
            listed_so_far += 1
            index = 1 + listed_so_far // 7 % 4 if listed_so_far % 7 == 0 else 0
            job = await _shared_set(storage, rng, guild=GUILD, showcase=SHOWCASE, image_index=index)
            built.listed.add(f"{job.id}-{index}")
            built.single_image += index > 0
        elif kind == "other_guild":
            await _shared_set(
                storage, rng, guild=OTHER_GUILD, showcase=OTHER_SHOWCASE, image_index=0
            )
            built.other_guild += 1
        elif kind == "nsfw_channel":
            await _shared_set(
                storage, rng, guild=GUILD, showcase=SHOWCASE, image_index=0, nsfw_channel=True
            )
            built.nsfw_channel += 1
        else:
            await _shared_set(
                storage, rng, guild=GUILD, showcase=SHOWCASE, image_index=0, showcase_nsfw=True
            )
            built.showcase_nsfw += 1
    await storage.update_guild_settings(
        GUILD, showcase_channel_id=SHOWCASE, gallery_enabled=True, gallery_slug=SLUG
    )
    built.seconds = time.perf_counter() - started
    return built


async def _no_image(job: Job, index: int) -> tuple[str, bytes]:
    raise FileNotFoundError(f"bench: pages load no image ({job.id}-{index})")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def check_page(html: str, page: int, pages: int, built: Built) -> tuple[int, int, list[str]]:
    """(cards, stated total, problems) of one page's HTML."""
    problems = []
    cards = html.count(CARD)
    expected = PER_PAGE if page < pages else len(built.listed) - PER_PAGE * (pages - 1)
    if cards != expected:
        problems.append(f"page {page}: {cards} cards, expected {expected}")
    match = _TOTAL.search(html)
    total = int(match[1]) if match else -1
    if total != len(built.listed):
        problems.append(f"page {page}: states {total} sets, expected {len(built.listed)}")
    nav = _PAGES.search(html)
    if pages > 1 and (nav is None or (int(nav[1]), int(nav[2])) != (page, pages)):
        problems.append(f"page {page}: navigation {nav[0] if nav else None}, expected {pages}")
    stray = [key for key in _KEY.findall(html) if key not in built.listed]
    if stray:
        problems.append(f"page {page}: {len(stray)} card(s) not listable, e.g. set-{stray[0]}")
    return cards, total, problems


async def measure(args: argparse.Namespace, root: Path) -> tuple[Built, list[PageRow]]:
    storage = await Storage.open(root / "imagine.sqlite3", clock=Clock())
    server = None
    try:
        built = await build(storage, args.sets)
        print(
            f"built {len(built.listed)} listed sets ({built.single_image} single images) + "
            f"{built.other_guild} other-server, {built.nsfw_channel} NSFW-channel, "
            f"{built.showcase_nsfw} NSFW-showcase shares in {built.seconds:.1f} s",
            file=sys.stderr,
        )
        handlers = GalleryHandlers(storage, ThumbnailStore(root / "thumbnails"), _no_image)
        server = await GalleryServer.start("127.0.0.1", 0, handlers)
        url = f"http://127.0.0.1:{server.port}/g/{SLUG}/"
        pages = math.ceil(len(built.listed) / PER_PAGE)
        chosen = [("first", 1), ("middle", (pages + 1) // 2), ("last", pages)]
        rows = []
        async with aiohttp.ClientSession() as session:
            for name, page in chosen:
                timings, html = [], ""
                for i in range(args.warmup + args.repeat):
                    started = time.perf_counter()
                    async with session.get(url, params={"page": str(page)}) as response:
                        html = await response.text()
                        status = response.status
                    if i >= args.warmup:
                        timings.append((time.perf_counter() - started) * 1000)
                    if status != 200:
                        raise SystemExit(f"page {page}: HTTP {status}")
                query = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    await storage.gallery_page(GUILD, limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
                    query.append((time.perf_counter() - started) * 1000)
                cards, total, problems = check_page(html, page, pages, built)
                rows.append(
                    PageRow(
                        name=name,
                        page=page,
                        pages=pages,
                        cards=cards,
                        expected_cards=PER_PAGE if page < pages else cards,
                        total=total,
                        kib=len(html.encode()) / 1024,
                        p50_ms=statistics.median(timings),
                        p95_ms=_percentile(timings, 0.95),
                        max_ms=max(timings),
                        storage_p50_ms=statistics.median(query),
                        problems=problems,
                    )
                )
        return built, rows
    finally:
        if server is not None:
            await server.close()
        await storage.close()


def table(rows: list[PageRow]) -> str:
    lines = [
        "| page | cards | listed total | HTML KiB | p50 ms | p95 ms | max ms "
        "| storage ms (p50) | under 200 ms (p95) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} ({r.page} of {r.pages}) | {r.cards} | {r.total} | {r.kib:.0f} "
            f"| {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.max_ms:.1f} | {r.storage_p50_ms:.1f} "
            f"| {'yes' if r.p95_ms < TARGET_MS else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=None, help="listed sets (default 10000)")
    parser.add_argument("--repeat", type=int, default=None, help="timed GETs per page (50)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed GETs first (3)")
    parser.add_argument("--quick", action="store_true", help="300 sets, 5 repeats, 1 warm-up")
    parser.add_argument("--out", type=Path, default=None, help="also write JSON here")
    args = parser.parse_args(argv)
    quick = (300, 5, 1) if args.quick else (10_000, 50, 3)
    args.sets = quick[0] if args.sets is None else args.sets
    args.repeat = quick[1] if args.repeat is None else args.repeat
    args.warmup = quick[2] if args.warmup is None else args.warmup
    if args.sets < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--sets and --repeat must be at least 1, --warmup at least 0")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="gallery-bench-") as tmp:
        built, rows = asyncio.run(measure(args, Path(tmp)))
    cpu = platform.processor() or platform.machine()
    print(
        f"# gallery bench: {len(built.listed)} listed sets in the server "
        f"({built.other_guild} in another server, {built.nsfw_channel} from NSFW channels and "
        f"{built.showcase_nsfw} in an NSFW showcase not listed), {PER_PAGE} per page; "
        f"{args.repeat} GETs per page after {args.warmup} warm-up; {cpu}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}\n"
    )
    print(table(rows))
    problems = [p for r in rows for p in r.problems]
    worst = max(r.p95_ms for r in rows)
    print()
    print(f"listed total: {rows[0].total} (expected {len(built.listed)})")
    verdict = "PASS" if worst < TARGET_MS else "MISS"
    print(f"verdict: {verdict}: slowest p95 {worst:.1f} ms against the {TARGET_MS:.0f} ms target")
    for problem in problems:
        print(f"check failed: {problem}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "args": {**vars(args), "out": str(args.out) if args.out else None},
                    "expected_listed": len(built.listed),
                    "build_seconds": built.seconds,
                    "rows": [asdict(r) for r in rows],
                    "verdict": verdict,
                },
                indent=1,
            )
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
