"""``python bench/sim_worker.py``: a GPU worker (``engine.worker``) on a simulated GPU.

The same worker as ``python -m engine.worker`` (settings from ``IMAGINE_*``, Redis from
``IMAGINE_QUEUE_URL``), but its engine is ``bench/simulated_gpu.SimulatedEngine``: it sleeps
``--seconds-per-image`` per image instead of loading SDXL, so a laptop can run several. For
bench/redis_bench.py and the Redis tests.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.simulated_gpu import SimulatedEngine
from engine.settings import EngineSettings
from engine.worker import WorkerSettings, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-image", type=float, default=0.05)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = WorkerSettings()
    engine_settings = EngineSettings(_env_file=None)
    code = asyncio.run(
        serve(settings, engine_settings, lambda: SimulatedEngine(args.seconds_per_image))
    )
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    main()
