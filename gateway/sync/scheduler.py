"""The scheduler: runs each enabled source every ``interval`` (+ jitter), one replica at a time per source.

Before a run the replica takes the source's lease; a heartbeat renews it while the run lasts. A replica that
dies stops renewing, and another takes the source over once the lease expires. A circuit per source rests a
failing source. Sources can be paused, resumed and triggered by hand (API and CLI).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from gateway.connector import Connector
from gateway.metrics import Metrics
from gateway.sources import SourceSpec
from gateway.store import leases
from gateway.sync.circuit import Circuit
from gateway.sync.engine import RunReport, SyncEngine

log = logging.getLogger("kpigw.scheduler")


@dataclass
class _SourceState:
    spec: SourceSpec
    next_due: float
    circuit: Circuit = field(default_factory=Circuit)
    paused: bool = False
    running: Future[RunReport | None] | None = None
    last_report: RunReport | None = None


class Scheduler:
    def __init__(
        self,
        *,
        sources: dict[str, SourceSpec],
        engine: SyncEngine,
        db: Engine,
        connector_for: Callable[[SourceSpec], Connector],
        metrics: Metrics,
        replica: str,
        lease_seconds: float = 60.0,
        max_concurrent: int = 4,
        tick: float = 1.0,
    ) -> None:
        now = time.monotonic()
        self._states = {name: _SourceState(spec, next_due=now) for name, spec in sources.items()}
        self._engine, self._db, self._connector_for = engine, db, connector_for
        self._metrics, self._replica, self._lease_seconds, self._tick = metrics, replica, lease_seconds, tick
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="kpigw-sync")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kpigw-scheduler", daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def pause(self, source: str) -> None:
        self._states[source].paused = True

    def resume(self, source: str) -> None:
        self._states[source].paused = False

    def trigger(self, source: str) -> Future[RunReport | None]:
        """Run ``source`` now (unless it is already running here); returns the run's future."""
        with self._lock:
            state = self._states[source]
            if state.running is not None and not state.running.done():
                return state.running
            state.running = self._pool.submit(self._run, state, "manual")
            return state.running

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {"paused": s.paused, "running": s.running is not None and not s.running.done(),
                   "circuit": ("closed", "open", "half-open")[s.circuit.state]}
            for name, s in self._states.items()
        }

    # -- the loop ----------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            for state in self._states.values():
                if state.paused or not state.spec.enabled or now < state.next_due:
                    continue
                with self._lock:
                    if state.running is not None and not state.running.done():
                        continue
                    jitter = random.uniform(0, state.spec.jitter)  # noqa: S311 - spreading load, not crypto
                    state.next_due = now + state.spec.interval + jitter
                    if not state.circuit.allows():
                        continue
                    state.running = self._pool.submit(self._run, state, "schedule")

    def _run(self, state: _SourceState, trigger: str) -> RunReport | None:
        name = state.spec.name
        lease_name = f"source:{name}"
        with self._db.begin() as conn:
            if not leases.acquire(conn, lease_name, holder=self._replica, ttl=self._lease_seconds,
                                  now=datetime.now(UTC)):
                log.info("source is synced by another replica", extra={"source": name})
                return None
        beat = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(lease_name, beat), daemon=True)
        heartbeat.start()
        connector = self._connector_for(state.spec)
        try:
            report = self._engine.run(connector, trigger=trigger)
            state.last_report = report
            state.circuit.record(ok=report.outcome != "failed")
            return report
        except Exception:
            state.circuit.record(ok=False)
            log.exception("sync crashed", extra={"source": name})
            return None
        finally:
            self._metrics.source(name).circuit = state.circuit.state
            beat.set()
            heartbeat.join(timeout=5)
            connector.close()
            with self._db.begin() as conn:
                leases.release(conn, lease_name, holder=self._replica)

    def _heartbeat(self, lease_name: str, done: threading.Event) -> None:
        while not done.wait(self._lease_seconds / 3):
            try:
                with self._db.begin() as conn:
                    leases.acquire(conn, lease_name, holder=self._replica, ttl=self._lease_seconds,
                                   now=datetime.now(UTC))
            except Exception:  # a missed beat is retried on the next one; the lease outlives a few
                log.warning("lease renewal failed", extra={"lease": lease_name}, exc_info=True)
