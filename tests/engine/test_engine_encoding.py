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
