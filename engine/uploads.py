"""Pictures users upload as image prompts: checked, then fitted to an SDXL size.

Pure functions of bytes (PIL only, no torch), so the bot runs them in a worker thread before a
job exists. Every refusal is an ``InvalidRequest`` whose message says what to change.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from engine.errors import InvalidRequest
from engine.requests import aspect_ratio_of, size_for_aspect_ratio

MAX_UPLOAD_BYTES = 20 * 2**20
"""Largest file taken as an image prompt: a phone photo is 2-8 MB."""
MAX_UPLOAD_PIXELS = 50_000_000
"""Most pixels (about 8660x5770) decoded: a small file can claim a huge picture (a
decompression bomb), so the header is checked before the pixels are read."""
MIN_UPLOAD_SIDE = 64
"""Narrowest side that still says something about a picture."""
UPLOAD_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
"""What PIL reads well and Discord shows: PNG, JPEG and WebP (a GIF's animation would be lost)."""
IMAGE_PROMPT_STRENGTH = 0.6
"""Default image-to-image strength of an image prompt: the picture's layout and colours stay,
the prompt decides what is drawn there."""

_KINDS = "a PNG, JPEG or WebP picture"


@dataclass(frozen=True)
class FittedUpload:
    """An upload ready for image-to-image: PNG bytes at an SDXL size."""

    png: bytes
    width: int
    height: int
    aspect_ratio: str


def check_declared(size: int | None, content_type: str | None) -> None:
    """Refuse an attachment from what Discord says of it, before downloading it.

    Raises:
        InvalidRequest: too large, or not a picture of a kind that is read.
    """
    if size is not None and size > MAX_UPLOAD_BYTES:
        raise InvalidRequest(
            f"That file is too large ({size / 2**20:.1f} MB): an image prompt may be at most "
            f"{MAX_UPLOAD_BYTES // 2**20} MB."
        )
    if content_type is not None:
        kind = content_type.split(";")[0].strip().lower()
        if kind not in UPLOAD_FORMATS.values():
            raise InvalidRequest(f"That file is not {_KINDS} ({kind or 'unknown type'}).")


def fit_upload(data: bytes, resolution: int, aspect_ratio: str | None = None) -> FittedUpload:
    """Read an uploaded picture and fit it to the SDXL size of its (or the given) aspect ratio.

    The picture is turned upright (EXIF orientation), put on white where it is transparent,
    cropped in the middle to the aspect ratio and resized with Lanczos.

    Raises:
        InvalidRequest: not a picture, broken, of another format, too large or too small.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        check_declared(len(data), None)
    if not data:
        raise InvalidRequest(f"That file is empty: upload {_KINDS}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(UPLOAD_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_big() from None
    except Exception:
        raise InvalidRequest(f"That file is not {_KINDS}, or it is damaged.") from None
    width, height = image.size
    if width * height > MAX_UPLOAD_PIXELS:
        raise _too_big()
    if min(width, height) < MIN_UPLOAD_SIDE:
        raise InvalidRequest(
            f"That picture is too small ({width}x{height}): each side needs at least "
            f"{MIN_UPLOAD_SIDE} pixels."
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        image = _on_white(image)
    except Exception:
        raise InvalidRequest("That picture is damaged: it could not be read to the end.") from None
    ratio = aspect_ratio or aspect_ratio_of(image.width, image.height)
    size = size_for_aspect_ratio(ratio, resolution)
    fitted = ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    fitted.save(buffer, format="PNG", compress_level=1)
    return FittedUpload(buffer.getvalue(), size[0], size[1], ratio)


def _too_big() -> InvalidRequest:
    return InvalidRequest(
        f"That picture has too many pixels: at most {MAX_UPLOAD_PIXELS // 1_000_000} megapixels."
    )


def _on_white(image: Image.Image) -> Image.Image:
    """RGB; transparent parts become white (what a transparent picture looks like in Discord's
    light theme, and what people mean by an empty background)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
