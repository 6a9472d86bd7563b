"""The one retry policy: jittered exponential back-off, bounded by attempts and total time, honouring
``Retry-After``, counted in metrics. Only :class:`~gateway.errors.TransientError` is retried.

Tests make it instant with ``RetryPolicy.instant()``: a parameter, not a patch.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay

from gateway.errors import TransientError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    total_seconds: float = 120.0
    initial_wait: float = 0.5
    max_wait: float = 30.0
    jitter: float = 0.5
    sleep: Callable[[float], None] | None = None
    on_retry: Callable[[str, BaseException], None] = field(default=lambda _op, _exc: None)

    @classmethod
    def instant(cls, attempts: int = 5) -> RetryPolicy:
        return cls(attempts=attempts, initial_wait=0.0, max_wait=0.0, jitter=0.0, sleep=lambda _s: None)

    def with_observer(self, on_retry: Callable[[str, BaseException], None]) -> RetryPolicy:
        return replace(self, on_retry=on_retry)

    def wait_for(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return float(min(max(exc.retry_after, 0.0), self.max_wait)) if self.max_wait else 0.0
        base: float = min(self.initial_wait * 2.0 ** (state.attempt_number - 1), self.max_wait)
        return base + random.uniform(0, self.jitter * base)  # noqa: S311 - jitter, not crypto

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying transient failures; the last error is re-raised unchanged."""

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is not None:
                self.on_retry(operation, exc)

        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.total_seconds),
            wait=self.wait_for,
            reraise=True,
            before_sleep=before_sleep,
            sleep=self.sleep or time.sleep,
        )
        return retrying(fn)
