"""Encode time and bytes for four 1024x1024 results, per encoding setting.

    python bench/encode_bench.py [--size 1024] [--repeats 3]

Two kinds of image: "photo-like" (smooth structure plus film-grain noise, compresses like a
real SDXL render) and "noise" (uniform random pixels: the worst case PNG can meet, and what
random-weight models produce). Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from engine.encoding import encode_images

MiB = 2**20


def photo_like(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.random((size // 32, size // 32, 3)).astype(np.float32)
    base = Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    detail = rng.random((size // 4, size // 4, 3)).astype(np.float32)
    mid = np.asarray(
        Image.fromarray((detail * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
        dtype=np.float32,
    )
    grain = rng.normal(0, 6, (size, size, 3))
    pixels = 0.75 * np.asarray(base, dtype=np.float32) + 0.25 * mid + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def noise(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


SETTINGS = {
    "PNG level 1 (default)": ("PNG", {"compress_level": 1}),
    "PNG level 6": ("PNG", {"compress_level": 6}),
    "PNG level 9": ("PNG", {"compress_level": 9}),
    "WebP lossless": ("WEBP", {"lossless": True, "quality": 80, "method": 4}),
    "JPEG q92": ("JPEG", {"quality": 92}),
}


def encode(image: Image.Image, fmt: str, options: dict) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench_setting(images: list[Image.Image], fmt: str, options: dict, repeats: int):
    """(ms serial, ms on 2 threads, largest file in MiB) for encoding ``images``."""
    one = functools.partial(encode, fmt=fmt, options=options)
    serial, blobs = timed(lambda: [one(i) for i in images], repeats)
    with ThreadPoolExecutor(2) as pool:
        parallel, _ = timed(lambda: list(pool.map(one, images)), repeats)
    return serial * 1000, parallel * 1000, max(len(b) for b in blobs) / MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(
        f"# encode bench: 4 images {args.size}x{args.size}, {cpu}, {os.cpu_count()} cores, "
        f"median of {args.repeats}\n"
    )
    print(
        "| images | setting | ms for 4 (1 thread) | ms for 4 (2 threads) "
        "| MiB per image (max) | fits 10 MiB |"
    )
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for kind, make in (("photo-like", photo_like), ("noise", noise)):
        images = [make(args.size, s) for s in range(4)]
        for name, (fmt, options) in SETTINGS.items():
            serial, parallel, biggest = bench_setting(images, fmt, options, args.repeats)
            fits = "yes" if biggest < 10 else "no"
            print(f"| {kind} | {name} | {serial:.0f} | {parallel:.0f} | {biggest:.2f} | {fits} |")
        start = time.perf_counter()
        chosen = encode_images(images, 10 * MiB)
        elapsed = (time.perf_counter() - start) * 1000
        biggest = max(len(e.data) for e in chosen) / MiB
        print(
            f"| {kind} | engine.encode_images (10 MiB limit) | {elapsed:.0f} | - | {biggest:.2f} "
            f"| {chosen[0].format} |"
        )
        tight = encode_images(images, 2 * MiB)
        biggest = max(len(e.data) for e in tight) / MiB
        print(
            f"| {kind} | engine.encode_images (2 MiB limit: fallback) | - | - | {biggest:.2f} "
            f"| {tight[0].format}: {tight[0].note} |"
        )


if __name__ == "__main__":
    main()
