"""PIL images -> bytes that fit Discord's upload limits. Pure: no torch, safe in any thread.

Default: PNG at zlib level 1. Measured (bench/encode_bench.py, BENCHMARKS.md) it is ~20-25 %
faster than level 6 for 5-10 % more bytes; a 1024x1024 result stays around 2-3 MiB, far under
the 10 MiB per-file limit, and CPU, not upload size, is what keeps encoding behind a busy GPU.
Only a file (or a set) over the limit goes down the ladder: PNG level 9, lossless WebP, then
JPEG at falling quality; a format change is reported in ``EncodedImage.note`` for the message.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_TOTAL_LIMIT = 25 * 2**20 - 512 * 1024
"""Discord caps a whole request body at 25 MiB; keep room for the JSON payload and headers."""

DEFAULT_PNG_LEVEL = 1
"""zlib level of the first (normally only) encoding; see the module docstring for why 1."""

_JPEG_QUALITIES = (92, 85, 75, 65, 50, 35, 20)


@dataclass(frozen=True)
class EncodedImage:
    """One encoded file; ``note`` says which fallback was used to make it fit, if any."""

    filename: str
    data: bytes
    format: str
    note: str | None = None


def _describe_limit(limit_bytes: int) -> str:
    if limit_bytes >= 2**20 and limit_bytes % 2**20 == 0:
        return f"{limit_bytes // 2**20} MiB"
    if limit_bytes >= 2**20:
        return f"{limit_bytes / 2**20:.1f} MiB"
    return f"{max(1, limit_bytes // 1024)} KiB"


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _fallbacks(image: Image.Image, stem: str, index: int) -> Iterator[EncodedImage]:
    """Encodings after the default one, from the best-looking to the smallest."""
    yield EncodedImage(f"{stem}_{index}.png", _encode(image, "PNG", compress_level=9), "png")
    yield EncodedImage(
        f"{stem}_{index}.webp", _encode(image, "WEBP", lossless=True, method=4), "webp"
    )
    for quality in _JPEG_QUALITIES:
        yield EncodedImage(
            f"{stem}_{index}.jpg", _encode(image, "JPEG", quality=quality, optimize=True), "jpeg"
        )


def _with_note(encoded: EncodedImage, limit_text: str) -> EncodedImage:
    if encoded.format == "png":
        return encoded  # still lossless PNG, just compressed harder: nothing for the user to know
    name = "WebP (lossless)" if encoded.format == "webp" else "JPEG"
    note = f"saved as {name} to fit Discord's {limit_text} limit"
    return EncodedImage(encoded.filename, encoded.data, encoded.format, note)


def _smaller(
    image: Image.Image, current: EncodedImage, stem: str, index: int, limit_text: str
) -> EncodedImage | None:
    """The first fallback smaller than ``current``; None when no encoding is smaller."""
    for candidate in _fallbacks(image, stem, index):
        if len(candidate.data) < len(current.data):
            return _with_note(candidate, limit_text)
    return None


def encode_one(
    image: Image.Image,
    limit_bytes: int,
    *,
    stem: str = "imagine",
    index: int = 1,
    png_level: int = DEFAULT_PNG_LEVEL,
) -> EncodedImage:
    """Encode one image as ``{stem}_{index}.png``, stepping down the ladder until it fits.

    Thread-safe and independent of the other images, so a set can be encoded in parallel.
    When nothing fits, the smallest encoding tried is returned (the caller sees it is too big).
    """
    encoded = EncodedImage(
        f"{stem}_{index}.png", _encode(image, "PNG", compress_level=png_level), "png"
    )
    if len(encoded.data) <= limit_bytes:
        return encoded
    limit_text = _describe_limit(limit_bytes)
    for candidate in _fallbacks(image, stem, index):
        if len(candidate.data) < len(encoded.data):
            encoded = _with_note(candidate, limit_text)
        if len(encoded.data) <= limit_bytes:
            break
    return encoded


def fit_total(
    images: Sequence[Image.Image],
    encoded: Sequence[EncodedImage],
    total_limit_bytes: int = DEFAULT_TOTAL_LIMIT,
    *,
    stem: str = "imagine",
    indexes: Sequence[int] | None = None,
) -> list[EncodedImage]:
    """Shrink the largest files of a set until the whole set fits ``total_limit_bytes``.

    ``indexes`` are the files' image numbers (default 1, 2, ...).
    """
    out = list(encoded)
    numbers = list(indexes) if indexes is not None else list(range(1, len(out) + 1))
    exhausted: set[int] = set()
    total_text = _describe_limit(total_limit_bytes)
    while sum(len(e.data) for e in out) > total_limit_bytes:
        candidates = [i for i in range(len(out)) if i not in exhausted]
        if not candidates:
            break
        largest = max(candidates, key=lambda i: len(out[i].data))
        smaller = _smaller(images[largest], out[largest], stem, numbers[largest], total_text)
        if smaller is None:
            exhausted.add(largest)
        else:
            out[largest] = smaller
    return out


def encode_images(
    images: Sequence[Image.Image],
    limit_bytes: int,
    total_limit_bytes: int = DEFAULT_TOTAL_LIMIT,
    stem: str = "imagine",
    *,
    map_fn: Callable[..., Iterable[EncodedImage]] = map,
) -> list[EncodedImage]:
    """Encode images as PNG, falling back to smaller formats until each and all fit.

    Each image is PNG (``{stem}_{i}.png``, i from 1) at ``DEFAULT_PNG_LEVEL``. A file over
    ``limit_bytes`` is retried as PNG level 9, then lossless WebP, then JPEG at falling quality
    until it fits; if the sum is over ``total_limit_bytes``, the largest files are shrunk the
    same way until the set fits.

    Args:
        images: PIL images, in order.
        limit_bytes: the per-file limit (Discord's ``attachment_size_limit``).
        total_limit_bytes: the limit for all files of one message together.
        stem: file name prefix.
        map_fn: how to run ``encode_one`` over the images (``map``; or a thread pool's ``map``
            to encode in parallel).

    Returns:
        One ``EncodedImage`` per input image, in order. The smallest encoding is used when
        nothing fits (the caller then sees files over the limit).
    """

    def one(pair: tuple[int, Image.Image]) -> EncodedImage:
        index, image = pair
        return encode_one(image, limit_bytes, stem=stem, index=index)

    encoded = list(map_fn(one, list(enumerate(images, start=1))))
    if sum(len(e.data) for e in encoded) > total_limit_bytes:
        encoded = fit_total(images, encoded, total_limit_bytes, stem=stem)
    for item in encoded:
        if item.note:
            log.info("%s: %s (%d bytes)", item.filename, item.note, len(item.data))
    return encoded
