"""Per-client token buckets (per replica: N replicas allow up to N times the rate; size it accordingly)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.security.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, *, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._default = per_minute
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, client_id: str, per_minute: int | None = None) -> None:
        """Spend one token of ``client_id``; raise :class:`RateLimited` with the wait when there is none."""
        rate = (per_minute or self._default) / 60.0
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
            bucket.tokens -= 1.0
