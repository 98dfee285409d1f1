"""PIL images -> bytes that fit Discord's upload limits. Pure: no torch, safe in any thread."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_TOTAL_LIMIT = 25 * 2**20 - 512 * 1024
"""Discord caps a whole request body at 25 MiB; keep room for the JSON payload and headers."""

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


def _attempts(image: Image.Image, stem: str, index: int):
    """Yield (EncodedImage) from the best-looking to the smallest encoding."""
    yield EncodedImage(f"{stem}_{index}.png", _encode(image, "PNG", compress_level=9), "png")
    yield EncodedImage(
        f"{stem}_{index}.webp", _encode(image, "WEBP", lossless=True, method=4), "webp"
    )
    for quality in _JPEG_QUALITIES:
        yield EncodedImage(
            f"{stem}_{index}.jpg", _encode(image, "JPEG", quality=quality, optimize=True), "jpeg"
        )


def _note(encoded: EncodedImage, limit_text: str) -> str | None:
    if encoded.format == "png":
        return None  # still lossless PNG, just compressed harder: nothing for the user to know
    if encoded.format == "webp":
        return f"saved as WebP to fit Discord's {limit_text} limit"
    return f"saved as JPEG to fit Discord's {limit_text} limit"


def encode_images(
    images: Sequence[Image.Image],
    limit_bytes: int,
    total_limit_bytes: int = DEFAULT_TOTAL_LIMIT,
    stem: str = "imagine",
) -> list[EncodedImage]:
    """Encode images as PNG, falling back to smaller formats until each and all fit.

    Each image is PNG (``{stem}_{i}.png``, i from 1). If a file is over ``limit_bytes``, or the
    sum is over ``total_limit_bytes``, the largest offenders are retried as PNG level 9, then
    lossless WebP, then JPEG at falling quality until they fit.

    Args:
        images: PIL images, in order.
        limit_bytes: the per-file limit (Discord's ``attachment_size_limit``).
        total_limit_bytes: the limit for all files of one message together.
        stem: file name prefix.

    Returns:
        One ``EncodedImage`` per input image, in order. The last JPEG quality is used when
        nothing fits (the caller then sees files over the limit).
    """
    encoded = [
        EncodedImage(
            f"{stem}_{i}.png", _encode(image, "PNG", compress_level=6, optimize=False), "png"
        )
        for i, image in enumerate(images, start=1)
    ]
    # Which fallback each image is on; a generator lets us step each one down independently.
    attempts = [_attempts(image, stem, i) for i, image in enumerate(images, start=1)]
    exhausted = [False] * len(images)

    def shrink(index: int, limit_text: str) -> bool:
        for candidate in attempts[index]:
            if len(candidate.data) < len(encoded[index].data) or candidate.format != "png":
                encoded[index] = EncodedImage(
                    candidate.filename,
                    candidate.data,
                    candidate.format,
                    _note(candidate, limit_text),
                )
                return True
        exhausted[index] = True
        return False

    per_file = _describe_limit(limit_bytes)
    for index in range(len(encoded)):
        while len(encoded[index].data) > limit_bytes and shrink(index, per_file):
            pass

    total_text = _describe_limit(total_limit_bytes)
    while sum(len(e.data) for e in encoded) > total_limit_bytes:
        candidates = [i for i in range(len(encoded)) if not exhausted[i]]
        if not candidates:
            break
        largest = max(candidates, key=lambda i: len(encoded[i].data))
        shrink(largest, total_text)

    for item in encoded:
        if item.note:
            log.info("%s: %s (%d bytes)", item.filename, item.note, len(item.data))
    return encoded
