"""Per-client rate limits: a token bucket per replica for bursts and, on a shared store, a per-minute count
summed over every replica (:mod:`gateway.security.shared_rate`), so N replicas still allow a client its rate,
not N times it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.security.errors import RateLimited
from gateway.security.shared_rate import SharedCounts, minute_of


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, *, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic,
                 shared: SharedCounts | None = None, wall_clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self._default = per_minute
        self._burst = burst
        self._clock = clock
        self._shared = shared
        self._wall_clock = wall_clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @property
    def shared(self) -> SharedCounts | None:
        return self._shared

    def take(self, client_id: str, per_minute: int | None = None) -> None:
        """Spend one request of ``client_id``; raise :class:`RateLimited` with the wait when it has none left."""
        limit = per_minute or self._default
        rate = limit / 60.0
        capacity = max(float(self._burst), 1.0)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(client_id)
            if bucket is None:
                bucket = self._buckets[client_id] = _Bucket(capacity, now)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
            if bucket.tokens < 1.0:
                wait = (1 - bucket.tokens) / rate
                raise RateLimited(f"client {client_id!r} is over its rate limit", retry_after=wait)
            if self._shared is not None:
                wall = self._wall_clock()
                minute = minute_of(wall)
                if self._shared.count(client_id, minute) >= limit:
                    raise RateLimited(f"client {client_id!r} is over its rate limit (all replicas)",
                                      retry_after=60 - wall % 60)  # fmt: skip
                self._shared.add(client_id, minute)
            bucket.tokens -= 1.0
