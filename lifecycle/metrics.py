"""What operators see of the job lifecycle on ``/metrics`` (Prometheus).

One ``JobMetrics`` per bot, with its own registry (never the process-wide default one, so tests
and several bots in one process do not collide). ``engine.monitoring.OpsServer`` serves it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine.monitoring import BATCH_BUCKETS, GPU_SECONDS_BUCKETS

# From a lone job on a warm GPU (~1 s) to one that waited behind a long queue (30 min).
LATENCY_BUCKETS = (0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300, 600, 1800)
QUEUE_STATES = ("queued", "released", "running")


class JobMetrics:
    """Counters, gauges and histograms of jobs: accepted, waiting, running, posted, failed.

    Cheap to build: every ``JobService`` gets one, whether or not anything serves it.
    """

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
            buckets=GPU_SECONDS_BUCKETS,
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
        """A job of ``kind`` (imagine, reroll, ...) was accepted."""
        self._accepted.labels(kind).inc()

    def posted(self, kind: str, latency_s: float) -> None:
        """A job's result was posted ``latency_s`` seconds after it was accepted."""
        self._posted.labels(kind).inc()
        self._latency.observe(max(0.0, latency_s))

    def failed(self, reason: str) -> None:
        """A job failed; ``reason`` is a short code (engine, timeout, post, restart, ...)."""
        self._failed.labels(reason).inc()

    def batch(self, images: int, gpu_seconds: float) -> None:
        """A batch of ``images`` took ``gpu_seconds`` on its GPU."""
        self._batch.observe(images)
        self._gpu.observe(max(0.0, gpu_seconds) / max(images, 1))

    def queue(self, queued: int, released: int, running: int) -> None:
        """Jobs now waiting in the bot, handed to a GPU backend but not started, generating."""
        for state, count in zip(QUEUE_STATES, (queued, released, running), strict=True):
            self._queue.labels(state).set(count)

    def workers(self, count: int) -> None:
        """``count`` GPUs are taking work now."""
        self._workers.set(count)
