"""Pixels -> bytes that fit Discord's upload limits. Pure: no torch, safe in any thread.

Default: lossless PNG written by fpng (https://github.com/richgel999/fpng, via the ``fpng``
wheel), ~6 ms per 1024x1024 image on one core, ~30x faster than Pillow's zlib level 1 for
~5 % more bytes (bench/encode_bench.py, BENCHMARKS.md); Pillow level 1 is the fallback when
fpng cannot be imported. Operators who prefer smaller files choose lossy WebP or JPEG
(``IMAGINE_IMAGE_FORMAT``). Only a file (or a set) over the limit goes down its format's
ladder: for PNG, Pillow level 9, lossless WebP, then JPEG at falling quality; for WebP and
JPEG, falling quality. What the user should know (a format change, a lower quality) is in
``EncodedImage.note`` for the message.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

try:  # a compiled wheel: where it is missing or broken, Pillow writes the PNGs
    import fpng as _fpng
except Exception:  # pragma: no cover - depends on the platform's wheels
    _fpng = None

ImageFormat = Literal["png", "webp", "jpeg"]
IMAGE_FORMATS: tuple[str, ...] = ("png", "webp", "jpeg")

DEFAULT_TOTAL_LIMIT = 25 * 2**20 - 512 * 1024
"""Discord caps a whole request body at 25 MiB; keep room for the JSON payload and headers."""

FALLBACK_PNG_LEVEL = 1
"""zlib level of Pillow's PNG when fpng is not available (level 1: ~20 % less CPU than 6)."""

WEBP_QUALITIES = (90, 80, 70, 60, 50, 40, 30)
WEBP_METHOD = 0
"""libwebp's effort: 0 is ~2x faster than 4 for the same size at quality 90 (BENCHMARKS.md)."""
JPEG_QUALITIES = (92, 85, 75, 65, 50, 35, 20)
_EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}

Pixels = np.ndarray | Image.Image
"""An RGB image: a uint8 (height, width, 3) array (what the engine makes) or a PIL image."""


@dataclass(frozen=True)
class EncodedImage:
    """One encoded file; ``note`` says which fallback was used to make it fit, if any."""

    filename: str
    data: bytes
    format: str
    note: str | None = None


def png_encoder() -> str:
    """Which library writes the default PNGs: ``fpng`` or ``pillow``."""
    return "fpng" if _fpng is not None else "pillow"


def as_array(image: Pixels) -> np.ndarray:
    """A C-contiguous uint8 (height, width, 3) array of ``image`` (no copy when it is one)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"expected uint8 (height, width, 3) pixels, got {image.dtype} {image.shape}"
        )
    return np.ascontiguousarray(image)


def as_pil(image: Pixels) -> Image.Image:
    """``image`` as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    return Image.fromarray(as_array(image))


def _describe_limit(limit_bytes: int) -> str:
    if limit_bytes >= 2**20 and limit_bytes % 2**20 == 0:
        return f"{limit_bytes // 2**20} MiB"
    if limit_bytes >= 2**20:
        return f"{limit_bytes / 2**20:.1f} MiB"
    return f"{max(1, limit_bytes // 1024)} KiB"


