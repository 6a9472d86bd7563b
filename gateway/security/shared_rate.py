"""Per-client request counts shared by every replica, so N replicas do not allow N times a client's rate.

Each replica counts its requests per (client, minute) in memory and, every ``flush_every`` seconds on a
background thread, adds them to ``rate_window`` in the store (one upsert per active client) and reads back
every client's total for the current minute. :meth:`SharedCounts.count` is that total plus what this replica
counted since: exact for its own requests, at most one flush late for the other replicas'. The request path
never touches the store.

This is a fixed window per minute (a client may spend its minute's allowance at the end of one minute and again
at the start of the next); the per-replica token bucket of :class:`~gateway.security.ratelimit.RateLimiter`
still bounds bursts. Windows older than two minutes are deleted by the flush.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store.models import RateWindow

log = logging.getLogger("kpigw.api")
WINDOW = RateWindow.__table__  # type: ignore[attr-defined]


def minute_of(seconds: float) -> int:
    return int(seconds // 60)


class SharedCounts:
    def __init__(self, db: Engine, *, clock: Callable[[], float] = time.time, flush_every: float = 1.0) -> None:
        self._db = db
        self._clock = clock
        self._flush_every = flush_every
        self._lock = threading.Lock()
        self._minute = minute_of(clock())
        self._pending: Counter[str] = Counter()  # counted here, not yet in the store
        self._flushing: Counter[str] = Counter()  # being written by the flush in progress
        self._stored: dict[str, int] = {}  # every replica's total for ``_minute``, as of the last flush
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, client_id: str, minute: int) -> int:
        """Requests of ``client_id`` in ``minute`` across replicas (this replica's exactly, others' as of the
        last flush)."""
        with self._lock:
            self._roll(minute)
            return self._stored.get(client_id, 0) + self._flushing[client_id] + self._pending[client_id]

    def add(self, client_id: str, minute: int) -> None:
        with self._lock:
            self._roll(minute)
            self._pending[client_id] += 1

    def _roll(self, minute: int) -> None:
        if minute != self._minute:  # a new minute: counts start over (unflushed ones belong to the old one)
            self._minute, self._stored, self._pending, self._flushing = minute, {}, Counter(), Counter()

    def flush(self) -> None:
        """Add this replica's counts to the store and read every client's total for the current minute."""
        with self._lock:
            minute, deltas = self._minute, self._pending
            self._pending, self._flushing = Counter(), deltas
        try:
            with self._db.begin() as conn:
                if deltas:
                    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                    stmt = insert(WINDOW)
                    conn.execute(
                        stmt.on_conflict_do_update(
                            index_elements=["client_id", "minute"], set_={"count": WINDOW.c.count + stmt.excluded.count}
                        ),
                        [{"client_id": c, "minute": minute, "count": n} for c, n in sorted(deltas.items())],
                    )
                current = select(WINDOW.c.client_id, WINDOW.c.count).where(WINDOW.c.minute == minute)
                totals: dict[str, int] = {str(row[0]): int(row[1]) for row in conn.execute(current)}
                conn.execute(delete(WINDOW).where(WINDOW.c.minute < minute - 1))
        except Exception:
            with self._lock:  # keep the counts for the next flush; meanwhile they still count here
                if self._minute == minute:
                    self._pending.update(deltas)
                self._flushing = Counter()
            raise
        with self._lock:
            self._flushing = Counter()
            if self._minute == minute:
                self._stored = totals

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()  # an app started again after a stop (tests, a reloading server)
            self._thread = threading.Thread(target=self._run, name="kpigw-rate-flush", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.flush()  # the last counts go to the store, for the other replicas
        except Exception:
            log.warning("rate counts not flushed at shutdown", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self._flush_every):
            try:
                self.flush()
            except Exception:  # the store is away: limits fall back to this replica's counts until it is back
                log.warning("rate counts not flushed", exc_info=True)
