"""What the benchmark scripts share: the device they run on, the header of their results, and
the median time of a call."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def device_and_dtype(name: str | None) -> tuple[Any, Any]:
    """``--device`` (None: CUDA when there is one) and its dtype (fp16 on CUDA, fp32 on CPU).

    On the CPU torch gets one thread: toy shapes gain nothing from more, and on a shared CPU
    spinning OpenMP workers make a run several times slower (what the tests' engine does too).
    """
    import torch

    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(1)
    return device, torch.float16 if device.type == "cuda" else torch.float32


def run_header(device: Any, dtype: Any, **extra: Any) -> dict[str, Any]:
    """Where and with what a run was measured, as the first line of its results."""
    import torch

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dtype": str(dtype).removeprefix("torch."),
        **extra,
    }


def median_ms(run: Callable[[], Any], runs: int, device: Any) -> tuple[float, Any]:
    """Median milliseconds of ``run`` over ``runs`` calls after one untimed call (lazy set-up,
    first kernels), and what the last call returned. CUDA work is waited for in each time."""
    import torch

    result = run()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result