def _pillow(image: Pixels, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    as_pil(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def encode_png(image: Pixels) -> bytes:
    """Lossless PNG, as fast as this machine can write it (fpng, else Pillow level 1)."""
    if _fpng is not None:
        try:
            return _fpng.from_ndarray(as_array(image))
        except Exception:  # pragma: no cover - fpng refused the input: Pillow never does
            log.exception("fpng failed; writing this PNG with Pillow")
    return _pillow(image, "PNG", compress_level=FALLBACK_PNG_LEVEL)


def _file(stem: str, index: int, fmt: str, data: bytes, note: str | None = None) -> EncodedImage:
    return EncodedImage(f"{stem}_{index}.{_EXTENSIONS[fmt]}", data, fmt, note)


def _first(image: Pixels, fmt: str, stem: str, index: int) -> EncodedImage:
    """The normal encoding of ``image`` in the operator's format."""
    if fmt == "png":
        return _file(stem, index, "png", encode_png(image))
    if fmt == "webp":
        data = _pillow(image, "WEBP", quality=WEBP_QUALITIES[0], method=WEBP_METHOD)
        return _file(stem, index, "webp", data)
    return _file(stem, index, "jpeg", _pillow(image, "JPEG", quality=JPEG_QUALITIES[0]))


def _fallbacks(
    image: Pixels, fmt: str, stem: str, index: int, limit_text: str
) -> Iterator[EncodedImage]:
    """Encodings after the normal one, from the best-looking to the smallest."""
    lower = f"saved at a lower quality to fit Discord's {limit_text} limit"
    if fmt == "png":
        # Still lossless PNG, just compressed harder: nothing for the user to know.
        yield _file(stem, index, "png", _pillow(image, "PNG", compress_level=9))
        webp = _pillow(image, "WEBP", lossless=True, method=4)
        yield _file(
            stem,
            index,
            "webp",
            webp,
            f"saved as WebP (lossless) to fit Discord's {limit_text} limit",
        )
        as_jpeg = f"saved as JPEG to fit Discord's {limit_text} limit"
        for quality in JPEG_QUALITIES:
            data = _pillow(image, "JPEG", quality=quality, optimize=True)
            yield _file(stem, index, "jpeg", data, as_jpeg)
    elif fmt == "webp":
        for quality in WEBP_QUALITIES[1:]:
            yield _file(
                stem,
                index,
                "webp",
                _pillow(image, "WEBP", quality=quality, method=WEBP_METHOD),
                lower,
            )
    else:
        for quality in JPEG_QUALITIES[1:]:
            data = _pillow(image, "JPEG", quality=quality, optimize=True)
            yield _file(stem, index, "jpeg", data, lower)


def _smaller(
    image: Pixels, current: EncodedImage, fmt: str, stem: str, index: int, limit_text: str
) -> EncodedImage | None:
    """The first fallback smaller than ``current``; None when no encoding is smaller."""
    for candidate in _fallbacks(image, fmt, stem, index, limit_text):
        if len(candidate.data) < len(current.data):
            return candidate
    return None


def _check_format(fmt: str) -> None:
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {fmt!r}: one of {', '.join(IMAGE_FORMATS)}")


def encode_one(
    image: Pixels,
    limit_bytes: int,
    *,
    stem: str = "imagine",
    index: int = 1,
    image_format: str = "png",
) -> EncodedImage:
    """Encode one image as ``{stem}_{index}.{ext}``, stepping down the ladder until it fits.

    Thread-safe and independent of the other images, so a set can be encoded in parallel.
    When nothing fits, the smallest encoding tried is returned (the caller sees it is too big).
    """
    _check_format(image_format)
    encoded = _first(image, image_format, stem, index)
    if len(encoded.data) <= limit_bytes:
        return encoded
    limit_text = _describe_limit(limit_bytes)
    for candidate in _fallbacks(image, image_format, stem, index, limit_text):
        if len(candidate.data) < len(encoded.data):
            encoded = candidate
        if len(encoded.data) <= limit_bytes:
            break
    return encoded


def fit_total(
    images: Sequence[Pixels],
    encoded: Sequence[EncodedImage],
    total_limit_bytes: int = DEFAULT_TOTAL_LIMIT,
    *,
    stem: str = "imagine",
    indexes: Sequence[int] | None = None,
    image_format: str = "png",
) -> list[EncodedImage]:
    """Shrink the largest files of a set until the whole set fits ``total_limit_bytes``.

    ``indexes`` are the files' image numbers (default 1, 2, ...).
    """
    _check_format(image_format)
    out = list(encoded)
    numbers = list(indexes) if indexes is not None else list(range(1, len(out) + 1))
    exhausted: set[int] = set()
    total_text = _describe_limit(total_limit_bytes)
    while sum(len(e.data) for e in out) > total_limit_bytes:
        candidates = [i for i in range(len(out)) if i not in exhausted]
        if not candidates:
            break
        largest = max(candidates, key=lambda i: len(out[i].data))
        smaller = _smaller(
            images[largest], out[largest], image_format, stem, numbers[largest], total_text
        )
        if smaller is None:
            exhausted.add(largest)
        else:
            out[largest] = smaller
    return out


def encode_images(
    images: Sequence[Pixels],
    limit_bytes: int,
    total_limit_bytes: int = DEFAULT_TOTAL_LIMIT,
    stem: str = "imagine",
    *,
    image_format: str = "png",
    map_fn: Callable[..., Iterable[EncodedImage]] = map,
) -> list[EncodedImage]:
    """Encode images in ``image_format``, falling back to smaller files until each and all fit.

    Each image is ``{stem}_{i}.{ext}`` (i from 1). A file over ``limit_bytes`` goes down its
    format's ladder until it fits; if the sum is over ``total_limit_bytes``, the largest files
    are shrunk the same way until the set fits.

    Args:
        images: uint8 (height, width, 3) arrays or PIL images, in order.
        limit_bytes: the per-file limit (Discord's ``attachment_size_limit``).
        total_limit_bytes: the limit for all files of one message together.
        stem: file name prefix.
        image_format: ``png`` (lossless, default), ``webp`` or ``jpeg`` (lossy, smaller).
        map_fn: how to run ``encode_one`` over the images (``map``; or a thread pool's ``map``
            to encode in parallel).

    Returns:
        One ``EncodedImage`` per input image, in order. The smallest encoding is used when
        nothing fits (the caller then sees files over the limit).
    """

    def one(pair: tuple[int, Pixels]) -> EncodedImage:
        index, image = pair
        return encode_one(image, limit_bytes, stem=stem, index=index, image_format=image_format)

    encoded = list(map_fn(one, list(enumerate(images, start=1))))
    if sum(len(e.data) for e in encoded) > total_limit_bytes:
        encoded = fit_total(
            images, encoded, total_limit_bytes, stem=stem, image_format=image_format
        )
    for item in encoded:
        if item.note:
            log.info("%s: %s (%d bytes)", item.filename, item.note, len(item.data))
    return encoded
