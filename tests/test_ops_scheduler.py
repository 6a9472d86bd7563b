"""Scheduling: interval and cron with jitter; pause, resume and trigger shared by replicas through the store;
one run at a time per source across schedulers; a run that loses its lease stops writing; backfill, resumable,
beside the live cursor, with a progress bar."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gateway.cli import main
from gateway.connector import Connector, Page
from gateway.errors import ConfigError
from gateway.ops import control
from gateway.runtime import Runtime
from gateway.standins.eoffice import EOfficeState
from gateway.sync.backfill import run_backfill
from gateway.sync.engine import SyncEngine
from gateway.sync.scheduler import Schedule, Scheduler
from gateway.types import VN_TZ
from tests.conftest import ROOT, RuntimeFactory
from tests.spine_support import count, fact_state, metric, rows

EMBEDDED_LOGS = {"kemNhatKy": "1"}


@pytest.fixture
def eoffice_state() -> EOfficeState:
    return EOfficeState(days=3, token_ttl=300)


def test_interval_and_cron_schedules_with_jitter() -> None:
    rng = random.Random(1)
    now = datetime(2026, 3, 2, 10, 2, 30, tzinfo=VN_TZ)
    every = Schedule(interval=60, jitter=5)
    assert all(60 <= every.delay(now, rng) <= 65 for _ in range(50))
    assert every.is_due(None, now) and every.is_due(now - timedelta(seconds=59), now)  # a bit early is fine
    assert not every.is_due(now - timedelta(seconds=30), now)
    cron = Schedule(cron="*/5 7-18 * * 1-6", jitter=0)
    assert cron.delay(now, rng) == 150.0  # 10:05 Vietnam time
    assert cron.delay(datetime(2026, 3, 2, 18, 58, tzinfo=VN_TZ), rng) == (12 * 60 + 2) * 60  # 07:00 next day
    assert cron.is_due(datetime(2026, 3, 2, 9, 59, tzinfo=VN_TZ), now)  # missed the 10:00 run
    assert not cron.is_due(datetime(2026, 3, 2, 10, 0, 5, tzinfo=VN_TZ), now)
    assert cron.nominal_seconds() in (300.0, 12 * 3600 + 300.0, 36 * 3600 + 300.0)
    with pytest.raises(ConfigError, match="cron"):
        Schedule(cron="every five minutes")
    with pytest.raises(ConfigError, match="interval"):
        Schedule(interval=0)


def _scheduler(runtime: Runtime, replica: str, *, lease: float = 5.0, connector: Any = None) -> Scheduler:
    """A replica's scheduler on the shared store, with its own engine (as a separate process would have)."""
    sources = {n: dataclasses.replace(s, jitter=0.0) for n, s in runtime.sources.items()}
    engine = SyncEngine(engine=runtime.db, valuer=lambda: runtime.mappings.current, metrics=runtime.metrics,
                        replica=replica)  # fmt: skip
    return Scheduler(sources=sources, engine=engine, db=runtime.db, connector_for=connector or runtime.connector,
                     metrics=runtime.metrics, replica=replica, lease_seconds=lease, tick=0.05)  # fmt: skip


def _settle(*schedulers: Scheduler) -> None:
    for s in schedulers:
        for state in s._states.values():
            if state.running is not None:
                state.running.result(timeout=60)


def test_replicas_share_pause_resume_and_trigger_and_run_one_at_a_time(
    store_url: str, make_runtime: RuntimeFactory
) -> None:
    runtime = make_runtime(store_url, params=EMBEDDED_LOGS)
    a, b = _scheduler(runtime, "replica-a"), _scheduler(runtime, "replica-b")
    now, names = datetime.now(UTC), runtime.sources
    try:
        with runtime.db.begin() as conn:
            control.pause(conn, source="eoffice", sources=names, actor="ops", now=now, reason="outage")
        a.tick(), b.tick()
        _settle(a, b)
        assert count(runtime.db, "SELECT count(*) FROM sync_run") == 0
        assert a.status()["eoffice"]["paused"] and b.status()["eoffice"]["paused"]
        assert metric(runtime.metrics.registry, "kpigw_source_paused", source="eoffice") == 1

        with runtime.db.begin() as conn:
            control.resume(conn, source="eoffice", sources=names, actor="ops", now=now)
        a.tick(), b.tick()  # both find it due; the lease and the store's schedule let one run
        _settle(a, b)
        a.tick(), b.tick()
        _settle(a, b)
        runs = rows(runtime.db, "SELECT replica, trigger, outcome FROM sync_run")
        assert len(runs) == 1 and runs[0]["trigger"] == "schedule" and runs[0]["outcome"] in ("success", "partial")

        with runtime.db.begin() as conn:  # a trigger received by any replica runs once, on one of them
            control.request_run(conn, source="eoffice", sources=names, actor="ops", now=datetime.now(UTC))
        b.tick(), a.tick()
        _settle(a, b)
        a.tick(), b.tick()
        _settle(a, b)
        assert [r["trigger"] for r in rows(runtime.db, "SELECT trigger FROM sync_run ORDER BY id")] == [
            "schedule", "manual"]  # fmt: skip
        assert count(runtime.db, "SELECT count(*) FROM lease") == 0  # released after each run
        assert metric(runtime.metrics.registry, "kpigw_sync_running", source="eoffice") == 0
        assert metric(runtime.metrics.registry, "kpigw_source_sync_interval_seconds", source="eoffice") == 60
    finally:
        a.stop(), b.stop()


