"""CPU-side bot benchmark: the real bot, the local Discord stand-in, the tiny engine.

    python bench/bot_bench.py [--quick] [--out bench/results/bot_bench.json]

Measures what the bot itself costs around the GPU:

- ``tiny``: jobs/s through stand-in -> queue -> tiny SDXL (64x64, CPU) -> encode -> stand-in,
  with 1, 10 and 100 jobs sent at once by 20 users, for IMAGINE_MAX_BATCH_IMAGES 4 and 16
  (dynamic batching off / on).
- ``instant``: the engine returns cached 64x64 images at once: what is left is the bot's own
  work per job (storage, queue, Discord calls, encoding) and the stand-in's.
- ``busy-1024``: a simulated GPU (sleeps 75 ms per image, i.e. 300 ms per 4-image request;
  like a real GPU it does not hold the GIL) returning 1024x1024 images, so encoding at full size
  runs while new interactions arrive. Its thread then spends the CPU that the real engine's
  post-processing spends on the GPU thread, two ways: ``busy-1024 before`` runs diffusers'
  own ``VaeImageProcessor.postprocess(..., "pil")`` on the batch's fp16 pixels (float32 on the
  CPU, x255, round, PIL; the device -> host copy itself is DMA) and encodes with Pillow PNG
  level 1 (what this issue replaced); ``busy-1024 now`` copies the batch's uint8 pixels once
  (what is left on the host: the pinned copy) and encodes with the engine's default (fpng).
  "GPU busy %" = simulated GPU seconds / wall: whether a 2-core box keeps a 300 ms GPU busy.

For every run: wall time, jobs/s, engine-busy time, GPU idle gaps between batches while work
was queued (the bot's per-batch cost that delays the GPU), the bot's time per job, and the
defer latency (``ix.ack_latency``: interaction sent by the stand-in -> defer received) p50/p95/
max. Prints a markdown table for BENCHMARKS.md (logs go to stderr). No network, no GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "tests", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger("bot_bench")

PROBES = 10
BUSY_SECONDS_PER_IMAGE = 0.075  # 300 ms per 4-image request: the GPU goal


@dataclass(frozen=True)
class RunResult:
    """One benchmark run."""

    scenario: str
    jobs: int
    max_batch_images: int
    wall_s: float
    jobs_per_s: float
    engine_busy_s: float
    batches: int
    mean_batch_jobs: float
    gpu_idle_gap_ms: float  # mean gap between batches while jobs were waiting
    bot_ms_per_job: float  # (wall - engine busy) / jobs
    ack_p50_ms: float
    ack_p95_ms: float
    ack_max_ms: float
    probe_p50_ms: float  # defer latency of single interactions sent while the queue is full
    probe_max_ms: float
    gpu_busy_pct: float | None = None  # simulated GPU seconds / wall (busy-1024 only)


class TimedEngine:
    """Wraps an engine-like object: records when each generate_batch starts and ends."""

    def __init__(self, engine, *, simulate=None):
        self.engine = engine
        self.simulate = simulate  # callable(requests) -> results instead of the engine
        self.spans: list[tuple[float, float, int]] = []
        self._lock = threading.Lock()

    def generate_batch(self, requests, progress=None, **options):
        start = time.perf_counter()
        if self.simulate is not None:
            results = self.simulate(requests, progress)
        else:
            results = self.engine.generate_batch(requests, progress, **options)
        with self._lock:
            self.spans.append((start, time.perf_counter(), len(requests)))
        return results

    def warm_up(self) -> None:
        if self.engine is not None:
            self.engine.warm_up()

    def __getattr__(self, name):
        return getattr(self.engine, name)


def make_simulator(size: int, seconds_per_image: float, postprocess: str = "none"):
    """A fake engine call: sleeps like a GPU would, returns fixed images with the right seeds.

    ``postprocess``: the host CPU work the real engine does after the GPU, on the GPU thread:
    ``none``, ``device`` (one copy of the uint8 batch: what is left now) or ``diffusers`` (its
    float -> PIL conversion on the CPU: what it was before).
    """
    import numpy as np
    import torch
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    from engine import GenerationResult
    from engine.requests import GeneratedImage, StepProgress

    rng = np.random.default_rng(0)
    # Photo-like: smooth structure plus grain, compresses like a real render (see encode_bench).
    small = rng.random((size // 32, size // 32, 3))
    base = np.asarray(
        Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
        dtype=np.float32,
    )
    grain = rng.normal(0, 6, (size, size, 3))
    image = np.clip(base + grain, 0, 255).astype(np.uint8)
    # What the VAE hands back: (3, H, W) fp16 in [-1, 1].
    decoded = torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1).half()
    processor = VaeImageProcessor(vae_scale_factor=8)

    def host_side(count: int) -> list:
        if postprocess == "diffusers":
            batch = decoded.unsqueeze(0).expand(count, -1, -1, -1).contiguous()
            return [np.asarray(p) for p in processor.postprocess(batch, output_type="pil")]
        if postprocess == "device":
            batch = np.empty((count, *image.shape), dtype=np.uint8)
            batch[:] = image  # the one device -> pinned host copy, as a host memcpy
            return list(batch)
        return [image] * count

    def simulate(requests, progress=None):
        images = sum(r.count for r in requests)
        steps = requests[0].steps
        for step in range(1, steps + 1):
            time.sleep(seconds_per_image * images / steps)
            if progress is not None:
                progress(StepProgress(step, steps))
        pixels = iter(host_side(images))
        return [
            GenerationResult(
                request=r,
                images=tuple(GeneratedImage(seed, next(pixels)) for seed in r.seeds),
                seconds=seconds_per_image * images,
                notes=r.notes,
            )
            for r in requests
        ]

    return simulate


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run_once(
    scenario: str,
    jobs: int,
    max_batch_images: int,
    engine_settings,
    load_engine,
    data_dir: Path,
    gpu_seconds_per_image: float | None = None,
) -> RunResult:
    import discord
    import discord.gateway
    import discord.http
    from discord_standin import DiscordStandin

    from bot.client import ImagineBot, point_discord_py_at
    from bot.settings import BotSettings

    standin = DiscordStandin()
    await standin.start()
    guild = standin.add_guild(name="Bench guild")
    channel = standin.add_channel(guild, name="general")
    users = [standin.add_user(f"user{i}") for i in range(20)]
    probers = [standin.add_user(f"prober{i}") for i in range(PROBES)]
    settings = BotSettings(
        _env_file=None,
        DISCORD_TOKEN=standin.token,
        DISCORD_API_BASE=standin.api_base,
        DISCORD_GATEWAY_URL=standin.gateway_url,
        IMAGINE_DATA_DIR=data_dir,
        IMAGINE_QUEUE_MAX_JOBS=max(100, jobs + PROBES),
        IMAGINE_QUEUE_PER_USER=max(3, -(-jobs // len(users))),
        engine=engine_settings.model_copy(update={"max_batch_images": max_batch_images}),
    )
    old = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    point_discord_py_at(settings.discord_api_base, settings.discord_gateway_url)
    engine = load_engine()
    bot = ImagineBot(settings, load_engine=lambda: engine, guild_ready_timeout=0.05)
    task = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 120)
        await standin.wait_for_commands(timeout=30)
        engine.spans.clear()
        started = time.perf_counter()
        interactions = []
        for i in range(jobs):
            user = users[i % len(users)]
            interactions.append(
                await standin.slash_command(
                    user, channel, "imagine", {"prompt": f"bench {i}", "seed": i}
                )
            )
        # Probes: one interaction at a time while the burst is queued and the GPU and the
        # encoders are busy ("defer within 3 s even with 100 jobs queued").
        await asyncio.gather(*(ix.wait_ack(3) for ix in interactions))
        probes = []
        if jobs >= 10 and scenario != "instant":  # instant measures the burst alone
            for prober in probers:
                probe = await standin.slash_command(
                    prober, channel, "imagine", {"prompt": "probe", "seed": 1}
                )
                await probe.wait_ack(3)
                probes.append(probe)
                await asyncio.sleep(0.05)
        for ix in [*interactions, *probes]:
            await standin.wait_for_message(
                lambda m, ix=ix: m.interaction is ix and len(m.attachments) == 4, timeout=600
            )
        wall = time.perf_counter() - started
        total = jobs + len(probes)
        probe_ms = [ix.ack_latency * 1000 for ix in probes]
        acks = [ix.ack_latency * 1000 for ix in interactions if ix.ack_latency is not None]
        spans = sorted(engine.spans)
        busy = sum(end - start for start, end, _ in spans)
        # Gaps between one batch's end and the next one's start: with work queued, that is
        # time the GPU waited for the bot (storage reads/writes, batching, scheduling).
        gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
        return RunResult(
            scenario=scenario,
            jobs=jobs,
            max_batch_images=max_batch_images,
            wall_s=round(wall, 3),
            jobs_per_s=round(total / wall, 2),
            engine_busy_s=round(busy, 3),
            batches=len(spans),
            mean_batch_jobs=round(statistics.mean(n for *_, n in spans), 2) if spans else 0,
            gpu_idle_gap_ms=round(statistics.mean(gaps) * 1000, 1) if gaps else 0.0,
            bot_ms_per_job=round((wall - busy) / total * 1000, 1),
            ack_p50_ms=round(percentile(acks, 0.5), 1),
            ack_p95_ms=round(percentile(acks, 0.95), 1),
            ack_max_ms=round(max(acks), 1),
            probe_p50_ms=round(percentile(probe_ms, 0.5), 1),
            probe_max_ms=round(max(probe_ms), 1) if probe_ms else float("nan"),
            gpu_busy_pct=(
                round(100 * gpu_seconds_per_image * 4 * total / wall, 1)
                if gpu_seconds_per_image
                else None
            ),
        )
    finally:
        await bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old
        await standin.close()


def build_tiny(work: Path):
    from tiny_models import build_tiny_sdxl

    from engine import EngineSettings

    model = work / "tiny_sdxl"
    build_tiny_sdxl(model)
    return EngineSettings(
        _env_file=None,
        model=str(model),
        lora="",
        vae="",
        device="cpu",
        dtype="float32",
        resolution=64,
        translator="",
        safety_model="",
    )


async def main_async(args: argparse.Namespace) -> list[RunResult]:
    from engine import Engine

    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="bot_bench_") as tmp:
        work = Path(tmp)
        settings = await asyncio.to_thread(build_tiny, work)
        tiny = await asyncio.to_thread(Engine.load, settings)
        counts = (1, 10) if args.quick else (1, 10, 100)
        plan: list[tuple[str, int, int]] = []
        if args.only in (None, "tiny"):
            plan += [("tiny", n, batch) for batch in (4, 16) for n in counts]
            plan.append(("instant", 10 if args.quick else 100, 16))
        if args.only in (None, "busy"):
            busy_jobs = 4 if args.quick else args.busy_jobs
            plan += [("busy-1024 before", busy_jobs, 16), ("busy-1024 now", busy_jobs, 16)]
        instant = make_simulator(64, 0.0)
        busy = {
            "busy-1024 before": make_simulator(1024, BUSY_SECONDS_PER_IMAGE, "diffusers"),
            "busy-1024 now": make_simulator(1024, BUSY_SECONDS_PER_IMAGE, "device"),
        }
        for run, (scenario, jobs, batch) in enumerate(plan):
            if scenario == "tiny":
                engine_settings = settings

                def load(tiny=tiny):
                    return TimedEngine(tiny)
            elif scenario == "instant":
                engine_settings = settings

                def load():
                    return TimedEngine(tiny, simulate=instant)
            else:
                engine_settings = settings.model_copy(update={"resolution": 1024})

                def load(simulate=busy[scenario]):
                    return TimedEngine(tiny, simulate=simulate)

            log.info("run %s: %s, %d jobs, max batch %d images", run, scenario, jobs, batch)
            # "before" encodes with Pillow PNG level 1, as the engine did before fpng.
            with _pillow_png() if scenario == "busy-1024 before" else contextlib.nullcontext():
                result = await run_once(
                    scenario,
                    jobs,
                    batch,
                    engine_settings,
                    load,
                    work / f"data{run}",
                    BUSY_SECONDS_PER_IMAGE if scenario.startswith("busy") else None,
                )
            log.info("%s", result)
            results.append(result)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return results


@contextlib.contextmanager
def _pillow_png():
    from engine import encoding

    saved, encoding._fpng = encoding._fpng, None
    try:
        yield
    finally:
        encoding._fpng = saved


def table(results: list[RunResult]) -> str:
    lines = [
        "| scenario | jobs sent at once | max batch images | wall s | jobs/s | engine busy s "
        "| batches (jobs each) | GPU idle gap ms | bot ms/job | burst defer p50 / p95 / max ms "
        "| probe defer p50 / max ms | GPU busy % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.jobs} | {r.max_batch_images} | {r.wall_s:.2f} "
            f"| {r.jobs_per_s:.2f} | {r.engine_busy_s:.2f} | {r.batches} ({r.mean_batch_jobs:g}) "
            f"| {r.gpu_idle_gap_ms:.1f} | {r.bot_ms_per_job:.1f} "
            f"| {r.ack_p50_ms:.0f} / {r.ack_p95_ms:.0f} / {r.ack_max_ms:.0f} "
            f"| {r.probe_p50_ms:.0f} / {r.probe_max_ms:.0f} "
            f"| {'-' if r.gpu_busy_pct is None else f'{r.gpu_busy_pct:.0f}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--only", choices=("tiny", "busy"), default=None, help="one group")
    parser.add_argument("--busy-jobs", type=int, default=40, help="jobs per busy-1024 run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log.setLevel(logging.INFO)
    results = asyncio.run(main_async(args))
    cpu = platform.processor() or platform.machine()
    print(f"# bot bench: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}\n")
    print(table(results))


if __name__ == "__main__":
    main()
