"""Every Prometheus metric the gateway exports, in one place, on an injectable registry.

Labels are low-cardinality by construction: source, stream, operation (a stream or sub-request name from
configuration), outcome, status class, route template. Never a person, record or document id.
The table of metrics with their meaning lives in ``docs/operations.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SYNC_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


@dataclass
class SourceHealth:
    last_success: float | None = None
    circuit: int = 0  # 0 closed, 1 open, 2 half-open


class _FreshnessCollector(Collector):
    """Freshness is computed at scrape time, so a stalled source shows a growing lag without any sync running."""

    def __init__(self, health: dict[str, SourceHealth], clock: Callable[[], float]) -> None:
        self._health, self._clock = health, clock

    def collect(self) -> Iterator[Metric]:
        last = GaugeMetricFamily(
            "kpigw_source_last_success_timestamp_seconds",
            "Unix time of the source's last successful sync",
            labels=["source"],
        )
        lag = GaugeMetricFamily(
            "kpigw_source_freshness_lag_seconds", "Seconds since the source's last successful sync", labels=["source"]
        )
        circuit = GaugeMetricFamily(
            "kpigw_source_circuit_state", "Circuit per source: 0 closed, 1 open, 2 half-open", labels=["source"]
        )
        now = self._clock()
        for source, h in sorted(self._health.items()):
            circuit.add_metric([source], h.circuit)
            if h.last_success is not None:
                last.add_metric([source], h.last_success)
                lag.add_metric([source], now - h.last_success)
        yield last
        yield lag
        yield circuit


class _ScrapeHooks(Collector):
    def __init__(self, hooks: list[Callable[[], None]]) -> None:
        self._hooks = hooks

    def collect(self) -> Iterator[Metric]:
        for hook in self._hooks:
            hook()
        return iter(())

    def describe(self) -> Iterator[Metric]:  # no series of its own; keeps register() from calling collect()
        return iter(())


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    clock: Callable[[], float] = time.time
    health: dict[str, SourceHealth] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.registry
        self._scrape_hooks: list[Callable[[], None]] = []
        # Registered first, so the registry (which collects in registration order) runs the hooks before it
        # reads any gauge they set: values read from the store at scrape time (gateway.metrics_store).
        r.register(_ScrapeHooks(self._scrape_hooks))
        self.records = Counter(
            "kpigw_source_records_total",
            "Source records by pipeline outcome: read, archived, mapped, unmatched, quarantined",
            ["source", "stream", "outcome"],
            registry=r,
        )
        self.sync_runs = Counter(
            "kpigw_sync_runs_total", "Finished sync runs by outcome", ["source", "outcome"], registry=r
        )
        self.sync_duration = Histogram(
            "kpigw_sync_duration_seconds", "Duration of sync runs", ["source"], buckets=_SYNC_BUCKETS, registry=r
        )
        self.upstream_latency = Histogram(
            "kpigw_upstream_request_seconds",
            "Calls to source systems",
            ["source", "operation", "status_class"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "kpigw_upstream_retries_total", "Retried calls to source systems", ["source", "operation"], registry=r
        )
        self.facts_written = Counter(
            "kpigw_facts_written_total", "Fact inserts, updates and retractions", ["source", "op"], registry=r
        )
        self.facts_total = Gauge("kpigw_facts", "Facts in the store by state", ["state"], registry=r)
        self.quarantine_open = Gauge("kpigw_quarantine_open", "Open quarantine entries", ["source"], registry=r)
        self.sync_interval = Gauge(
            "kpigw_source_sync_interval_seconds",
            "Configured interval between syncs of the source",
            ["source"],
            registry=r,
        )
        self.lease_held = Gauge(
            "kpigw_source_lease_held",
            "1 while this replica holds the source's lease (it syncs the source)",
            ["source"],
            registry=r,
        )
        self.sync_running = Gauge(
            "kpigw_sync_running", "1 while a sync of the source runs on this replica", ["source"], registry=r
        )
        self.source_paused = Gauge(
            "kpigw_source_paused", "1 while an operator has the source paused", ["source"], registry=r
        )
        self.pages_prepared = Counter(
            "kpigw_sync_pages_prepared_total",
            "Pages prepared for the store (normalize, value, encode) by a worker process or by the engine's own",
            ["source", "where"], registry=r,
        )  # fmt: skip
        self.cursor_commits = Counter(
            "kpigw_offset_commits_total", "Cursor checkpoints committed", ["source", "stream"], registry=r
        )
        self.api_cache = Counter(
            "kpigw_api_cache_total", "Hot reads served from the response cache (hit) or the store (miss)",
            ["route", "outcome"], registry=r,
        )  # fmt: skip
        self.api_requests = Counter(
            "kpigw_api_requests_total", "API requests", ["route", "method", "status"], registry=r
        )
        self.api_latency = Histogram(
            "kpigw_api_request_seconds", "API request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        r.register(_FreshnessCollector(self.health, self.clock))

    def on_scrape(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at the start of every scrape (it must be quick and must not raise)."""
        self._scrape_hooks.append(hook)

    def source(self, name: str) -> SourceHealth:
        return self.health.setdefault(name, SourceHealth())

    def observe_request(self, source: str, operation: str, status_class: str, seconds: float) -> None:
        self.upstream_latency.labels(source, operation, status_class).observe(seconds)

    def retry_observer(self, source: str) -> Callable[[str, BaseException], None]:
        def on_retry(operation: str, _exc: BaseException) -> None:
            self.retries.labels(source, operation.partition(":")[2] or operation).inc()

        return on_retry
