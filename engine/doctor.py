"""Setup checks of a host that need no Discord, each one line with the fix for a failure.

``python -m engine.worker doctor`` runs them for a GPU worker, and ``python -m bot doctor``
adds them to its Discord checks. Each check looks at one thing an operator sets up, without
serving: the GPU and its free memory (against README's Hardware table), a model (a local
folder, the Hugging Face cache, or the hub at ``HF_ENDPOINT``), the disk under
``IMAGINE_DATA_DIR``, Redis and its GPU workers, a port to listen on.

A failure (``FAIL``) means serving cannot work until it is fixed, and the doctor exits 1; a
warning means it works, but less well (on the CPU, without an optional model, with no worker
online yet). torch and huggingface_hub are imported inside the checks that need them, so the
bot can import this module without them.
"""

from __future__ import annotations

import asyncio
import enum
import os
import shutil
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from engine.hub import describe
from engine.streams import StreamKeys, WorkerBeat
from engine.styles import load_styles

if TYPE_CHECKING:
    from engine.settings import EngineSettings

GIB = 2**30

# README, "Hardware": SDXL's fp16 weights are 6.5 GiB (UNet 4.8, text encoders 1.5, VAE 0.2);
# one request of four 1024x1024 images needs ~3 GB more for activations and the VAE decode.
WEIGHTS_GIB = 6.5
UNET_GIB = 4.8  # the most IMAGINE_LOW_MEMORY keeps on the GPU at once
REQUEST_GIB = 3.0
# The card sizes of README's Hardware table, with room for what the driver keeps.
CARD_12GB = 11.5
CARD_16GB = 15.5
CARD_40GB = 39.5
SMALL_CARD_BATCH = 4  # IMAGINE_MAX_BATCH_IMAGES on a 12 GB card (8 with the tiny decoder)

MIN_FREE_DISK = 256 * 2**20  # below this a few dozen result sets fill the disk
REDIS_MIN_VERSION = (6, 2)  # XAUTOCLAIM (docs/redis-streams.md)
REDIS_TIMEOUT_S = 5.0
HUB_TIMEOUT_S = 5.0
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # what a LoRA repository is read for

