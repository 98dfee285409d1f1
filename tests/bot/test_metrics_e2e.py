"""IMAGINE_METRICS_PORT: the bot serves Prometheus /metrics and /healthz on its own listener."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp

from tests.bot.test_conversation_e2e import imagine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample(text: str, name: str) -> float:
    """The value of the one sample line ``name`` (with labels) in a /metrics page."""
    [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.rsplit(" ", 1)[1])


async def test_metrics_count_a_job_from_acceptance_to_posting(bot_process, standin, world):
    port = free_port()
    settings = bot_process.settings.model_copy(update={"metrics_port": port})
    await bot_process.start(settings)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
            health = json.loads(await response.text())
        assert health["ok"] and health["backend"] == "local" and health["gpus"] == 1

        await imagine(standin, world.alice, world.general, prompt="a counted fox")
        await imagine(standin, world.bob, world.general, prompt="another counted fox")
        # The result is on Discord a moment before its row says "done" and the count moves.
        for _ in range(100):
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 200
                text = await response.text()
            if sample(text, 'imagine_jobs_posted_total{kind="imagine"}') == 2:
                break
            await asyncio.sleep(0.05)
        async with http.get(f"{base}/nothing") as response:
            assert response.status == 404

    assert sample(text, 'imagine_jobs_accepted_total{kind="imagine"}') == 2
    assert sample(text, 'imagine_jobs_posted_total{kind="imagine"}') == 2
    assert sample(text, "imagine_job_latency_seconds_count") == 2
    assert sample(text, "imagine_job_latency_seconds_sum") > 0
    assert sample(text, "imagine_batch_images_sum") == 8  # two batches of 4 (or one of 8)
    assert sample(text, "imagine_gpu_seconds_per_image_count") >= 1
    assert sample(text, 'imagine_queue_jobs{state="queued"}') == 0
    assert sample(text, 'imagine_queue_jobs{state="running"}') == 0
    assert sample(text, "imagine_workers_online") == 1
    assert not [line for line in text.splitlines() if line.startswith("imagine_jobs_failed")]


async def test_metrics_are_off_unless_a_port_is_set(bot_process):
    bot = await bot_process.start()
    assert bot._ops is None