class _SlowConnector:
    """The real connector, a little slower per page, so a run spans several lease renewals."""

    def __init__(self, inner: Connector, delay: float) -> None:
        self._inner, self._delay, self.name = inner, delay, inner.name

    def __getattr__(self, item: str) -> Any:
        return getattr(self._inner, item)

    def read(self, stream: str, cursor: str | None) -> Iterator[Page]:
        for page in self._inner.read(stream, cursor):
            time.sleep(self._delay)
            yield page


def test_a_run_that_loses_its_lease_stops_writing(make_runtime: RuntimeFactory, tmp_path: Path) -> None:
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db", page_size=5, params=EMBEDDED_LOGS)
    replica = _scheduler(runtime, "replica-a", lease=0.6,
                         connector=lambda spec: _SlowConnector(runtime.connector(spec), 0.15))  # fmt: skip
    try:
        replica.start()
        deadline = time.monotonic() + 30
        while count(runtime.db, "SELECT coalesce(sum(pages), 0) FROM sync_run") < 3:
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.02)
        with runtime.db.begin() as conn:  # another holder takes the lease (as after a missed renewal)
            conn.execute(text("UPDATE lease SET holder = 'replica-b', expires_at = :t"),
                         {"t": datetime.now(UTC) + timedelta(minutes=5)})  # fmt: skip
        future = replica._states["eoffice"].running
        assert future is not None
        report = future.result(timeout=30)
    finally:
        replica.stop()
    assert report is not None and report.outcome == "failed"
    assert {s.error_kind for s in report.streams if s.error} == {"Cancelled"}
    pages_done = count(runtime.db, "SELECT pages FROM sync_run")
    assert pages_done < 20  # it stopped well before the end (124 records in pages of 5)
    assert replica._states["eoffice"].circuit.failures == 0  # a cancelled run is not the source's fault
    holder = rows(runtime.db, "SELECT holder FROM lease")
    assert holder == [{"holder": "replica-b"}]  # it did not release a lease that is no longer its own


class _Interrupt(BaseException):
    """Stands for the operator's Ctrl-C or a killed process in the middle of a backfill."""


class _StopAfter:
    def __init__(self, pages: int) -> None:
        self.left, self.seen = pages, 0

    def advance(self, stream: str, reached: datetime | None, records: int) -> None:
        self.seen += 1
        self.left -= 1
        if self.left < 0:
            raise _Interrupt

    def close(self) -> None:
        return None


def test_backfill_resumes_where_it_stopped_and_leaves_the_live_cursor_alone(
    make_runtime: RuntimeFactory, tmp_path: Path, eoffice_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db", page_size=10, params=EMBEDDED_LOGS)
    start, end = datetime(2026, 1, 1, tzinfo=VN_TZ), datetime(2027, 1, 1, tzinfo=VN_TZ)
    connector = runtime.connector("eoffice")
    with pytest.raises(_Interrupt):
        run_backfill(engine=runtime.sync, db=runtime.db, connector=connector, start=start, end=end,
                     holder="backfill:test", lease_seconds=5, progress=_StopAfter(5))  # fmt: skip
    connector.close()
    first_pages = count(runtime.db, "SELECT pages FROM sync_run")
    assert count(runtime.db, "SELECT count(*) FROM cursor WHERE stream = 'backfill:incoming'") == 1
    assert count(runtime.db, "SELECT count(*) FROM cursor WHERE stream NOT LIKE 'backfill:%'") == 0
    assert count(runtime.db, "SELECT count(*) FROM lease") == 0

    # resumed through the CLI, with its progress bar
    for key, value in eoffice_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("gateway.cli._runtime", lambda _args: runtime)
    args = ["--database-url", f"sqlite:///{tmp_path}/s.db", "--mappings-dir", str(ROOT / "mappings"), "backfill",
            "eoffice", "--from", "2026-01-01", "--to", "2027-01-01"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr()
    assert "days" in out.err and "records" in out.err and "backfill run" in out.out
    runs = rows(runtime.db, "SELECT trigger, pages FROM sync_run ORDER BY id")
    assert [r["trigger"] for r in runs] == ["backfill", "backfill"]
    total_pages = len(EOfficeState(days=3).ids("van-ban-den")) // 10 + 1
    assert runs[1]["pages"] < total_pages + 6  # incoming resumed past its first pages (plus the other streams)
    assert first_pages >= 4

    # the result equals a live sync into a fresh store; the live cursor was never written
    assert count(runtime.db, "SELECT count(*) FROM cursor WHERE stream NOT LIKE 'backfill:%'") == 0
    live = make_runtime(f"sqlite:///{tmp_path}/live.db", page_size=10, params=EMBEDDED_LOGS)
    connector = live.connector("eoffice")
    try:
        live.sync.run(connector)
    finally:
        connector.close()
    assert fact_state(runtime.db) == fact_state(live.db) and len(fact_state(live.db)) > 50
    audit = rows(runtime.db, "SELECT action FROM audit_log")
    assert audit == [{"action": "backfill"}]
    assert main([*args, "--no-progress"]) == 0  # again: only the look-back tail of each stream, nothing new
    last = rows(runtime.db, "SELECT pages, facts_written FROM sync_run ORDER BY id DESC LIMIT 1")[0]
    assert last == {"pages": 3, "facts_written": 0}

