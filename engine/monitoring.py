"""A small web listener for operators: Prometheus ``/metrics`` and ``/healthz``.

The bot and every GPU worker can run one (``IMAGINE_METRICS_PORT``; off by default). It binds to
``IMAGINE_METRICS_HOST``, 127.0.0.1 unless the operator says otherwise: these endpoints are for
operators only, say how busy the GPUs are and how jobs fail, and are never served on a gallery's
public address. An operator who scrapes from another machine chooses a private address for them.
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

from engine.web_listener import WebListener

log = logging.getLogger(__name__)

Health = Callable[[], Mapping[str, object]]  # -> {"ok": bool, ...}; must not block or await

# Shared by the bot's and the workers' histograms, so that their dashboards line up.
GPU_SECONDS_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
TICKET_OUTCOMES = ("finished", "failed")


class OpsServer(WebListener):
    """Serves one registry's metrics and one health callable on ``host:port``.

    ``GET /metrics``: the registry in Prometheus' text format. ``GET /healthz``: ``health()`` as
    JSON, status 200 when its ``"ok"`` is truthy, else 503. Any other path: 404.
    Build it with ``await OpsServer.start(...)``; stop it with ``await server.close()``.
    """

    port_setting = "IMAGINE_METRICS_PORT"

    @classmethod
    async def start(
        cls, host: str, port: int, registry: CollectorRegistry, health: Health
    ) -> OpsServer:
        """Listen on ``host:port`` and serve ``registry`` and ``health``.

        Args:
            host: the address to bind; callers pass 127.0.0.1 unless the operator chose another.
            port: the port; 0 picks a free one (read it back from ``.port``).
            registry: what ``/metrics`` shows.
            health: called on each ``/healthz``; returns a JSON-able mapping with ``"ok"``.

        Returns:
            The started server.
        """
        app = web.Application()
        app.router.add_get("/metrics", _metrics_handler(registry))
        app.router.add_get("/healthz", _health_handler(health))
        server = await cls.listen(app, host, port)
        log.info("operator endpoints on %s/metrics and %s/healthz", server.url, server.url)
        return server


def _metrics_handler(registry: CollectorRegistry):
    async def metrics(request: web.Request) -> web.Response:
        # Rendering a registry of a few dozen samples takes well under a millisecond: inline.
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics


def _health_handler(health: Health):
    async def healthz(request: web.Request) -> web.Response:
        try:
            state = dict(health())
        except Exception as exc:
            # A health check that cannot tell is unhealthy; the traceback goes to the log.
            log.exception("the health check failed")
            state = {"ok": False, "error": type(exc).__name__}
        status = 200 if state.get("ok") else 503
        return web.Response(
            text=json.dumps(state, default=str), status=status, content_type="application/json"
        )

    return healthz


class WorkerMetrics:
    """What a GPU worker (``python -m engine.worker``) reports on its ``/metrics``.

    Tickets done by outcome, images per batch, GPU seconds per image, images held now. Each
    instance has its own registry (``.registry``), never the process-wide default one.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._tickets = Counter(
            "imagine_worker_tickets", "Tickets done, by outcome.", ["outcome"], registry=r
        )
        self._batch = Histogram(
            "imagine_worker_batch_images",
            "Images per GPU batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._gpu = Histogram(
            "imagine_worker_gpu_seconds_per_image",
            "GPU seconds per image of each batch.",
            buckets=GPU_SECONDS_BUCKETS,
            registry=r,
        )
        self._busy = Gauge(
            "imagine_worker_busy_images", "Images taken and not yet done.", registry=r
        )
        for outcome in TICKET_OUTCOMES:  # both series exist from the start, so rates work
            self._tickets.labels(outcome)

    def ticket(self, outcome: str) -> None:
        """One ticket is done: ``outcome`` is "finished" or "failed"."""
        if outcome not in TICKET_OUTCOMES:
            raise ValueError(f"unknown ticket outcome {outcome!r}")
        self._tickets.labels(outcome).inc()

    def batch(self, images: int, gpu_seconds: float) -> None:
        """A batch of ``images`` took ``gpu_seconds`` on the GPU."""
        self._batch.observe(images)
        self._gpu.observe(max(0.0, gpu_seconds) / max(images, 1))

    def busy(self, images: int) -> None:
        """The worker holds ``images`` images of work now (running or waiting for the GPU)."""
        self._busy.set(images)
