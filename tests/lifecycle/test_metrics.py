"""lifecycle.metrics: the bot's job metrics, as an operator scrapes them from /metrics."""

from __future__ import annotations

import aiohttp
import pytest

from engine.monitoring import OpsServer
from lifecycle.metrics import JobMetrics


async def scrape(metrics: JobMetrics, health=lambda: {"ok": True}) -> set[str]:
    """The sample lines of ``metrics`` as served by an OpsServer on a loopback port."""
    server = await OpsServer.start("127.0.0.1", 0, metrics.registry, health)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    finally:
        await server.close()
    return {line for line in text.splitlines() if not line.startswith("#")}


async def test_counters_by_kind_and_reason() -> None:
    metrics = JobMetrics()
    metrics.accepted("imagine")
    metrics.accepted("imagine")
    metrics.accepted("upscale")
    metrics.posted("imagine", 4.2)
    metrics.failed("timeout")
    metrics.failed("timeout")
    metrics.failed("post")

    lines = await scrape(metrics)

    assert 'imagine_jobs_accepted_total{kind="imagine"} 2.0' in lines
    assert 'imagine_jobs_accepted_total{kind="upscale"} 1.0' in lines
    assert 'imagine_jobs_posted_total{kind="imagine"} 1.0' in lines
    assert 'imagine_jobs_failed_total{reason="timeout"} 2.0' in lines
    assert 'imagine_jobs_failed_total{reason="post"} 1.0' in lines
    assert not any(line.startswith('imagine_jobs_posted_total{kind="upscale"}') for line in lines)


async def test_latency_from_acceptance_to_posting() -> None:
    metrics = JobMetrics()
    metrics.posted("imagine", 0.4)
    metrics.posted("reroll", 2.5)
    metrics.posted("imagine", 1500.0)
    metrics.posted("imagine", -1.0)  # clocks that step back count as instant, not negative

    lines = await scrape(metrics)

    assert "imagine_job_latency_seconds_count 4.0" in lines
    assert "imagine_job_latency_seconds_sum 1502.9" in lines
    assert 'imagine_job_latency_seconds_bucket{le="0.5"} 2.0' in lines
    assert 'imagine_job_latency_seconds_bucket{le="3.0"} 3.0' in lines
    assert 'imagine_job_latency_seconds_bucket{le="600.0"} 3.0' in lines
    assert 'imagine_job_latency_seconds_bucket{le="1800.0"} 4.0' in lines
    assert 'imagine_job_latency_seconds_bucket{le="+Inf"} 4.0' in lines


async def test_batches_give_images_per_batch_and_gpu_seconds_per_image() -> None:
    metrics = JobMetrics()
    metrics.batch(4, 1.0)  # 0.25 s an image
    metrics.batch(8, 0.4)  # 0.05 s an image
    metrics.batch(128, 3840.0)  # 30 s an image

    lines = await scrape(metrics)

    assert "imagine_batch_images_count 3.0" in lines
    assert "imagine_batch_images_sum 140.0" in lines
    for le, count in (("1.0", 0), ("4.0", 1), ("8.0", 2), ("64.0", 2), ("128.0", 3)):
        assert f'imagine_batch_images_bucket{{le="{le}"}} {count:.1f}' in lines
    assert "imagine_gpu_seconds_per_image_count 3.0" in lines
    assert 'imagine_gpu_seconds_per_image_bucket{le="0.01"} 0.0' in lines
    assert 'imagine_gpu_seconds_per_image_bucket{le="0.05"} 1.0' in lines
    assert 'imagine_gpu_seconds_per_image_bucket{le="0.5"} 2.0' in lines
    assert 'imagine_gpu_seconds_per_image_bucket{le="30.0"} 3.0' in lines


async def test_queue_states_and_workers_are_gauges() -> None:
    metrics = JobMetrics()
    lines = await scrape(metrics)
    # Every state is there from the start, at 0, so a dashboard never has a gap.
    for state in ("queued", "released", "running"):
        assert f'imagine_queue_jobs{{state="{state}"}} 0.0' in lines
    assert "imagine_workers_online 0.0" in lines

    metrics.queue(queued=7, released=4, running=2)
    metrics.workers(3)
    metrics.queue(queued=5, released=4, running=1)  # gauges show the latest, not a sum
    lines = await scrape(metrics)

    assert 'imagine_queue_jobs{state="queued"} 5.0' in lines
    assert 'imagine_queue_jobs{state="released"} 4.0' in lines
    assert 'imagine_queue_jobs{state="running"} 1.0' in lines
    assert "imagine_workers_online 3.0" in lines


async def test_nothing_failed_shows_no_failure_series() -> None:
    metrics = JobMetrics()
    metrics.accepted("imagine")
    lines = await scrape(metrics)
    assert not any(line.startswith("imagine_jobs_failed") for line in lines)


async def test_healthz_next_to_the_job_metrics() -> None:
    metrics = JobMetrics()
    state = {"ok": False, "backend": "redis", "gpus": 0}
    server = await OpsServer.start("127.0.0.1", 0, metrics.registry, lambda: state)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as response:
                assert response.status == 503
                assert await response.json() == state
            state.update(ok=True, gpus=1)
            async with http.get(f"{server.url}/healthz") as response:
                assert response.status == 200
                assert await response.json() == state
            async with http.get(f"{server.url}/jobs") as response:
                assert response.status == 404
        assert server.addresses == [("127.0.0.1", server.port)]
    finally:
        await server.close()


def test_each_job_metrics_has_its_own_registry() -> None:
    # No process-wide default registry: many services (tests, several bots) in one process.
    first, second = JobMetrics(), JobMetrics()
    first.accepted("imagine")
    assert first.registry is not second.registry
    labels = {"kind": "imagine"}
    assert first.registry.get_sample_value("imagine_jobs_accepted_total", labels) == 1
    assert second.registry.get_sample_value("imagine_jobs_accepted_total", labels) is None


@pytest.mark.parametrize("images", [0, -1])
def test_an_empty_batch_does_not_divide_by_zero(images: int) -> None:
    metrics = JobMetrics()
    metrics.batch(images, 0.5)
    assert metrics.registry.get_sample_value("imagine_gpu_seconds_per_image_count") == 1
