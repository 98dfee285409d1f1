"""engine.monitoring: the operators' listener (/metrics, /healthz) and a GPU worker's metrics."""

from __future__ import annotations

import errno
import json

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from engine.monitoring import OpsServer, WorkerMetrics
from engine.web_listener import ListenError


async def fetch(url: str) -> tuple[int, str, str]:
    """(status, content type header, body) of a GET."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


@pytest.fixture
async def worker_server():
    """A WorkerMetrics served on a free loopback port, healthy."""
    metrics = WorkerMetrics()
    server = await OpsServer.start("127.0.0.1", 0, metrics.registry, lambda: {"ok": True})
    try:
        yield metrics, server
    finally:
        await server.close()


async def test_metrics_page_shows_what_the_worker_recorded(worker_server) -> None:
    metrics, server = worker_server
    metrics.ticket("finished")
    metrics.ticket("finished")
    metrics.ticket("failed")
    metrics.batch(4, 0.8)
    metrics.batch(1, 0.05)
    metrics.busy(3)

    status, content_type, text = await fetch(f"{server.url}/metrics")

    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    lines = set(text.splitlines())
    assert 'imagine_worker_tickets_total{outcome="finished"} 2.0' in lines
    assert 'imagine_worker_tickets_total{outcome="failed"} 1.0' in lines
    assert "imagine_worker_batch_images_count 2.0" in lines
    assert "imagine_worker_batch_images_sum 5.0" in lines
    assert 'imagine_worker_batch_images_bucket{le="1.0"} 1.0' in lines
    assert 'imagine_worker_batch_images_bucket{le="4.0"} 2.0' in lines
    assert "imagine_worker_gpu_seconds_per_image_count 2.0" in lines
    # 0.8 s over 4 images and 0.05 s over 1: both per-image times are 0.2 s or less.
    assert 'imagine_worker_gpu_seconds_per_image_bucket{le="0.05"} 1.0' in lines
    assert 'imagine_worker_gpu_seconds_per_image_bucket{le="0.2"} 2.0' in lines
    assert "imagine_worker_busy_images 3.0" in lines


async def test_both_ticket_outcomes_are_shown_before_any_ticket(worker_server) -> None:
    _, server = worker_server
    _, _, text = await fetch(f"{server.url}/metrics")
    lines = set(text.splitlines())
    assert 'imagine_worker_tickets_total{outcome="finished"} 0.0' in lines
    assert 'imagine_worker_tickets_total{outcome="failed"} 0.0' in lines
    assert "imagine_worker_busy_images 0.0" in lines


def test_an_unknown_ticket_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome"):
        WorkerMetrics().ticket("done")


async def test_healthz_is_200_with_the_health_as_json_when_ok(worker_server) -> None:
    _, server = worker_server
    status, content_type, text = await fetch(f"{server.url}/healthz")
    assert status == 200
    assert content_type.startswith("application/json")
    assert json.loads(text) == {"ok": True}


async def test_healthz_is_503_when_not_ok() -> None:
    state = {"ok": True, "backend": "redis", "gpus": 2}
    server = await OpsServer.start("127.0.0.1", 0, CollectorRegistry(), lambda: state)
    try:
        assert (await fetch(f"{server.url}/healthz"))[0] == 200
        state.update(ok=False, gpus=0)  # health() is asked on every request
        status, _, text = await fetch(f"{server.url}/healthz")
    finally:
        await server.close()
    assert status == 503
    assert json.loads(text) == {"ok": False, "backend": "redis", "gpus": 0}


async def test_healthz_is_503_when_the_health_check_raises(caplog) -> None:
    def health() -> dict[str, object]:
        raise RuntimeError("redis went away")

    server = await OpsServer.start("127.0.0.1", 0, CollectorRegistry(), health)
    try:
        status, _, text = await fetch(f"{server.url}/healthz")
    finally:
        await server.close()
    assert status == 503
    assert json.loads(text) == {"ok": False, "error": "RuntimeError"}
    assert "health check failed" in caplog.text


async def test_any_other_path_is_404(worker_server) -> None:
    _, server = worker_server
    for path in ("/", "/nothing", "/metrics/extra", "/gallery"):
        assert (await fetch(f"{server.url}{path}"))[0] == 404, path


async def test_it_serves_the_registry_it_was_given_only() -> None:
    mine, other = CollectorRegistry(), CollectorRegistry()
    Counter("mine_things", "Things.", registry=mine).inc()
    Counter("other_things", "Things.", registry=other).inc()
    server = await OpsServer.start("127.0.0.1", 0, mine, lambda: {"ok": True})
    try:
        _, _, text = await fetch(f"{server.url}/metrics")
    finally:
        await server.close()
    assert "mine_things_total 1.0" in text.splitlines()
    assert "other_things" not in text
    assert "imagine_worker" not in text


async def test_a_loopback_host_binds_loopback_only_and_port_0_picks_a_free_port() -> None:
    server = await OpsServer.start("127.0.0.1", 0, CollectorRegistry(), lambda: {"ok": True})
    try:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.addresses == [("127.0.0.1", server.port)]
    finally:
        await server.close()


async def test_close_stops_listening() -> None:
    server = await OpsServer.start("127.0.0.1", 0, CollectorRegistry(), lambda: {"ok": True})
    url = f"{server.url}/healthz"
    await server.close()
    await server.close()  # a second close does nothing
    with pytest.raises(aiohttp.ClientConnectionError):
        await fetch(url)


async def test_a_taken_port_fails_to_start_naming_the_address_and_the_setting() -> None:
    first = await OpsServer.start("127.0.0.1", 0, CollectorRegistry(), lambda: {"ok": True})
    try:
        with pytest.raises(ListenError) as caught:
            await OpsServer.start("127.0.0.1", first.port, CollectorRegistry(), lambda: {})
    finally:
        await first.close()
    assert caught.value.errno == errno.EADDRINUSE
    assert caught.value.strerror == (
        f"Cannot listen on 127.0.0.1:{first.port} (Address already in use): free that port or "
        "choose another in IMAGINE_METRICS_PORT (0 = off)"
    )


def test_two_worker_metrics_do_not_collide() -> None:
    # Each has its own registry: a second one (another test, a restarted worker) is fine.
    first, second = WorkerMetrics(), WorkerMetrics()
    first.ticket("finished")
    assert first.registry.get_sample_value("imagine_worker_tickets_total", {"outcome": "finished"})
    assert not second.registry.get_sample_value(
        "imagine_worker_tickets_total", {"outcome": "finished"}
    )
