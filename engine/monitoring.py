"""A small web listener for operators: Prometheus ``/metrics`` and ``/healthz``.

The bot and every GPU worker can run one (``IMAGINE_METRICS_PORT``; off by default). It binds to
``IMAGINE_METRICS_HOST``, 127.0.0.1 unless the operator says otherwise: these endpoints are for
operators only and are never served on a gallery's public address.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

Health = Callable[[], Mapping[str, object]]


class OpsServer:
    """Serves one registry's metrics and one health callable on ``host:port``."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite, host: str, port: int):
        self._runner = runner
        self._site = site
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    async def start(
        cls, host: str, port: int, registry: CollectorRegistry, health: Health
    ) -> OpsServer:
        """Listen on ``host:port`` (port 0: a free one; see ``.port``)."""

        async def metrics(request: web.Request) -> web.Response:
            body = generate_latest(registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(request: web.Request) -> web.Response:
            state = dict(health())
            status = 200 if state.get("ok") else 503
            return web.Response(
                text=json.dumps(state, default=str), status=status, content_type="application/json"
            )

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = port
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            bound = server.sockets[0].getsockname()[1]
        log.info("metrics and health on http://%s:%s/metrics and /healthz", host, bound)
        return cls(runner, site, host, bound)

    async def close(self) -> None:
        await self._runner.cleanup()


class WorkerMetrics:
    """What a GPU worker reports: tickets by outcome, batch sizes, GPU time, busy images."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._tickets = Counter(
            "imagine_worker_tickets", "Tickets done, by outcome.", ["outcome"], registry=r
        )
        self._batch = Histogram(
            "imagine_worker_batch_images",
            "Images per GPU batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self._gpu = Histogram(
            "imagine_worker_gpu_seconds_per_image",
            "GPU seconds per image of each batch.",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self._busy = Gauge("imagine_worker_busy_images", "Images held now.", registry=r)

    def ticket(self, outcome: str) -> None:
        self._tickets.labels(outcome).inc()

    def batch(self, images: int, gpu_seconds: float) -> None:
        self._batch.observe(images)
        self._gpu.observe(gpu_seconds / max(images, 1))

    def busy(self, images: int) -> None:
        self._busy.set(images)
