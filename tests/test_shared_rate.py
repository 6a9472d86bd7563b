"""Rate limits shared by replicas through the store (gateway/security/shared_rate.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from gateway.security import RateLimiter
from gateway.security.errors import RateLimited
from gateway.security.shared_rate import SharedCounts

T0 = 1_800_000_000.0  # a wall-clock second at the start of a minute (divisible by 60)


class Wall:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def replica(db: Engine, wall: Wall) -> tuple[RateLimiter, SharedCounts]:
    shared = SharedCounts(db, clock=wall)
    return RateLimiter(per_minute=10, burst=100, shared=shared, wall_clock=wall), shared


def spend(limiter: RateLimiter, n: int) -> int:
    done = 0
    for _ in range(n):
        try:
            limiter.take("c1")
        except RateLimited:
            break
        done += 1
    return done


def test_two_replicas_allow_a_client_its_rate_not_twice_it(db: Engine) -> None:
    wall = Wall()
    (a, a_counts), (b, b_counts) = replica(db, wall), replica(db, wall)
    assert spend(a, 6) == 6
    a_counts.flush()
    b_counts.flush()  # b learns of a's six
    assert spend(b, 10) == 4  # 6 + 4 = the client's 10 a minute, over both replicas
    with pytest.raises(RateLimited, match="all replicas") as refused:
        b.take("c1")
    assert 0 < refused.value.retry_after <= 60
    b_counts.flush()
    a_counts.flush()
    assert spend(a, 1) == 0  # a now knows of b's four too
    assert spend(b, 1) == 0
    wall.now += 60  # a new minute: the allowance is back, and the old minutes are cleaned up
    assert spend(a, 3) == 3
    a_counts.flush()
    wall.now += 120
    a_counts.add("c1", int(wall.now // 60))
    a_counts.flush()
    with db.connect() as conn:
        minutes = [r[0] for r in conn.exec_driver_sql("SELECT minute FROM rate_window ORDER BY minute")]
    assert minutes == [int(wall.now // 60)]


def test_counts_survive_a_failed_flush(db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    wall = Wall()
    limiter, counts = replica(db, wall)
    assert spend(limiter, 4) == 4

    def store_away() -> None:
        raise ConnectionError("store away")

    monkeypatch.setattr(db, "begin", store_away)
    with pytest.raises(ConnectionError):
        counts.flush()
    assert counts.count("c1", int(T0 // 60)) == 4  # still counted here, and flushed later
    monkeypatch.undo()
    counts.flush()
    other = SharedCounts(db, clock=wall)
    other.flush()
    assert other.count("c1", int(T0 // 60)) == 4


def test_only_a_postgresql_store_shares_counts(store_url: str, tmp_path: Path) -> None:
    from gateway.api import create_app
    from tests.api_support import make_runtime

    runtime = make_runtime(store_url, tmp_path)
    app = create_app(runtime, start_scheduler=False)
    shared = app.state.rate_limiter.shared
    assert (shared is not None) == store_url.startswith("postgresql")
    runtime.close()
