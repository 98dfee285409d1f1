"""Uploaded pictures: what is refused (with what words) and how a picture is fitted."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.errors import InvalidRequest
from engine.requests import size_for_aspect_ratio
from engine.uploads import MAX_UPLOAD_BYTES, check_declared, fit_upload

NOISE = Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header says ``width`` x ``height`` (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\0" * 64)
    body += (
        struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.mark.parametrize(
    ("size", "ratio"), [((640, 480), "4:3"), ((480, 640), "3:4"), ((1920, 1080), "16:9")]
)
def test_a_photo_is_fitted_to_the_sdxl_size_of_its_shape(size, ratio):
    fitted = fit_upload(encoded(Image.new("RGB", size, (10, 200, 30)), "JPEG"), 1024)
    assert fitted.aspect_ratio == ratio
    assert (fitted.width, fitted.height) == size_for_aspect_ratio(ratio, 1024)
    image = Image.open(io.BytesIO(fitted.png))
    assert image.format == "PNG" and image.size == (fitted.width, fitted.height)


def test_an_asked_for_aspect_ratio_crops_the_middle():
    wide = np.zeros((100, 300, 3), dtype=np.uint8)
    wide[:, 100:200] = 255  # a white middle third between black sides
    fitted = fit_upload(encoded(Image.fromarray(wide)), 64, aspect_ratio="1:1")
    pixels = np.asarray(Image.open(io.BytesIO(fitted.png)))
    assert (fitted.width, fitted.height) == (64, 64) and pixels.min() > 200


def test_transparency_becomes_white_and_exif_orientation_is_applied():
    clear = fit_upload(encoded(Image.new("RGBA", (80, 80), (0, 0, 0, 0))), 64)
    assert np.asarray(Image.open(io.BytesIO(clear.png))).min() == 255
    tall = Image.new("RGB", (120, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees
    turned = fit_upload(encoded(tall, "JPEG", exif=exif), 64)
    assert turned.height > turned.width


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 not a picture", "not a PNG, JPEG or WebP"),
        (encoded(Image.new("RGB", (80, 80)), "GIF"), "not a PNG, JPEG or WebP"),
        (encoded(NOISE)[:3000], "damaged"),
        (encoded(NOISE, "JPEG")[:3000], "damaged"),
        (encoded(Image.new("RGB", (40, 300))), "too small"),
        (png_header_claiming(20000, 20000), "too many pixels"),
        (png_header_claiming(9000, 9000), "too many pixels"),
    ],
)
def test_what_is_refused_says_why(data: bytes, words: str):
    with pytest.raises(InvalidRequest) as refused:
        fit_upload(data, 64)
    assert words in refused.value.user_message


def test_the_declared_size_and_type_are_checked_before_downloading():
    with pytest.raises(InvalidRequest, match="too large"):
        check_declared(MAX_UPLOAD_BYTES + 1, "image/png")
    with pytest.raises(InvalidRequest, match="not a PNG"):
        check_declared(100, "application/zip")
    check_declared(100, "image/webp")
    check_declared(None, None)  # Discord did not say: the download is checked instead


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
def test_any_bytes_are_a_fitted_picture_or_a_refusal(data: bytes):
    try:
        fitted = fit_upload(data, 64)
    except InvalidRequest as refused:
        assert refused.user_message
    else:
        assert Image.open(io.BytesIO(fitted.png)).size == (fitted.width, fitted.height)


@settings(max_examples=100, deadline=None)
@given(
    prefix=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"RIFF\0\0\0\0WEBPVP8 "]),
    rest=st.binary(max_size=512),
)
def test_broken_files_that_start_like_pictures_are_refused(prefix: bytes, rest: bytes):
    with pytest.raises(InvalidRequest):
        fit_upload(prefix + rest, 64)
