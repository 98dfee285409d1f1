"""Engine test fixtures: one tiny engine per session (loading takes ~0.5 s)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _two_threads() -> None:
    # The test machine has 2 shared cores; more threads only add contention.
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_engine(tiny_engine_settings):
    """The tiny SDXL pipeline with the tiny LoRA fused, on CPU."""
    from engine import Engine

    return Engine.load(tiny_engine_settings)