# What an optional model that cannot be loaded costs (the bot serves without it).
_WITHOUT = {
    "IMAGINE_TRANSLATOR": "Chinese prompts are used as typed",
    "IMAGINE_SAFETY_MODEL": "images are not checked by the filter",
    "IMAGINE_PREVIEW_VAE": "no progress previews",
    "IMAGINE_DESCRIBE_MODEL": "/describe answers that it is not set up",
}


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """What one check found: ``name`` (what was checked), a one-line ``detail``, and for a
    warning or failure the ``fix``."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    @classmethod
    def ok(cls, name: str, detail: str) -> Check:
        return cls(name, Status.OK, detail)

    @classmethod
    def warn(cls, name: str, detail: str, fix: str) -> Check:
        return cls(name, Status.WARN, detail, fix)

    @classmethod
    def fail(cls, name: str, detail: str, fix: str) -> Check:
        return cls(name, Status.FAIL, detail, fix)

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL

    def line(self) -> str:
        """``ok   token: logged in as Imagine`` / ``FAIL Redis: ... Fix: ...``."""
        text = f"{self.status.value:<4} {self.name}: {self.detail}"
        if self.status is Status.OK or not self.fix:
            return text
        return f"{text.rstrip('.')}. Fix: {self.fix}"


def report(checks: Sequence[Check]) -> str:
    """One line per check, then a summary line."""
    failures = sum(c.status is Status.FAIL for c in checks)
    warnings = sum(c.status is Status.WARN for c in checks)
    if failures:
        summary = (
            f"{failures} of {len(checks)} checks failed: serving cannot work until they are fixed."
        )
    elif warnings:
        summary = f"{len(checks)} checks: serving can work; {warnings} warning(s) above."
    else:
        summary = f"all {len(checks)} checks passed."
    return "\n".join([*(c.line() for c in checks), summary])


def exit_code(checks: Iterable[Check]) -> int:
    """1 when any check failed (serving cannot work), else 0 (warnings included)."""
    return 1 if any(c.failed for c in checks) else 0


# ------------------------------------------------------------------------------------ GPU
def memory_needed_gib(settings: EngineSettings, *, low_memory: bool | None = None) -> float:
    """About how much free GPU memory one request needs (README, Hardware).

    ``low_memory``: for IMAGINE_LOW_MEMORY on or off instead of the setting.
    """
    low = settings.low_memory if low_memory is None else low_memory
    scale = settings.images_per_request / 4 * (settings.resolution / 1024) ** 2
    weights = UNET_GIB if low else WEIGHTS_GIB
    if settings.dtype == "float32":
        weights *= 2
    # With IMAGINE_LOW_MEMORY the VAE decodes one image at a time, in tiles.
    return weights + REQUEST_GIB * scale / (2 if low else 1)


def check_gpu(settings: EngineSettings) -> Check:
    """The device the engine would use, and whether its free memory fits one request."""
    if settings.device == "cpu":
        return Check.warn(
            "GPU",
            "IMAGINE_DEVICE=cpu: every request takes minutes (fp32 on the CPU is for tests)",
            "use an NVIDIA GPU with IMAGINE_DEVICE=auto (README, Hardware)",
        )
    import torch

    if not torch.cuda.is_available():
        cuda_fix = (
            "install the NVIDIA driver and a CUDA build of PyTorch "
            "(python -c 'import torch; print(torch.version.cuda)' prints None for a CPU build), "
            "and check CUDA_VISIBLE_DEVICES"
        )
        if settings.device == "cuda":
            return Check.fail("GPU", "IMAGINE_DEVICE=cuda but PyTorch sees no CUDA GPU", cuda_fix)
        return Check.warn(
            "GPU",
            "PyTorch sees no CUDA GPU: IMAGINE_DEVICE=auto runs on the CPU, minutes per request",
            cuda_fix,
        )
    free, total = (n / GIB for n in torch.cuda.mem_get_info(0))
    card = f"{torch.cuda.get_device_name(0)} with {total:.1f} GiB ({free:.1f} free)"
    need = memory_needed_gib(settings)
    if free < need:
        if not settings.low_memory and free >= memory_needed_gib(settings, low_memory=True):
            fix = (
                "set IMAGINE_LOW_MEMORY=true, IMAGINE_VAE_DECODER=tiny and "
                f"IMAGINE_MAX_BATCH_IMAGES={SMALL_CARD_BATCH} (README, Hardware: 8 GB cards)"
            )
        else:
            fix = (
                "free the GPU (nvidia-smi lists what uses it) or use a card with more memory "
                "(README, Hardware)"
            )
        return Check.fail("GPU", f"{card}: one request needs about {need:.1f} GiB", fix)
    small_batch = SMALL_CARD_BATCH * (2 if settings.vae_decoder == "tiny" else 1)
    if total < CARD_16GB and not settings.low_memory and settings.max_batch_images > small_batch:
        return Check.warn(
            "GPU",
            f"{card}: batches of IMAGINE_MAX_BATCH_IMAGES={settings.max_batch_images} images do "
            "not fit; each is split in halves after running out of memory",
            f"set IMAGINE_MAX_BATCH_IMAGES={small_batch} (README, Hardware)",
        )
    detail = f"{card}; one request needs about {need:.1f} GiB"
    if total >= CARD_40GB and not settings.compile:
        detail += "; IMAGINE_COMPILE=true makes the most of this card"
    return Check.ok("GPU", detail)


# ---------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    """A model the settings name: ``setting`` (``IMAGINE_MODEL``), ``name`` as given (hub id,
    folder or file), the ``probe`` file that shows it is there, and whether serving needs it."""

    setting: str
    name: str
    probe: str
    required: bool = True
    repo: str | None = None  # the hub repository, when ``name`` is a file inside one


@dataclass(frozen=True)
class HubAccess:
    """How models that are not local folders are found: offline (``HF_HUB_OFFLINE``: only
    the cache), the hub ``endpoint`` (``HF_ENDPOINT``) and the cache folder."""

    offline: bool
    endpoint: str
    cache_dir: Path | None = None
    timeout_s: float = HUB_TIMEOUT_S

    @classmethod
    def current(cls) -> HubAccess:
        """What huggingface_hub read from the environment (HF_HUB_OFFLINE, HF_ENDPOINT)."""
        from huggingface_hub import constants

        return cls(offline=constants.is_offline_mode(), endpoint=constants.ENDPOINT)


def models_to_check(
    settings: EngineSettings, *, generation: bool, translation: bool
) -> list[ModelSpec]:
    """The models the settings name. ``generation``: those the GPU side loads (SDXL, its LoRA
    and VAEs, the image filter, the /describe captioner); ``translation``: the translator (the
    bot's)."""
    specs: list[ModelSpec] = []
    if generation:
        specs.append(ModelSpec("IMAGINE_MODEL", settings.model, "model_index.json"))
        if settings.lora:
            specs.append(_lora_spec(settings.lora))
        if settings.vae:
            specs.append(ModelSpec("IMAGINE_VAE", settings.vae, "config.json"))
        tiny = settings.vae_decoder == "tiny"
        if tiny:
            specs.append(ModelSpec("IMAGINE_TINY_VAE", settings.tiny_vae, "config.json"))
        if settings.preview_vae and not (tiny and settings.preview_vae == settings.tiny_vae):
            specs.append(
                ModelSpec("IMAGINE_PREVIEW_VAE", settings.preview_vae, "config.json", False)
            )
        if settings.safety_model:
            specs.append(
                ModelSpec("IMAGINE_SAFETY_MODEL", settings.safety_model, "config.json", False)
            )
        if settings.describe_model:
            specs.append(
                ModelSpec("IMAGINE_DESCRIBE_MODEL", settings.describe_model, "config.json", False)
            )
        # A style whose LoRA is missing is left out at start: the bot serves without it.
        for style in load_styles(settings.styles):
            setting = f"IMAGINE_STYLES [{style.name}]"
            specs.append(_lora_spec(style.lora, setting, required=False))
    if translation and settings.translator:
        specs.append(ModelSpec("IMAGINE_TRANSLATOR", settings.translator, "config.json", False))
    return specs


def _lora_spec(lora: str, setting: str = "IMAGINE_LORA", required: bool = True) -> ModelSpec:
    """Where the engine looks for a LoRA (``engine.style_adapters.lora_location``)."""
    is_hub_file = lora.endswith(".safetensors") and lora.count("/") >= 2
    if is_hub_file and not lora.startswith((".", "/", "~")) and not Path(lora).exists():
        repo, weights = lora.rsplit("/", 1)
        return ModelSpec(setting, lora, weights, required, repo=repo)
    return ModelSpec(setting, lora, LORA_WEIGHTS, required)


def check_model(spec: ModelSpec, hub: HubAccess) -> Check:
    """Whether the model is a usable local folder or file, in the hub cache, or on the hub."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    name = spec.setting
    path = Path(spec.name).expanduser()
    if path.is_file():
        return Check.ok(name, f"local file {path}")
    if path.is_dir():
        return _check_folder(spec, path)

    def missing(detail: str, fix: str) -> Check:
        if spec.required:
            return Check.fail(name, detail, fix)
        without = _WITHOUT.get(name, "this style is left out")  # IMAGINE_STYLES [name]
        return Check.warn(name, f"{detail}: serving without it ({without})", fix)

    repo = spec.repo or spec.name
    if spec.repo is None and spec.name.endswith(".safetensors"):
        return missing(f"no such file: {spec.name}", f"correct {name}, or empty it for none")
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return missing(
            f"'{spec.name}' is no folder here and no Hugging Face Hub id",
            f"set {name} to a local folder or a hub id such as owner/model",
        )
    cached = try_to_load_from_cache(repo, spec.probe, cache_dir=hub.cache_dir)
    if isinstance(cached, str):
        return Check.ok(name, f"{spec.name} is in the Hugging Face cache")
    download = (
        f"download it once where the hub can be reached (hf download {repo}) and copy the "
        f"cache over, or set {name} to a local folder"
    )
    if hub.offline:
        return missing(
            f"{spec.name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set, so "
            "nothing is downloaded",
            download,
        )
    try:
        get_hf_file_metadata(
            hf_hub_url(repo, spec.probe, endpoint=hub.endpoint),
            timeout=hub.timeout_s,
            endpoint=hub.endpoint,
        )
    except GatedRepoError:
        return missing(
            f"{repo} on {hub.endpoint} needs an access grant",
            "accept its terms on the model's hub page and set HF_TOKEN to a token of yours",
        )
    except RepositoryNotFoundError:
        return missing(
            f"{hub.endpoint} has no model {repo}", f"check the spelling of {name} ({spec.name})"
        )
    except RemoteEntryNotFoundError:
        return missing(
            f"{hub.endpoint} has {repo} but no {spec.probe} in it",
            f"set {name} to the repository of a model in diffusers format",
        )
    except Exception as exc:  # network errors, timeouts, 5xx: the hub cannot be asked now
        return missing(
            f"{spec.name} is not in the Hugging Face cache and {hub.endpoint} did not answer "
            f"({describe(exc)})",
            "check the network, or use a hub mirror (HF_ENDPOINT=https://hf-mirror.com), or "
            + download,
        )
    return Check.ok(
        name, f"{spec.name} is not cached yet: it is downloaded from {hub.endpoint} at start"
    )


def _check_folder(spec: ModelSpec, path: Path) -> Check:
    if spec.setting == "IMAGINE_LORA":
        found = any(path.glob("*.safetensors"))
        what = "a .safetensors file"
    else:
        found = (path / spec.probe).is_file()
        what = spec.probe
    if found:
        return Check.ok(spec.setting, f"local folder {path}")
    detail = f"the folder {path} has no {what}"
    fix = f"point {spec.setting} at a folder saved in diffusers/transformers format, or a hub id"
    if spec.required:
        return Check.fail(spec.setting, detail, fix)
    return Check.warn(spec.setting, f"{detail}: serving without it ({_WITHOUT[spec.setting]})", fix)


async def check_models(specs: Sequence[ModelSpec], hub: HubAccess) -> list[Check]:
    """``check_model`` for each, at the same time (each may wait for the hub)."""
    return list(await asyncio.gather(*(asyncio.to_thread(check_model, s, hub) for s in specs)))


# ------------------------------------------------------------------------------------ disk
def check_disk(
    path: Path,
    *,
    want_bytes: int = GIB,
    purpose: str = "torch.compile's cache may take",
    setting: str = "IMAGINE_DATA_DIR",
) -> Check:
    """Whether ``path`` can be written and has room: a failure below ``MIN_FREE_DISK``, a
    warning below ``want_bytes`` (what ``purpose`` may take, in words)."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    name = f"disk ({setting})"
    if not existing.is_dir():  # a file where a folder must be made: mkdir fails, even as root
        return Check.fail(
            name,
            f"{existing} is a file, so {path} cannot be made",
            f"set {setting} to a folder (or a path where one can be made)",
        )
    if not os.access(existing, os.W_OK):
        return Check.fail(
            name,
            f"{existing} cannot be written by this user",
            f"give this user write access there, or set {setting} to a folder it may write",
        )
    free = shutil.disk_usage(existing).free
    where = f"{free / GIB:.1f} GiB free at {path}"
    if free < MIN_FREE_DISK:
        return Check.fail(
            name, f"only {where}", f"free some space, or set {setting} to another disk"
        )
    if free < want_bytes:
        return Check.warn(
            name,
            f"{where}, less than the {want_bytes / GIB:.1f} GiB {purpose}",
            f"free some space, or set {setting} to a bigger disk",
        )
    return Check.ok(name, where)


# ----------------------------------------------------------------------------------- Redis
def redis_address(url: str) -> str:
    """``host:port/db`` of a Redis URL, never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path}"


async def check_redis(url: str, keys: StreamKeys, *, workers: bool) -> list[Check]:
    """Whether the Redis at ``url`` answers (and is recent enough); with ``workers``, also
    which GPU workers announce themselves there (their heartbeats)."""
    from engine.streams import connect

    where = redis_address(url)
    client = connect(url)
    try:
        try:
            info = await asyncio.wait_for(client.info("server"), REDIS_TIMEOUT_S)
        except Exception as exc:  # refused, timed out, wrong password, TLS: not usable
            return [_unusable_redis(where, exc)]
        version = str(info.get("redis_version", "0"))
        if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < REDIS_MIN_VERSION:
            return [
                Check.fail(
                    "Redis",
                    f"Redis {version} at {where} is too old (6.2 or later is needed)",
                    "upgrade Redis (Debian 12 ships 7.0)",
                )
            ]
        checks = [Check.ok("Redis", f"Redis {version} at {where}")]
        if workers:
            checks.append(await _check_workers(client, keys))
        return checks
    finally:
        await client.aclose()


def _unusable_redis(where: str, exc: BaseException) -> Check:
    from redis.exceptions import AuthenticationError, ResponseError

    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS"))
    ):
        return Check.fail(
            "Redis",
            f"the Redis at {where} refused the password ({describe(exc)})",
            "put its password in IMAGINE_QUEUE_URL (redis://:PASSWORD@host:port/0)",
        )
    reason = f"no answer in {REDIS_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError) else None
    return Check.fail(
        "Redis",
        f"cannot reach the Redis at {where} ({reason or describe(exc)})",
        "start Redis there (apt install redis-server, or docker run -p 127.0.0.1:6379:6379 "
        "redis:7), or correct IMAGINE_QUEUE_URL (README, Scaling out)",
    )


async def _check_workers(client, keys: StreamKeys) -> Check:
    names = sorted(await client.smembers(keys.workers))
    beats = await client.mget([keys.worker(n.decode()) for n in names]) if names else []
    live: list[WorkerBeat] = []
    foreign: list[str] = []
    for name, raw in zip(names, beats, strict=True):
        if raw is None:
            continue  # its heartbeat expired: gone
        beat = WorkerBeat.from_json(raw)
        if beat is None:
            foreign.append(name.decode(errors="replace"))
        else:
            live.append(beat)
    if foreign:
        return Check.warn(
            "GPU workers",
            f"{', '.join(foreign)} speak(s) another schema version: no work goes there",
            "run the same release on the bot and on every worker",
        )
    if not live:
        return Check.warn(
            "GPU workers",
            f"none online under IMAGINE_QUEUE_PREFIX={keys.prefix}: jobs are accepted and wait",
            "start python -m engine.worker on a GPU machine with the same IMAGINE_QUEUE_URL and "
            "IMAGINE_QUEUE_PREFIX",
        )
    listed = ", ".join(f"{b.name} ({b.capacity} images)" for b in live)
    return Check.ok("GPU workers", f"{len(live)} online: {listed}")


# ----------------------------------------------------------------------------------- ports
def check_port(host: str, port: int, setting: str) -> Check:
    """Whether ``host:port`` can be bound now (``port`` 0: the listener is off)."""
    if not port:
        return Check.ok(setting, "off")
    address = f"{host}:{port}"
    fix = (
        f"stop what listens there (ss -ltnp 'sport = :{port}' shows it; a running bot counts) "
        f"or choose another {setting} (0 = off)"
    )
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return Check.fail(setting, f"cannot listen on {address} ({exc.strerror})", fix)
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            # As aiohttp does, so that a port a stopped process left in TIME_WAIT counts free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                return Check.fail(setting, f"cannot listen on {address} ({reason})", fix)
    return Check.ok(setting, f"{address} is free")


# ---------------------------------------------------------------------------------- worker
async def worker_checks(worker, engine_settings: EngineSettings, hub: HubAccess) -> list[Check]:
    """What ``python -m engine.worker`` needs: GPU, models, disk, Redis, its metrics port.

    ``worker``: its ``engine.worker.WorkerSettings``.
    """
    checks = [await asyncio.to_thread(check_gpu, engine_settings)]
    specs = models_to_check(engine_settings, generation=True, translation=False)
    checks += await check_models(specs, hub)
    checks.append(await asyncio.to_thread(check_disk, worker.data_dir))
    checks += await check_redis(
        worker.queue_url.get_secret_value(), StreamKeys(worker.queue_prefix), workers=False
    )
    checks.append(check_port(worker.metrics_host, worker.metrics_port, "IMAGINE_METRICS_PORT"))
    return checks


def run_worker_doctor(worker, engine_settings: EngineSettings, out: TextIO = sys.stdout) -> int:
    """``python -m engine.worker doctor``: print the checks; the exit code (1: a failure)."""
    checks = asyncio.run(worker_checks(worker, engine_settings, HubAccess.current()))
    print(report(checks), file=out)
    return exit_code(checks)
