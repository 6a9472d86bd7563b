"""A per-process cache of hot read responses whose invalidation is exact: every entry carries the store version
it was read at, and serves only while that is still the store's version.

A page of facts depends only on ``fact`` rows, and every change of a fact row is written with a new
``fact_change`` row (:func:`gateway.store.facts.write_facts` is the only writer of ``fact``), so the newest
change number is a version of everything a page can show. A summary depends on the facts, on the policies
frozen at period closures (``period_policy``) and on the current mappings' policies, so its version is (newest
change, frozen policies, reopenings, mappings version). A closure adds a frozen policy and a reopening removes
it, so their count alone could come back to an earlier value after a reopen and a close with another policy;
the number of reopenings only grows, so the pair never repeats, and neither does the whole version. The
mappings version is part of a summary's key; :func:`store_version` reads the other three in one cheap query.

Keys carry the caller's scope (as listed) and the normalized query, so two callers share an entry only when
they may see exactly the same rows; one entry per key, the newest read. Whether an entry is current is asked
of the store on every request: on SQLite by reading the version and comparing; on PostgreSQL by the audit
entry itself, inserted only if the version is still the entry's (:func:`gateway.api.audit.record_read_if_current`,
one statement in its own transaction), so a hit costs one round trip. When it is not, the read runs as a miss,
in one snapshot: version, data and audit entry. The audit entry is written for every request, hit or miss,
with the row count kept beside the body. Each response says ``X-KPIGW-Cache: hit`` or ``miss`` so load tests
report the hit rate.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from gateway.store.facts import CHANGE
from gateway.store.models import PeriodPolicy, PeriodReopening

POLICY = PeriodPolicy.__table__  # type: ignore[attr-defined]
REOPENING = PeriodReopening.__table__  # type: ignore[attr-defined]
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
_VERSION = select(
    select(func.coalesce(func.max(CHANGE.c.seq), 0)).scalar_subquery(),
    select(func.count()).select_from(POLICY).scalar_subquery(),
    select(func.count()).select_from(REOPENING).scalar_subquery(),
)


def store_version(conn: Connection) -> Version:
    """(newest change number, frozen period policies, reopenings): changes whenever a cached read could."""
    row = conn.execute(_VERSION).one()
    return int(row[0]), int(row[1]), int(row[2])


# The same three, compared with a version given as (%s, %s, %s), for a WHERE clause in driver SQL (psycopg).
VERSION_IS_PG = ("(SELECT coalesce(max(seq), 0) FROM fact_change) = %s"
                 " AND (SELECT count(*) FROM period_policy) = %s AND (SELECT count(*) FROM period_reopening) = %s")


Version = tuple[int, int, int]


@dataclass(frozen=True)
class Cached:
    body: bytes
    rows: int  # for the audit entry of a hit
    version: Version | None = None  # the store version the body was read at


def _newer(a: Version | None, b: Version | None) -> bool:
    """Whether version ``a`` was the store's after ``b``. The change number and the reopenings only grow, and
    with both unchanged only closures happened, which add frozen policies: so (changes, reopenings, policies)
    orders versions in time."""
    return a is not None and b is not None and (a[0], a[2], a[1]) > (b[0], b[2], b[1])


class ResponseCache:
    """Least-recently-used bodies up to ``max_bytes`` (0 disables it); thread-safe; counts hits and misses."""

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._size = 0
        self._entries: OrderedDict[Hashable, Cached] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: Hashable) -> Cached | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: Hashable, entry: Cached) -> None:
        with self._lock:
            kept = self._entries.get(key)
            if kept is not None and _newer(kept.version, entry.version):  # two misses raced: keep the later read
                return
            old = self._entries.pop(key, None)  # superseded even when this one is not kept: it is never current again
            if old is not None:
                self._size -= len(old.body)
            if len(entry.body) > self.max_bytes // 8:  # one huge body must not flush everything else
                return
            self._entries[key] = entry
            self._size += len(entry.body)
            while self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted.body)
