"""Metrics read from the shared store at scrape time, so every replica reports the same values and they
survive restarts: open quarantine per source (``kpigw_quarantine_open``), facts by state (``kpigw_facts``) and
each source's last successful sync by *any* replica (feeding ``kpigw_source_last_success_timestamp_seconds``
and ``kpigw_source_freshness_lag_seconds``).

The queries are cheap (index scans, one ``GROUP BY`` over facts) and cached for ``min_interval`` seconds, so
several scrapers cost one round of queries. A store that cannot be read leaves the previous values in place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from datetime import datetime

from sqlalchemy import Engine, func, select

from gateway.metrics import Metrics
from gateway.store import records as rec_store
from gateway.store.facts import FACT

log = logging.getLogger("kpigw.metrics")
_OK_OUTCOMES = ("success", "partial")  # as the engine counts a success for freshness


class StoreMetrics:
    def __init__(self, *, db: Engine, metrics: Metrics, sources: Collection[str], min_interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._db, self._metrics, self._sources = db, metrics, sorted(sources)
        self._min_interval, self._clock = min_interval, clock
        self._last = float("-inf")
        self._lock = threading.Lock()

    def register(self) -> StoreMetrics:
        self._metrics.on_scrape(self.refresh)
        return self

    def refresh(self) -> None:
        with self._lock:
            if self._clock() - self._last < self._min_interval:
                return
            self._last = self._clock()
            try:
                self._read()
            except Exception:  # a scrape never fails because the store is down; /readyz reports that
                log.warning("metrics could not read the store", exc_info=True)

    def _read(self) -> None:
        q, run, m = rec_store.QUARANTINE, rec_store.RUN, self._metrics
        with self._db.connect() as conn:
            open_by_source: dict[str, int] = dict(conn.execute(
                select(q.c.source, func.count()).where(q.c.status == "open").group_by(q.c.source)).all())  # fmt: skip
            by_state: dict[str, int] = dict(
                conn.execute(select(FACT.c.state, func.count()).group_by(FACT.c.state)).all())  # fmt: skip
            last_ok: dict[str, datetime | None] = {}
            for source in self._sources:  # newest run first on the (source, id) index: stops at the first hit
                last_ok[source] = conn.execute(
                    select(run.c.finished_at).where(run.c.source == source, run.c.outcome.in_(_OK_OUTCOMES))
                    .order_by(run.c.id.desc()).limit(1)).scalar()  # fmt: skip
        for source in sorted(set(self._sources) | set(open_by_source)):
            m.quarantine_open.labels(source).set(open_by_source.get(source, 0))
        for state in sorted({"active", "retracted"} | set(by_state)):
            m.facts_total.labels(state).set(by_state.get(state, 0))
        for source, finished in last_ok.items():
            if finished is not None:
                health = m.source(source)
                health.last_success = max(health.last_success or 0.0, finished.timestamp())
