"""Small WebP thumbnails of shared images, made once and kept on disk.

Layout: ``<root>/<job_id>/<index>.webp`` (index 1-based, as in the job's set). A thumbnail is
made the first time it is asked for (or when a set is shared) and then only read; removing a
job's thumbnails removes the folder.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import secrets
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

#: Longest side of a thumbnail, in pixels: sharp in a two-column phone grid at 2x density.
THUMBNAIL_SIZE = 384
WEBP_QUALITY = 80


def make_thumbnail(data: bytes, size: int = THUMBNAIL_SIZE) -> bytes:
    """A WebP thumbnail (longest side at most ``size``, aspect kept) of encoded image ``data``.

    Raises:
        PIL.UnidentifiedImageError: ``data`` is not an image Pillow can read.
    """
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="WEBP", quality=WEBP_QUALITY, method=4)
    return out.getvalue()


class ThumbnailStore:
    """Keeps one WebP thumbnail per shared image under ``root``; file work runs off the loop."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._making: dict[tuple[int, int], asyncio.Future[bytes]] = {}

    def _path(self, job_id: int, index: int) -> Path:
        return self.root / str(int(job_id)) / f"{int(index)}.webp"

    async def get(self, job_id: int, index: int, source: Callable[[], Awaitable[bytes]]) -> bytes:
        """The thumbnail of image ``index`` of ``job_id``, made from ``source()`` if missing.

        Concurrent requests for a missing thumbnail make it once.

        Raises:
            FileNotFoundError: ``source`` raised it (the image is no longer stored).
        """
        path = self._path(job_id, index)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            pass
        key = (int(job_id), int(index))
        pending = self._making.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._making[key] = future
        try:
            thumbnail = await asyncio.to_thread(make_thumbnail, await source())
            await asyncio.to_thread(_write_atomically, path, thumbnail)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(thumbnail)
            return thumbnail
        finally:
            del self._making[key]

    async def purge(self, job_id: int) -> None:
        """Remove every thumbnail of ``job_id`` (its set was deleted or unshared)."""
        folder = self.root / str(int(job_id))
        await asyncio.to_thread(shutil.rmtree, folder, True)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "xb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
