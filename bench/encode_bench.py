"""Lossless PNG encoders side by side on four 1024x1024 results, plus the lossy formats.

    python bench/encode_bench.py [--size 1024] [--repeats 5] [--out bench/results/encode.json]

Two kinds of image: "photo-like" (smooth structure plus film-grain noise, compresses like a
real SDXL render) and "noise" (uniform random pixels: the worst case PNG can meet, and what
random-weight models produce). Each encoder gets the uint8 (height, width, 3) arrays the engine
makes. For each: CPU ms for the four images on one thread (process CPU time, so encoders that
start threads of their own are counted in full), wall ms on one and on two threads, the ratio
to Pillow level 1 in the same run, MiB per image, whether every file decodes (with Pillow)
to exactly the input, and how long another Python thread (the GPU thread) waits for the GIL
while it encodes. An encoder that is not installed is a row saying so.

Optional encoders: ``pip install imagecodecs opencv-python-headless pyvips pyvips-binary``.
Prints a markdown table for BENCHMARKS.md; ``--out`` also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.encoding import DEFAULT_TOTAL_LIMIT, encode_images  # noqa: E402

MiB = 2**20
FILE_LIMIT = 10 * MiB
Encoder = Callable[[np.ndarray], bytes]


def photo_like(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((max(1, size // 32),) * 2 + (3,)).astype(np.float32)
    base = Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    detail = rng.random((max(1, size // 4),) * 2 + (3,)).astype(np.float32)
    mid = np.asarray(
        Image.fromarray((detail * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
        dtype=np.float32,
    )
    grain = rng.normal(0, 6, (size, size, 3))
    pixels = 0.75 * np.asarray(base, dtype=np.float32) + 0.25 * mid + grain
    return np.clip(pixels, 0, 255).astype(np.uint8)


def noise(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _pillow(fmt: str, **options) -> Encoder:
    def encode(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt, **options)
        return buffer.getvalue()

    return encode


def _fpng() -> Encoder:
    import fpng

    return fpng.from_ndarray


def _imagecodecs_png() -> Encoder:
    import imagecodecs

    # imagecodecs' own "fast" settings (what OpenCV uses): zlib level 1, RLE, Sub filter.
    return lambda pixels: imagecodecs.png_encode(pixels, level=1, strategy=3, filter=16)


def _imagecodecs_spng() -> Encoder:
    import imagecodecs

    return lambda pixels: imagecodecs.spng_encode(pixels, level=1)


def _opencv() -> Encoder:
    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, 3]  # 3 = RLE

    def encode(pixels: np.ndarray) -> bytes:
        ok, data = cv2.imencode(".png", np.ascontiguousarray(pixels[..., ::-1]), params)
        assert ok
        return data.tobytes()

    return encode


def _pyvips() -> Encoder:
    import pyvips

    def encode(pixels: np.ndarray) -> bytes:
        image = pyvips.Image.new_from_array(pixels, interpretation="srgb")
        return image.pngsave_buffer(compression=1, filter=0)

    return encode


LOSSLESS: dict[str, tuple[str, Callable[[], Encoder]]] = {
    "Pillow PNG level 1 (before this issue)": ("Pillow", lambda: _pillow("PNG", compress_level=1)),
    "Pillow PNG level 6": ("Pillow", lambda: _pillow("PNG", compress_level=6)),
    "fpng (py-fpng-nb)": ("fpng", _fpng),
    "imagecodecs PNG (libpng + zlib-ng, fast)": ("imagecodecs", _imagecodecs_png),
    "imagecodecs SPNG level 1 (libspng)": ("imagecodecs", _imagecodecs_spng),
    "OpenCV PNG level 1, RLE": ("opencv-python-headless", _opencv),
    "pyvips PNG level 1": ("pyvips", _pyvips),
    "Pillow WebP lossless, method 0": (
        "Pillow",
        lambda: _pillow("WEBP", lossless=True, quality=0, method=0),
    ),
}
LOSSY: dict[str, tuple[str, Callable[[], Encoder]]] = {
    "Pillow WebP q90, method 0 (IMAGINE_IMAGE_FORMAT=webp)": (
        "Pillow",
        lambda: _pillow("WEBP", quality=90, method=0),
    ),
    "Pillow JPEG q92 (IMAGINE_IMAGE_FORMAT=jpeg)": ("Pillow", lambda: _pillow("JPEG", quality=92)),
}
BASELINE = "Pillow PNG level 1 (before this issue)"


@dataclass
class Row:
    images: str
    encoder: str
    package: str
    lossless_kind: bool
    cpu_ms_4: float | None = None  # CPU time for the four images, one thread
    wall_ms_4: float | None = None
    wall_ms_4_two_threads: float | None = None
    vs_pillow_level1: float | None = None
    mib_per_image_max: float | None = None
    mib_4: float | None = None
    decodes_to_input: bool | None = None
    max_abs_error: int | None = None
    fits: bool | None = None  # every file <= 10 MiB and the set <= Discord's request limit
    gil_wait_ms: float | None = None  # mean extra wake-up delay of a 1 ms sleeper meanwhile
    error: str | None = None


def gil_wait_ms(images: list[np.ndarray], encode: Encoder, seconds: float = 0.4) -> float:
    """How long a Python thread waits for the GIL while ``encode`` runs in another thread.

    A stand-in for the GPU thread, which needs the GIL to launch each kernel: it sleeps 1 ms
    in a loop; the mean delay past the 1 ms is what the encoder costs it (~0 when the encoder
    releases the GIL, about one encode when it holds it).
    """
    stop = threading.Event()

    def encoding() -> None:
        while not stop.is_set():
            for image in images:
                encode(image)

    thread = threading.Thread(target=encoding)
    thread.start()
    delays = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        time.sleep(0.001)
        delays.append(time.perf_counter() - start - 0.001)
    stop.set()
    thread.join()
    return statistics.mean(delays) * 1000


def measure(images: list[np.ndarray], encode: Encoder, repeats: int) -> dict:
    blobs = [encode(i) for i in images]  # warm up (lazy imports, tables)
    cpu, wall, two = [], [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        blobs = [encode(i) for i in images]
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    with ThreadPoolExecutor(2) as pool:
        for _ in range(repeats):
            w = time.perf_counter()
            list(pool.map(encode, images))
            two.append(time.perf_counter() - w)
    errors = [
        int(np.abs(np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=int) - i).max())
        for b, i in zip(blobs, images, strict=True)
    ]
    sizes = [len(b) for b in blobs]
    return {
        "cpu_ms_4": statistics.median(cpu) * 1000,
        "wall_ms_4": statistics.median(wall) * 1000,
        "wall_ms_4_two_threads": statistics.median(two) * 1000,
        "mib_per_image_max": max(sizes) / MiB,
        "mib_4": sum(sizes) / MiB,
        "decodes_to_input": max(errors) == 0,
        "max_abs_error": max(errors),
        "fits": max(sizes) <= FILE_LIMIT and sum(sizes) <= DEFAULT_TOTAL_LIMIT,
        "gil_wait_ms": gil_wait_ms(images, encode),
    }


def run(size: int, repeats: int) -> list[Row]:
    rows: list[Row] = []
    for kind, make in (("photo-like", photo_like), ("noise", noise)):
        images = [make(size, s) for s in range(4)]
        baseline = None
        for table, lossless in ((LOSSLESS, True), (LOSSY, False)):
            for name, (package, factory) in table.items():
                row = Row(kind, name, package, lossless)
                try:
                    encoder = factory()
                except ImportError as exc:
                    row.error = f"not installed ({exc.name or package})"
                    rows.append(row)
                    continue
                try:
                    for key, value in measure(images, encoder, repeats).items():
                        setattr(row, key, value)
                except Exception as exc:  # one encoder failing is a row, not the end
                    row.error = f"{type(exc).__name__}: {exc}"
                if name == BASELINE and row.cpu_ms_4:
                    baseline = row.cpu_ms_4
                if baseline and row.cpu_ms_4 is not None:
                    row.vs_pillow_level1 = row.cpu_ms_4 / baseline
                rows.append(row)
                print(f"measured {kind} / {name}", file=sys.stderr, flush=True)
        # What the engine does by default, with its size limits.
        start = time.process_time()
        chosen = encode_images(images, FILE_LIMIT)
        cpu = (time.process_time() - start) * 1000
        row = Row(kind, "engine.encode_images (default)", chosen[0].format, True)
        row.cpu_ms_4 = cpu
        row.vs_pillow_level1 = cpu / baseline if baseline else None
        row.mib_per_image_max = max(len(e.data) for e in chosen) / MiB
        row.mib_4 = sum(len(e.data) for e in chosen) / MiB
        row.decodes_to_input = all(
            np.array_equal(np.asarray(Image.open(io.BytesIO(e.data)).convert("RGB")), i)
            for e, i in zip(chosen, images, strict=True)
        )
        row.fits = row.mib_per_image_max * MiB <= FILE_LIMIT
        rows.append(row)
    return rows


def _n(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(rows: list[Row]) -> str:
    lines = [
        "| images | encoder | CPU ms for 4 (1 thread) | x Pillow level 1 | wall ms for 4, "
        "2 threads | MiB per image (max) | decodes to the input | fits 10 / 25 MiB "
        "| GIL wait ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.images} | {r.encoder} | {r.error} | | | | | | |")
            continue
        exact = "yes" if r.decodes_to_input else f"no (max error {r.max_abs_error})"
        lines.append(
            f"| {r.images} | {r.encoder} | {_n(r.cpu_ms_4, '.0f')} "
            f"| {_n(r.vs_pillow_level1, '.3f')} | {_n(r.wall_ms_4_two_threads, '.0f')} "
            f"| {_n(r.mib_per_image_max, '.2f')} | {exact} | {'yes' if r.fits else 'no'} "
            f"| {_n(r.gil_wait_ms, '.1f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = run(args.size, args.repeats)
    cpu = platform.processor() or platform.machine()
    print(
        f"# encode bench: 4 images {args.size}x{args.size}, {cpu}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, median of {args.repeats}\n"
    )
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return rows


if __name__ == "__main__":
    main()
