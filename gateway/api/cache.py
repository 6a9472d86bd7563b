"""A per-process cache of hot read responses whose invalidation is exact: every key carries the store's version.

A page of facts depends only on ``fact`` rows, and every change of a fact row is written with a new
``fact_change`` row (:func:`gateway.store.facts.write_facts` is the only writer of ``fact``), so the newest
change number is a version of everything a page can show. A summary depends on the facts, on the policies
frozen at period closures (``period_policy``) and on the current mappings' policies, so its version is (newest
change, frozen policies, reopenings, mappings version). A closure adds a frozen policy and a reopening removes
it, so their count alone could come back to an earlier value after a reopen and a close with another policy;
the number of reopenings only grows, so the pair never repeats. :func:`store_version` reads the first three
in one cheap query per request; when anything changed, the key is new and the old entries simply age out.

Keys also carry the caller's scope (as listed) and the normalized query, so two callers share an entry only
when they may see exactly the same rows. The audit entry is still written for every request, hit or miss,
with the row count kept beside the body. Each response says ``X-KPIGW-Cache: hit`` or ``miss`` so load tests
report the hit rate. Versions only grow, and the version is read before the data, so an entry holds the
store as of its version or newer; never older.
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


def store_version(conn: Connection) -> tuple[int, int, int]:
    """(newest change number, frozen period policies, reopenings): changes whenever a cached read could."""
    row = conn.execute(_VERSION).one()
    return int(row[0]), int(row[1]), int(row[2])


@dataclass(frozen=True)
class Cached:
    body: bytes
    rows: int  # for the audit entry of a hit


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
        if len(entry.body) > self.max_bytes // 8:  # one huge body must not flush everything else
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old.body)
            self._entries[key] = entry
            self._size += len(entry.body)
            while self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted.body)
