"""ImageFiles on real files under tmp_path: layout, atomic writes, purging and retention."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lifecycle.image_files import ImageFiles, ImagesPurged, SweepReport, run_retention

NOW = 1_700_000_000.0
DAY = 86400.0


def blobs(job_id: int, count: int = 4, size: int = 100) -> list[tuple[str, bytes]]:
    return [(f"imagine_{job_id}_{i}.png", bytes([i]) * size) for i in range(1, count + 1)]


def age(folder: Path, when: float) -> None:
    """Make a set look written at ``when`` (its files and the folder itself)."""
    for path in folder.iterdir():
        os.utime(path, (when, when))
    os.utime(folder, (when, when))


async def stored(files: ImageFiles, job_id: int, when: float, size: int = 100) -> None:
    await files.save(job_id, blobs(job_id, size=size))
    age(files.root / str(job_id), when)


@pytest.fixture
def files(tmp_path: Path) -> ImageFiles:
    return ImageFiles(tmp_path / "images")


async def test_save_load_round_trip(files: ImageFiles) -> None:
    await files.save(7, blobs(7))
    assert await files.load(7, [1, 2, 3, 4]) == blobs(7)
    assert await files.load(7, [3, 1]) == [blobs(7)[2], blobs(7)[0]]
    assert await files.has(7, 4) and not await files.has(7, 5) and not await files.has(8, 1)
    assert sorted(os.listdir(files.root / "7")) == [f"{i}-imagine_7_{i}.png" for i in (1, 2, 3, 4)]


async def test_save_twice_replaces_the_set(files: ImageFiles) -> None:
    await files.save(7, blobs(7))
    await files.save(7, [("SPOILER_imagine_7_1.webp", b"new")])
    assert await files.load(7, [1]) == [("SPOILER_imagine_7_1.webp", b"new")]
    assert not await files.has(7, 2)
    assert os.listdir(files.root / "7") == ["1-SPOILER_imagine_7_1.webp"]


async def test_unsafe_names_cannot_leave_the_folder(files: ImageFiles) -> None:
    await files.save(3, [("../../evil name.png", b"x")])
    assert await files.load(3, [1]) == [("evil_name.png", b"x")]
    assert os.listdir(files.root) == ["3"]


async def test_old_layout_still_loads(files: ImageFiles) -> None:
    folder = files.root / "5"
    folder.mkdir(parents=True)
    (folder / "1").write_bytes(b"one")
    (folder / "1.name").write_text("SPOILER_imagine_5_1.png")
    (folder / "2").write_bytes(b"two")  # written before names were kept
    assert await files.load(5, [1, 2]) == [
        ("SPOILER_imagine_5_1.png", b"one"),
        ("imagine_5_2.png", b"two"),
    ]
    assert await files.has(5, 2)
    await files.save(5, [("imagine_5_1.png", b"new")])  # a re-save leaves one layout
    assert os.listdir(folder) == ["1-imagine_5_1.png"]


async def test_crash_before_rename_keeps_the_old_file(
    files: ImageFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    await files.save(9, blobs(9))

    def crash(src: object, dst: object) -> None:
        assert Path(str(src)).read_bytes() == b"half"  # the temp file was written in full
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        await files.save(9, [("imagine_9_1.png", b"half")])
    monkeypatch.undo()
    assert await files.load(9, [1, 2, 3, 4]) == blobs(9)
    assert not [n for n in os.listdir(files.root / "9") if n.startswith(".")]


async def test_a_left_over_temp_file_never_loads(files: ImageFiles) -> None:
    folder = files.root / "4"
    folder.mkdir(parents=True)
    (folder / ".1-imagine_4_1.png.abcd1234.tmp").write_bytes(b"trunc")  # killed mid-write
    assert not await files.has(4, 1)
    with pytest.raises(ImagesPurged):
        await files.load(4, [1])


async def test_missing_set_or_image_raises_images_purged(files: ImageFiles) -> None:
    with pytest.raises(ImagesPurged) as missing_set:
        await files.load(1, [1])
    assert missing_set.value.job_id == 1 and missing_set.value.missing == (1,)
    await files.save(2, blobs(2, count=2))
    with pytest.raises(FileNotFoundError) as missing_image:  # what today's callers catch
        await files.load(2, [1, 3, 4])
    assert isinstance(missing_image.value, ImagesPurged)
    assert missing_image.value.missing == (3, 4)


async def test_purge(files: ImageFiles) -> None:
    await files.save(6, blobs(6))
    assert await files.purge(6) is True
    assert await files.purge(6) is False
    assert os.listdir(files.root) == []
    with pytest.raises(ImagesPurged):
        await files.load(6, [1])


async def test_sweep_by_age_keeps_protected_sets(files: ImageFiles) -> None:
    await stored(files, 1, NOW - 40 * DAY)
    await stored(files, 2, NOW - 40 * DAY)  # shared
    await stored(files, 3, NOW - 1 * DAY)
    report = await files.sweep(max_age_s=30 * DAY, max_total_bytes=None, protected={2}, now=NOW)
    assert report == SweepReport(removed=(1,), bytes_freed=400, bytes_kept=800)
    assert sorted(os.listdir(files.root)) == ["2", "3"]
    assert await files.load(2, [1]) == blobs(2)[:1]


async def test_sweep_by_size_removes_unprotected_oldest_first(files: ImageFiles) -> None:
    for job_id, days in [(1, 5), (2, 4), (3, 3), (4, 2), (5, 1)]:
        await stored(files, job_id, NOW - days * DAY)  # 400 bytes each; 1 and 3 shared
    report = await files.sweep(max_age_s=None, max_total_bytes=1300, protected={1, 3}, now=NOW)
    assert report.removed == (2, 4) and report.protected_removed == ()
    assert report.bytes_kept == 1200
    assert sorted(os.listdir(files.root)) == ["1", "3", "5"]

    report = await files.sweep(max_age_s=None, max_total_bytes=500, protected={1, 3}, now=NOW)
    assert report.removed == (5, 1) and report.protected_removed == (1,)
    assert (report.bytes_freed, report.bytes_kept) == (800, 400)
    assert os.listdir(files.root) == ["3"]


async def test_sweep_age_then_size_and_no_limits(files: ImageFiles) -> None:
    await stored(files, 1, NOW - 50 * DAY)
    await stored(files, 2, NOW - 50 * DAY)
    await stored(files, 3, NOW - 2 * DAY)
    unlimited = await files.sweep(max_age_s=None, max_total_bytes=None, protected=(), now=NOW)
    assert unlimited == SweepReport(bytes_kept=1200)
    report = await files.sweep(max_age_s=30 * DAY, max_total_bytes=500, protected=[2], now=NOW)
    assert report.removed == (1, 3) and report.protected_removed == ()  # the younger, unshared
    report = await files.sweep(max_age_s=30 * DAY, max_total_bytes=300, protected=[2], now=NOW)
    assert report == SweepReport(removed=(2,), protected_removed=(2,), bytes_freed=400)
    assert os.listdir(files.root) == []


async def test_sweep_removes_stale_temp_files_only(files: ImageFiles) -> None:
    await stored(files, 1, NOW - DAY)
    folder = files.root / "1"
    stale = folder / ".1-imagine_1_1.png.00000000.tmp"
    fresh = folder / ".2-imagine_1_2.png.11111111.tmp"
    stale.write_bytes(b"x" * 50)
    fresh.write_bytes(b"y" * 30)
    os.utime(stale, (NOW - 2 * 3600, NOW - 2 * 3600))
    os.utime(fresh, (NOW - 60, NOW - 60))  # maybe still being written: left alone
    report = await files.sweep(max_age_s=30 * DAY, max_total_bytes=None, protected=(), now=NOW)
    assert report == SweepReport(bytes_freed=50, bytes_kept=430)
    assert not stale.exists() and fresh.exists()
    old_trash, new_trash = files.root / ".trash-8-aaaa", files.root / ".trash-9-bbbb"
    for trash, when in [(old_trash, NOW - 2 * 3600), (new_trash, NOW - 60)]:
        (trash / "sub").mkdir(parents=True)
        (trash / "sub" / "1-x.png").write_bytes(b"z")
        os.utime(trash, (when, when))
    await files.sweep(max_age_s=None, max_total_bytes=None, protected=(), now=NOW)
    assert not old_trash.exists() and new_trash.exists()  # a purge may still be deleting it
    # removing the temp file changed the folder's time, not the set's age
    report = await files.sweep(max_age_s=0.5 * DAY, max_total_bytes=None, protected=(), now=NOW)
    assert report.removed == (1,)


async def test_sweep_survives_junk(
    files: ImageFiles, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    await stored(files, 1, NOW - 40 * DAY)
    await stored(files, 2, NOW - 40 * DAY)
    root = files.root
    (root / "notes.txt").write_text("keep me")
    (root / "abc").mkdir()
    (root / "12").write_text("a file where a set folder should be")
    (root / "13").symlink_to(root / "nowhere")
    (root / "14").mkdir()  # an empty set
    os.utime(root / "14", (NOW - 40 * DAY, NOW - 40 * DAY))
    (root / "1" / "stray-dir").mkdir()
    (root / "1" / "link").symlink_to("/etc/passwd")

    real_scandir = os.scandir

    def flaky_scandir(path: object = ".") -> object:
        if str(path) == str(root / "2"):
            raise PermissionError("unreadable")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", flaky_scandir)
    with caplog.at_level(logging.WARNING, logger="lifecycle.image_files"):
        report = await files.sweep(max_age_s=30 * DAY, max_total_bytes=None, protected=(), now=NOW)
    monkeypatch.undo()
    assert report.removed == (1, 14)
    assert "unreadable" in caplog.text
    assert sorted(os.listdir(root)) == ["12", "13", "2", "abc", "notes.txt"]
    assert Path("/etc/passwd").exists()


async def test_sweep_and_save_run_off_the_event_loop(
    files: ImageFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    real_sweep, real_save = files._sweep, files._save

    def sweep(*args: object) -> SweepReport:
        threads.append(threading.current_thread())
        return real_sweep(*args)

    def save(*args: object) -> None:
        threads.append(threading.current_thread())
        real_save(*args)

    monkeypatch.setattr(files, "_sweep", sweep)
    monkeypatch.setattr(files, "_save", save)
    await files.save(1, blobs(1))
    await files.sweep(max_age_s=1.0, max_total_bytes=0, protected=(), now=time.time())
    assert len(threads) == 2 and threading.main_thread() not in threads


async def test_run_retention_sweeps_repeatedly_and_survives_errors(
    files: ImageFiles, caplog: pytest.LogCaptureFixture
) -> None:
    await stored(files, 1, time.time() - 40 * DAY)
    await stored(files, 2, time.time() - 40 * DAY)
    settings = SimpleNamespace(retention_max_age_s=30 * DAY, retention_max_bytes=None)
    calls = 0
    reports: list[SweepReport] = []
    done = asyncio.Event()

    async def shared() -> set[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("storage hiccup")
        if calls >= 3:
            done.set()
        return {2}

    async def on_sweep(report: SweepReport) -> None:
        reports.append(report)

    with caplog.at_level(logging.INFO, logger="lifecycle.image_files"):
        task = asyncio.create_task(
            run_retention(files, settings, shared, interval_s=0.01, on_sweep=on_sweep)  # type: ignore[arg-type]
        )
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "storage hiccup" in caplog.text  # logged with its traceback, loop kept going
    assert [r.removed for r in reports] == [(1,)]  # only sweeps that removed something
    assert "retention: removed 1 sets (0 shared)" in caplog.text
    assert os.listdir(files.root) == ["2"]


def test_retention_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.settings import BotSettings

    monkeypatch.chdir(tmp_path)  # no .env
    for key in ("IMAGINE_RETENTION_DAYS", "IMAGINE_RETENTION_MAX_GB", "IMAGINE_GENERATION_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)

    defaults = BotSettings(discord_token="t")
    assert defaults.retention_max_age_s == 30 * DAY
    assert defaults.retention_max_bytes == 20 * 10**9
    assert defaults.generation_timeout == 300
    off = BotSettings(discord_token="t", retention_days=0, retention_max_gb=0)
    assert off.retention_max_age_s is None and off.retention_max_bytes is None
    with pytest.raises(ValueError):
        BotSettings(discord_token="t", generation_timeout=0.5)
    with pytest.raises(ValueError):
        BotSettings(discord_token="t", retention_days=-1)
