"""bot.storage on a real SQLite file."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import signal
import sqlite3
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import aiosqlite
import pytest

from lifecycle.storage import (
    INTERACTION_TOKEN_LIFETIME_S,
    MIGRATIONS,
    SCHEMA_VERSION,
    GuildSettings,
    Job,
    NewJob,
    Storage,
    StorageError,
    migrate,
    schema_version,
)


class FakeClock:
    """Unix time that only moves when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_job(**changes) -> NewJob:
    base = NewJob(
        kind="imagine",
        requester_id=111,
        guild_id=222,
        channel_id=333,
        prompt="一只戴礼帽的柴犬",
        interpreted_prompt="a shiba inu wearing a top hat",
        locale="zh-CN",
        seed=42,
        width=1024,
        height=1024,
        negative_prompt="blurry",
        interaction_id=444,
        application_id=555,
        interaction_token="secret-token",
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "imagine.sqlite3"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def storage(db_path: Path, clock: FakeClock):
    store = await Storage.open(db_path, clock=clock)
    yield store
    await store.close()


async def test_open_creates_dirs_wal_and_latest_schema(db_path: Path, storage: Storage):
    assert db_path.exists()
    assert await storage.schema_version() == SCHEMA_VERSION == len(MIGRATIONS) == 10
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_create_and_get_job(storage: Storage, clock: FakeClock):
    job = await storage.create_job(new_job())
    assert job.id > 0
    assert job.status == "queued"
    assert job.created_at == clock.now
    assert job.token_expires_at == clock.now + INTERACTION_TOKEN_LIFETIME_S
    assert job.prompt == "一只戴礼帽的柴犬"
    assert job.model_prompt == "a shiba inu wearing a top hat"
    assert job.guidance == 1.0 and isinstance(job.guidance, float)
    assert job.seeds == () and job.images == ()
    assert job.raw is False and job.nsfw_channel is False
    assert await storage.get_job(job.id) == job
    assert await storage.get_job(job.id + 1000) is None
    assert "secret-token" not in repr(job)


async def test_create_job_without_token_and_with_parent(storage: Storage):
    parent = await storage.create_job(new_job(interaction_token=None))
    assert parent.token_expires_at is None
    assert not parent.token_usable()
    child = await storage.create_job(
        new_job(
            kind="upscale",
            parent_job_id=parent.id,
            parent_index=3,
            strength=0.3,
            raw=True,
            nsfw_channel=True,
            interpreted_prompt=None,
        )
    )
    assert (child.kind, child.parent_job_id, child.parent_index) == ("upscale", parent.id, 3)
    assert child.strength == 0.3 and child.raw and child.nsfw_channel
    assert child.model_prompt == child.prompt


async def test_unknown_kind_is_refused(storage: Storage):
    with pytest.raises(ValueError, match="kind"):
        await storage.create_job(new_job(kind="paint"))


async def test_token_usable_until_expiry(storage: Storage, clock: FakeClock):
    job = await storage.create_job(new_job())
    assert job.token_usable(now=clock.now)
    assert job.token_usable(now=clock.now + INTERACTION_TOKEN_LIFETIME_S - 60)
    assert not job.token_usable(now=clock.now + INTERACTION_TOKEN_LIFETIME_S - 10)
    assert not job.token_usable(now=clock.now + INTERACTION_TOKEN_LIFETIME_S + 1)


async def test_status_transitions(storage: Storage, clock: FakeClock):
    job = await storage.create_job(new_job())
    clock.now += 5
    running = await storage.mark_running(job.id)
    assert running is not None
    assert running.status == "running" and running.started_at == clock.now
    clock.now += 3
    done = await storage.mark_done(
        job.id, [42, 43, 44, 45], 999, images=["a.webp", "b.webp"], flagged=[4, 2], withheld=[3]
    )
    assert done is not None
    assert done.flagged == (2, 4) and done.withheld == (3,)
    assert done.status == "done" and done.finished
    assert done.seeds == (42, 43, 44, 45)
    assert done.result_message_id == 999
    assert done.images == ("a.webp", "b.webp")
    assert done.finished_at == clock.now
    assert await storage.get_job(job.id) == done
    # A finished job cannot change state again (e.g. cancel racing completion).
    assert await storage.mark_cancelled(job.id) is None
    assert await storage.mark_failed(job.id, "late") is None
    assert await storage.mark_running(job.id) is None
    assert (await storage.get_job(job.id)).status == "done"


async def test_failed_and_cancelled(storage: Storage):
    a = await storage.create_job(new_job())
    b = await storage.create_job(new_job())
    failed = await storage.mark_failed(a.id, "The GPU ran out of memory.")
    assert failed is not None and failed.status == "failed"
    assert failed.error == "The GPU ran out of memory."
    cancelled = await storage.mark_cancelled(b.id)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert await storage.mark_done(b.id, [1], 5) is None
    assert await storage.mark_cancelled(12345) is None


async def test_running_can_restart(storage: Storage, clock: FakeClock):
    job = await storage.create_job(new_job())
    await storage.mark_running(job.id)
    clock.now += 60
    again = await storage.mark_running(job.id)
    assert again is not None and again.started_at == clock.now


async def test_status_and_result_messages(storage: Storage):
    job = await storage.create_job(new_job())
    assert (await storage.set_status_message(job.id, 700)).status_message_id == 700
    assert (await storage.job_by_status_message(700)).id == job.id
    await storage.set_result_message(job.id, 800)
    assert (await storage.job_by_message(800)).id == job.id
    assert await storage.job_by_message(700) is None
    # The result message was deleted: the job stays, the message lookup does not find it.
    cleared = await storage.set_result_message(job.id, None)
    assert cleared is not None and cleared.result_message_id is None
    assert await storage.job_by_message(800) is None
    assert await storage.get_job(job.id) is not None
    assert await storage.set_result_message(9999, 1) is None


async def test_interpreted_prompt_update(storage: Storage):
    job = await storage.create_job(new_job(interpreted_prompt=None))
    updated = await storage.set_interpreted_prompt(job.id, "a cat")
    assert updated.model_prompt == "a cat" and updated.prompt == job.prompt


async def test_unfinished_jobs_survive_a_crash(db_path: Path, clock: FakeClock):
    store = await Storage.open(db_path, clock=clock)
    queued = await store.create_job(new_job())
    running = await store.create_job(new_job(requester_id=2))
    done = await store.create_job(new_job(requester_id=3))
    await store.mark_running(running.id)
    await store.mark_running(done.id)
    await store.mark_done(done.id, [1, 2, 3, 4], 10)
    # No clean shutdown of the jobs: close as a kill would leave them (writes are committed).
    await store.close()

    reopened = await Storage.open(db_path, clock=clock)
    try:
        unfinished = await reopened.unfinished_jobs()
        assert [job.id for job in unfinished] == [queued.id, running.id]
        assert [job.status for job in unfinished] == ["queued", "running"]
        assert unfinished[0] == queued
    finally:
        await reopened.close()


async def test_writes_are_visible_to_another_connection_immediately(
    db_path: Path, storage: Storage
):
    # Every write commits when it returns: a second connection (or a restarted bot) sees it.
    job = await storage.create_job(new_job())
    await storage.mark_running(job.id)
    with sqlite3.connect(db_path) as other:
        row = other.execute("SELECT status FROM jobs WHERE id = ?", (job.id,)).fetchone()
    assert row == ("running",)


async def test_recent_jobs_order_and_limit(storage: Storage, clock: FakeClock):
    mine = []
    for i in range(5):
        clock.now += 1
        mine.append(await storage.create_job(new_job(prompt=f"p{i}")))
        await storage.create_job(new_job(requester_id=999))
    recent = await storage.recent_jobs(111, limit=3)
    assert [job.id for job in recent] == [mine[4].id, mine[3].id, mine[2].id]
    assert len(await storage.recent_jobs(111)) == 5
    assert await storage.recent_jobs(12345) == []


async def test_share_uniqueness(storage: Storage, clock: FakeClock):
    job = await storage.create_job(new_job())
    share = await storage.add_share(job.id, 2, guild_id=222, showcase_channel_id=50, shared_by=111)
    assert share is not None
    assert (share.job_id, share.image_index, share.shared_at) == (job.id, 2, clock.now)
    assert share.showcase_message_id is None
    # Second click on the same image: refused, the first share is untouched.
    again = await storage.add_share(job.id, 2, guild_id=222, showcase_channel_id=51, shared_by=7)
    assert again is None
    assert await storage.get_share(job.id, 2) == share
    # The whole set (index 0) and another image are separate shares.
    assert await storage.add_share(job.id, 0, guild_id=222, showcase_channel_id=50, shared_by=1)
    assert await storage.add_share(job.id, 1, guild_id=222, showcase_channel_id=50, shared_by=1)
    posted = await storage.set_share_message(job.id, 2, 6000)
    assert posted is not None and posted.showcase_message_id == 6000
    assert await storage.remove_share(job.id, 2)
    assert not await storage.remove_share(job.id, 2)
    assert await storage.get_share(job.id, 2) is None
    assert await storage.add_share(job.id, 2, guild_id=222, showcase_channel_id=50, shared_by=1)


async def test_share_needs_an_existing_job(storage: Storage):
    with pytest.raises(sqlite3.IntegrityError):
        await storage.add_share(9999, 0, guild_id=1, showcase_channel_id=2, shared_by=3)


async def test_guild_settings_defaults_and_updates(storage: Storage):
    defaults = await storage.guild_settings(77)
    assert defaults == GuildSettings(guild_id=77)
    assert defaults.safety_mode == "spoiler"
    assert defaults.allows_channel(123)

    updated = await storage.update_guild_settings(
        77, allowed_channel_ids=[1, 2], safety_mode="withhold", blocklist_add=["gore"]
    )
    assert updated.allowed_channel_ids == (1, 2)
    assert updated.safety_mode == "withhold"
    assert updated.blocklist_add == ("gore",)
    assert updated.allows_channel(2) and not updated.allows_channel(3)

    # A later change keeps the earlier ones.
    again = await storage.update_guild_settings(77, per_user_limit=5, showcase_channel_id=9)
    assert again == dataclasses.replace(updated, per_user_limit=5, showcase_channel_id=9)
    assert await storage.guild_settings(77) == again
    assert await storage.guild_settings(78) == GuildSettings(guild_id=78)
    # None resets to the default.
    reset = await storage.update_guild_settings(77, per_user_limit=None)
    assert reset.per_user_limit is None
    assert await storage.update_guild_settings(77) == reset


@pytest.mark.parametrize(
    "changes",
    [
        {"colour": "red"},
        {"safety_mode": "maybe"},
        {"per_user_limit": 0},
        {"guild_id": 5},
        {"blocklist_add": "gore"},
    ],
)
async def test_guild_settings_rejects_bad_changes(storage: Storage, changes):
    with pytest.raises(ValueError):
        await storage.update_guild_settings(77, **changes)
    assert await storage.guild_settings(77) == GuildSettings(guild_id=77)


async def test_migration_v1_to_v2_keeps_rows(db_path: Path, clock: FakeClock):
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as old:
        assert await migrate(old, target=1) == 1
        await old.execute(
            "INSERT INTO jobs (kind, requester_id, guild_id, channel_id, prompt, seed, seeds, "
            "width, height, steps, guidance, count, status, created_at, finished_at, "
            "result_message_id) VALUES ('imagine', 1, 2, 3, 'a red fox', 7, '[7, 8, 9, 10]', "
            "832, 1216, 4, 1.0, 4, 'done', 100.0, 104.5, 555)"
        )
        await old.execute(
            "INSERT INTO jobs (kind, requester_id, channel_id, prompt, seed, width, height, "
            "steps, guidance, count, created_at) "
            "VALUES ('imagine', 4, 5, 'queued before upgrade', 1, 1024, 1024, 4, 1.0, 4, 200.0)"
        )
        await old.execute(
            "INSERT INTO guild_settings (guild_id, allowed_channel_ids, safety_mode) "
            "VALUES (2, '[3]', 'off')"
        )
        assert await schema_version(old) == 1

    store = await Storage.open(db_path, clock=clock)
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        fox = await store.job_by_message(555)
        assert fox is not None
        assert (fox.prompt, fox.seed, fox.seeds, fox.width, fox.height) == (
            "a red fox",
            7,
            (7, 8, 9, 10),
            832,
            1216,
        )
        assert fox.status == "done" and fox.finished_at == 104.5 and fox.guild_id == 2
        # Columns added in v2 have their defaults.
        assert fox.interpreted_prompt is None and fox.model_prompt == "a red fox"
        assert fox.raw is False and fox.nsfw_channel is False and fox.images == ()
        assert fox.interaction_token is None and fox.locale is None and fox.strength is None
        # Columns added in v3 too.
        assert fox.flagged == () and fox.withheld == ()
        assert [job.prompt for job in await store.unfinished_jobs()] == ["queued before upgrade"]
        settings = await store.guild_settings(2)
        assert settings.allowed_channel_ids == (3,) and settings.safety_mode == "off"
        assert settings.showcase_channel_id is None and settings.per_user_limit is None
        # The v2 table works on the upgraded database.
        assert await store.add_share(fox.id, 0, guild_id=2, showcase_channel_id=9, shared_by=1)
        await store.set_share_message(fox.id, 0, 777)
        assert (await store.share_by_message(777)).job_id == fox.id
        assert await store.shared_job_ids() == {fox.id}
        done = await store.mark_done(fox.id, [7, 8, 9, 10], 555, flagged=[3, 1], withheld=[2])
        assert done is None  # already done: finished jobs do not move
        # New rows continue the id sequence.
        newer = await store.create_job(new_job())
        assert newer.id == 3
    finally:
        await store.close()


async def test_migration_v4_to_v5_keeps_posted_alone_images_apart_from_upscales(
    db_path: Path, clock: FakeClock
):
    """Before v5, kind 'upscale' meant "image i posted alone"; U1-U4 now upscale 2x."""
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as old:
        assert await migrate(old, target=4) == 4
        for kind, parent in (("imagine", "NULL"), ("upscale", "1")):
            await old.execute(
                "INSERT INTO jobs (kind, parent_job_id, parent_index, requester_id, channel_id, "
                "prompt, seed, width, height, steps, guidance, count, created_at) VALUES "
                f"('{kind}', {parent}, 2, 4, 5, 'a fox', 8, 1024, 1024, 4, 1.0, 1, 100.0)"
            )
    store = await Storage.open(db_path, clock=clock)
    try:
        grid, alone = await store.get_job(1), await store.get_job(2)
        assert grid.kind == "imagine" and not grid.derived and grid.zoom is None
        assert alone.kind == "single" and not alone.derived and alone.parent_job_id == 1
        zoom = await store.create_job(
            new_job(kind="zoom", parent_job_id=1, parent_index=2, zoom=1.5)
        )
        assert zoom.zoom == 1.5 and zoom.derived
    finally:
        await store.close()


async def test_migration_v5_to_v6_keeps_jobs_as_plain_pictures(db_path: Path, clock: FakeClock):
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as old:
        assert await migrate(old, target=5) == 5
        await old.execute(
            "INSERT INTO jobs (kind, requester_id, channel_id, prompt, seed, width, height, "
            "steps, guidance, count, created_at) "
            "VALUES ('imagine', 4, 5, 'a fox', 8, 1024, 1024, 4, 1.0, 4, 100.0)"
        )
    store = await Storage.open(db_path, clock=clock)
    try:
        assert (await store.get_job(1)).tile is False
        assert (await store.create_job(new_job(tile=True))).tile is True
    finally:
        await store.close()


async def test_migration_v8_to_v9_keeps_jobs_unstyled_and_servers_offering_all(
    db_path: Path, clock: FakeClock
):
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as old:
        assert await migrate(old, target=8) == 8
        await old.execute(
            "INSERT INTO jobs (kind, requester_id, channel_id, prompt, seed, width, height, "
            "steps, guidance, count, created_at) "
            "VALUES ('imagine', 4, 5, 'a fox', 8, 1024, 1024, 4, 1.0, 4, 100.0)"
        )
        await old.execute("INSERT INTO guild_settings (guild_id) VALUES (77)")
    store = await Storage.open(db_path, clock=clock)
    try:
        assert (await store.get_job(1)).style == ""
        assert (await store.create_job(new_job(style="ink"))).style == "ink"
        assert (await store.guild_settings(77)).allowed_styles == ()
        updated = await store.update_guild_settings(77, allowed_styles=["ink", "neon"])
        assert updated.allowed_styles == ("ink", "neon")
        assert (await store.guild_settings(77)).allowed_styles == ("ink", "neon")
    finally:
        await store.close()


async def test_migration_v9_to_v10_gives_old_jobs_no_captions_and_stores_new_ones(
    db_path: Path, clock: FakeClock
):
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as old:
        assert await migrate(old, target=9) == 9
        await old.execute(
            "INSERT INTO jobs (kind, requester_id, channel_id, prompt, seed, width, height, "
            "steps, guidance, count, created_at) "
            "VALUES ('imagine', 4, 5, 'a fox', 8, 1024, 1024, 4, 1.0, 4, 100.0)"
        )
    store = await Storage.open(db_path, clock=clock)
    try:
        assert (await store.get_job(1)).captions == ()
        job = await store.create_job(new_job(kind="describe", prompt="", count=1, uploaded=True))
        prompts = ["a red fox in the snow", "狐狸，雪地", "a fox, oil painting", "fox"]
        done = await store.mark_done(job.id, [], 321, captions=prompts)
        assert done is not None and done.captions == tuple(prompts)
        assert (await store.get_job(job.id)).captions == tuple(prompts)
        assert (await store.job_by_message(321)).kind == "describe"
    finally:
        await store.close()


async def test_reopening_is_idempotent(db_path: Path, clock: FakeClock):
    store = await Storage.open(db_path, clock=clock)
    job = await store.create_job(new_job())
    await store.close()
    for _ in range(2):
        store = await Storage.open(db_path, clock=clock)
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.get_job(job.id) == job
        await store.close()


async def test_failed_migration_rolls_back(tmp_path: Path):
    broken = (MIGRATIONS[0], "ALTER TABLE jobs ADD COLUMN extra TEXT; SELECT * FROM no_such;")
    async with aiosqlite.connect(tmp_path / "x.sqlite3", isolation_level=None) as db:
        with pytest.raises(sqlite3.OperationalError):
            await migrate(db, migrations=broken)
        # Step 1 committed, step 2 rolled back entirely (its ALTER included).
        assert await schema_version(db) == 1
        async with db.execute("PRAGMA table_info(jobs)") as cursor:
            columns = [row[1] for row in await cursor.fetchall()]
        assert "extra" not in columns


async def test_newer_schema_is_refused(db_path: Path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="newer"):
        await Storage.open(db_path)


def test_job_and_new_job_fields_match_the_table():
    # Every NewJob field is a Job field, so create_job can store all of them.
    job_fields = {f.name for f in dataclasses.fields(Job)}
    assert {f.name for f in dataclasses.fields(NewJob)} <= job_fields


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("storage", {"discord", "torch", "diffusers", "engine"}),
        ("queue", {"discord", "torch", "diffusers", "engine", "aiosqlite"}),
    ],
)
def test_modules_stay_free_of_discord_and_torch(module: str, forbidden: set[str]):
    source = Path(__file__).resolve().parents[2] / "lifecycle" / f"{module}.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & forbidden


