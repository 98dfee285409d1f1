"""What operators see of the job lifecycle on ``/metrics`` (Prometheus).

One ``JobMetrics`` per bot, with its own registry (never the process-wide default one, so tests
and several bots in one process do not collide). ``engine.monitoring.OpsServer`` serves it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300, 600, 1800)
GPU_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
QUEUE_STATES = ("queued", "released", "running")


class JobMetrics:
    """Counters, gauges and histograms of jobs: accepted, waiting, running, posted, failed."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._queue = Gauge(
            "imagine_queue_jobs",
            "Jobs by state: queued in the bot, released to a GPU backend, running on a GPU.",
            ["state"],
            registry=r,
        )
        self._accepted = Counter(
            "imagine_jobs_accepted", "Jobs accepted, by kind.", ["kind"], registry=r
        )
        self._posted = Counter("imagine_jobs_posted", "Jobs posted, by kind.", ["kind"], registry=r)
        self._failed = Counter(
            "imagine_jobs_failed", "Jobs failed, by reason.", ["reason"], registry=r
        )
        self._latency = Histogram(
            "imagine_job_latency_seconds",
            "Seconds from a job's acceptance to its posted result.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._gpu = Histogram(
            "imagine_gpu_seconds_per_image",
            "GPU seconds per image of each batch.",
            buckets=GPU_BUCKETS,
            registry=r,
        )
        self._batch = Histogram(
            "imagine_batch_images", "Images per GPU batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self._workers = Gauge(
            "imagine_workers_online", "GPUs taking work (1 in one-process mode).", registry=r
        )
        for state in QUEUE_STATES:
            self._queue.labels(state).set(0)

    def accepted(self, kind: str) -> None:
        self._accepted.labels(kind).inc()

    def posted(self, kind: str, latency_s: float) -> None:
        self._posted.labels(kind).inc()
        self._latency.observe(max(0.0, latency_s))

    def failed(self, reason: str) -> None:
        self._failed.labels(reason).inc()

    def batch(self, images: int, gpu_seconds: float) -> None:
        """A batch of ``images`` took ``gpu_seconds`` on its GPU."""
        self._batch.observe(images)
        self._gpu.observe(gpu_seconds / max(images, 1))

    def queue(self, queued: int, released: int, running: int) -> None:
        for state, count in zip(QUEUE_STATES, (queued, released, running), strict=True):
            self._queue.labels(state).set(count)

    def workers(self, count: int) -> None:
        self._workers.set(count)
