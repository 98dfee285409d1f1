"""Engine test fixtures: one tiny engine per session (loading takes ~0.5 s)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    # The test machine has 2 cores shared with other test runs. Measured there: with 2 torch
    # threads under load the generation tests took 72 s (51 s CPU) against 12-25 s with 1,
    # because OpenMP threads spin waiting for a busy core. Tiny shapes gain nothing from more.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_engine(tiny_engine_settings):
    """The tiny SDXL pipeline with the tiny LoRA fused, on CPU."""
    from engine import Engine

    return Engine.load(tiny_engine_settings)