KILLED_WRITER = """
import asyncio, os, signal, sys
from lifecycle.storage import NewJob, Storage

async def main(path):
    store = await Storage.open(path)
    queued = await store.create_job(NewJob("imagine", 1, 2, "queued", 1, 64, 64))
    running = await store.create_job(NewJob("imagine", 1, 2, "running", 2, 64, 64))
    await store.mark_running(running.id)
    done = await store.create_job(NewJob("imagine", 1, 2, "done", 3, 64, 64))
    await store.mark_done(done.id, [3, 4], 77)
    print(queued.id, running.id, done.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit: like kill -9

asyncio.run(main(sys.argv[1]))
"""


async def test_acknowledged_writes_survive_kill_9(db_path: Path):
    root = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_WRITER, str(db_path), cwd=root, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    queued_id, running_id, done_id = map(int, out.split())

    store = await Storage.open(db_path)
    try:
        assert [(j.id, j.status) for j in await store.unfinished_jobs()] == [
            (queued_id, "queued"),
            (running_id, "running"),
        ]
        done = await store.get_job(done_id)
        assert done is not None and done.status == "done" and done.seeds == (3, 4)
        assert (await store.job_by_message(77)).id == done_id
    finally:
        await store.close()


async def test_sources_follow_parents_back_to_the_first_imagine(storage: Storage):
    first = await storage.create_job(new_job())
    reroll = await storage.create_job(new_job(kind="reroll", parent_job_id=first.id))
    vary = await storage.create_job(
        new_job(kind="variation", parent_job_id=reroll.id, parent_index=2, strength=0.7)
    )
    assert [j.id for j in await storage.sources(vary.id)] == [reroll.id, first.id]
    assert [j.id for j in await storage.sources(vary.id, limit=1)] == [reroll.id]
    assert await storage.sources(first.id) == []
    assert await storage.sources(999) == []


async def test_presets_are_per_user_and_survive_a_reopen(db_path: Path, clock: FakeClock):
    store = await Storage.open(db_path, clock=clock)
    await store.set_preset(1, "suffix", "film grain")
    await store.set_preset(1, "option:film", "kodak portra 400")
    await store.set_preset(1, "option:film", "ilford hp5")  # set again: replaced
    await store.set_preset(1, "aspect_ratio", "16:9")
    await store.set_preset(2, "negative", "blurry")
    with pytest.raises(ValueError):
        await store.set_preset(1, "seed", "4")
    await store.close()
    store = await Storage.open(db_path, clock=clock)
    try:
        mine = await store.presets(1)
        assert (mine.suffix, mine.negative, mine.aspect_ratio) == ("film grain", "", "16:9")
        assert mine.options == (("film", "ilford hp5"),)
        assert (await store.presets(2)).negative == "blurry" and not (
            await store.presets(2)
        ).options
        assert (await store.presets(3)).empty
        await store.set_preset(1, "suffix", None)  # no value: removed
        assert (await store.presets(1)).suffix == ""
        assert await store.reset_presets(1) == 2
        assert (await store.presets(1)).empty and not (await store.presets(2)).empty
    finally:
        await store.close()
