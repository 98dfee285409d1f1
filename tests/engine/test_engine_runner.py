"""EngineRunner: the engine on one worker thread, results and progress back on the loop."""

from __future__ import annotations

import asyncio
import threading

from PIL import Image

from engine import EngineRunner, StepProgress, make_request


async def test_runner_end_to_end(tiny_engine, tiny_engine_settings) -> None:
    load_threads: list[str] = []

    def load():
        load_threads.append(threading.current_thread().name)
        return tiny_engine

    runner = EngineRunner(load)
    await runner.start()
    try:
        assert load_threads and load_threads[0].startswith("imagine-gpu")
        progress: list[tuple[StepProgress, bool]] = []

        def on_progress(step: StepProgress) -> None:
            progress.append((step, threading.current_thread() is threading.main_thread()))

        request = make_request("a cat", settings=tiny_engine_settings, seed=42, count=2)
        other = make_request("a dog", settings=tiny_engine_settings, seed=43, count=1)
        single, batch = await asyncio.gather(
            runner.generate(request, on_progress),
            runner.generate_batch([request, other]),
        )
        await asyncio.sleep(0)  # let forwarded callbacks scheduled last run
        assert single.seeds == (42, 43)
        assert [r.seeds for r in batch] == [(42, 43), (43,)]
        assert [p.step for p, _ in progress] == [1, 2, 3, 4]
        assert all(on_main for _, on_main in progress)

        encoded = await runner.encode([g.image for g in single.images], 10 * 2**20)
        assert [e.filename for e in encoded] == ["imagine_1.png", "imagine_2.png"]
    finally:
        await runner.close()


async def test_loop_stays_responsive_while_generating(tiny_engine, tiny_engine_settings):
    runner = EngineRunner(lambda: tiny_engine, warm_up=False)
    await runner.start()
    try:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        request = make_request("a cat", settings=tiny_engine_settings, seed=1)
        result = await runner.generate(request)
        ticker.cancel()
        assert len(result.images) == 4 and isinstance(result.images[0].image, Image.Image)
        assert ticks > 1  # the loop ran while the GPU thread worked
    finally:
        await runner.close()


async def test_close_waits_for_the_running_batch(tiny_engine, tiny_engine_settings) -> None:
    runner = EngineRunner(lambda: tiny_engine, warm_up=False)
    await runner.start()
    request = make_request("a cat", settings=tiny_engine_settings, seed=2, count=1)
    job = asyncio.create_task(runner.generate(request))
    await asyncio.sleep(0.01)
    await runner.close()
    assert job.done() or len((await job).images) == 1
    assert len((await job).images) == 1


async def test_images_encode_in_processes_that_are_replaced_when_they_die() -> None:
    """fpng holds the GIL, so encoding runs in processes; a dead one costs no result."""
    import io
    import os

    import numpy as np

    runner = EngineRunner(lambda: None, warm_up=False, encode_workers=2)
    pixels = [np.full((32, 48, 3), i * 40, dtype=np.uint8) for i in range(4)]
    try:
        encoded = await runner.encode(pixels, 2**20, stem="job9", indexes=[1, 2, 4, 5])
        assert [e.filename for e in encoded] == [f"job9_{i}.png" for i in (1, 2, 4, 5)]
        for e, expected in zip(encoded, pixels, strict=True):
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(e.data))), expected)
        processes = list(runner._encoder._processes.values())
        assert processes and all(p.pid != os.getpid() for p in processes)
        for process in processes:
            process.kill()
            process.join()
        again = await runner.encode(pixels[:1], 2**20)
        assert again[0].data == encoded[0].data
    finally:
        await runner.close()
