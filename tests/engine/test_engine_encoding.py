"""encode_images: PNG first, smaller formats only when Discord's limits demand it."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from engine import EncodedImage, encode_images


def noisy(size: int = 1024, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def flat(size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), (200, 30, 30))


def test_small_images_stay_png() -> None:
    encoded = encode_images([flat(), flat()], limit_bytes=10 * 2**20, stem="job7")
    assert [e.filename for e in encoded] == ["job7_1.png", "job7_2.png"]
    assert all(e.format == "png" and e.note is None for e in encoded)
    decoded = Image.open(io.BytesIO(encoded[0].data))
    assert decoded.format == "PNG" and decoded.size == (64, 64)
    assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(flat()))


def test_noisy_image_falls_back_to_fit_a_tiny_limit() -> None:
    limit = 600 * 1024  # noise does not compress: PNG and lossless WebP are ~3 MB
    [encoded] = encode_images([noisy()], limit_bytes=limit)
    assert isinstance(encoded, EncodedImage)
    assert len(encoded.data) <= limit
    assert encoded.format == "jpeg" and encoded.filename == "imagine_1.jpg"
    assert encoded.note is not None and "JPEG" in encoded.note and "KiB" in encoded.note
    assert Image.open(io.BytesIO(encoded.data)).size == (1024, 1024)


def test_total_limit_shrinks_the_set() -> None:
    images = [noisy(512, seed) for seed in range(3)]
    per_file = 10 * 2**20
    total = 1_500_000  # each noisy PNG is ~790 KB: three do not fit together
    encoded = encode_images(images, limit_bytes=per_file, total_limit_bytes=total)
    assert sum(len(e.data) for e in encoded) <= total
    assert any(e.note for e in encoded)
    assert [e.filename.rsplit(".", 1)[0] for e in encoded] == [
        "imagine_1",
        "imagine_2",
        "imagine_3",
    ]


def photo(size: int = 256, seed: int = 0) -> np.ndarray:
    """Smooth structure plus grain: compresses like a render (uint8 HWC, what the engine makes)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x, y, (x + y) // 2], axis=-1) * (255 / (2 * size))
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_png_is_written_by_fpng_and_decodes_to_the_input() -> None:
    from engine import encoding

    assert encoding.png_encoder() == "fpng"  # a dependency: its wheel must install here and in CI
    pixels = photo()
    [encoded] = encode_images([pixels], limit_bytes=10 * 2**20)
    assert encoded.filename == "imagine_1.png" and encoded.format == "png"
    assert encoded.data == encoding._fpng.from_ndarray(pixels)  # fpng's bytes, not Pillow's
    assert np.array_equal(decoded(encoded.data), pixels)
    # A PIL image (previews, older callers) gives the same file.
    [again] = encode_images([Image.fromarray(pixels)], limit_bytes=10 * 2**20)
    assert again.data == encoded.data


def test_without_fpng_pillow_writes_the_same_pixels(monkeypatch) -> None:
    from engine import encoding

    pixels = photo(seed=3)
    monkeypatch.setattr(encoding, "_fpng", None)
    assert encoding.png_encoder() == "pillow"
    [encoded] = encode_images([pixels], limit_bytes=10 * 2**20)
    assert encoded.format == "png" and encoded.note is None
    assert np.array_equal(decoded(encoded.data), pixels)


def test_webp_and_jpeg_formats_are_smaller_and_close_to_the_input() -> None:
    pixels = photo(512)
    [png] = encode_images([pixels], limit_bytes=10 * 2**20)
    [webp] = encode_images([pixels], limit_bytes=10 * 2**20, stem="s", image_format="webp")
    [jpeg] = encode_images([pixels], limit_bytes=10 * 2**20, stem="s", image_format="jpeg")
    assert webp.filename == "s_1.webp" and webp.data[:4] == b"RIFF" and webp.data[8:12] == b"WEBP"
    assert jpeg.filename == "s_1.jpg" and jpeg.data[:3] == b"\xff\xd8\xff"
    assert webp.note is None and jpeg.note is None
    for lossy in (webp, jpeg):
        assert len(lossy.data) < len(png.data) / 2
        error = np.abs(decoded(lossy.data).astype(int) - pixels.astype(int)).mean()
        assert 0 < error < 8  # lossy, but the same picture


def test_lossy_formats_lower_their_quality_to_fit_and_say_so() -> None:
    pixels = photo(512, seed=5)
    for fmt, magic in (("webp", b"RIFF"), ("jpeg", b"\xff\xd8")):
        [normal] = encode_images([pixels], limit_bytes=10 * 2**20, image_format=fmt)
        limit = len(normal.data) * 2 // 3
        [fitted] = encode_images([pixels], limit_bytes=limit, image_format=fmt)
        assert fitted.format == fmt and fitted.data.startswith(magic)
        assert len(fitted.data) <= limit
        assert fitted.note is not None and "lower quality" in fitted.note


def test_unknown_format_and_bad_pixels_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown image format"):
        encode_images([photo(16)], limit_bytes=2**20, image_format="gif")
    with pytest.raises(ValueError, match="uint8"):
        encode_images([np.zeros((16, 16, 3), dtype=np.float32)], limit_bytes=2**20)
