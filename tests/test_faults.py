"""Faults survived: syncs through a fault-injecting proxy (latency, hangs, slow drips, resets, 5xx and 429 storms
with Retry-After, flapping, records changing between pages) and with the PostgreSQL connection killed mid-sync
end with exactly the facts of a clean run; deadlines bound every call; the circuit opens and recovers."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from sqlalchemy import event

from gateway.errors import SourceUnavailable
from gateway.metrics import Metrics
from gateway.retry import RetryPolicy
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.standins.eoffice import EOfficeState, create_eoffice_app
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.sync.circuit import CLOSED, OPEN, Circuit
from gateway.sync.scheduler import Scheduler
from tests.conftest import ROOT, _reset_pg, write_eoffice_source
from tests.faultproxy import Drip, FaultProxy, Hang, Latency, Mutate, Request, Reset, Status
from tests.spine_support import count, fact_state, metric, rows

LIMITS = {"connect_timeout": 1.0, "read_timeout": 0.5, "deadline": 1.5, "max_bytes": 4_000_000}
RETRY = RetryPolicy(attempts=8, total_seconds=30, initial_wait=0.01, max_wait=0.3, jitter=0.0)


@pytest.fixture
def standin() -> Iterator[tuple[EOfficeState, RunningServer]]:
    state = EOfficeState(days=3, token_ttl=300)
    with serve_in_thread(create_eoffice_app(state)) as server:
        yield state, server


@pytest.fixture
def proxy(standin: tuple[EOfficeState, RunningServer]) -> Iterator[FaultProxy]:
    with FaultProxy(standin[1].url) as p:
        yield p


def _runtime(tmp_path: Path, store: str, url: str, state: EOfficeState, *, name: str = "sources",
             page_size: int = 10) -> Runtime:  # fmt: skip
    directory = tmp_path / name
    path = write_eoffice_source(directory, page_size=page_size, params={"kemNhatKy": "1"})
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["limits"] = LIMITS
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    settings = Settings(database_url=store, sources_dir=directory, mappings_dir=ROOT / "mappings", scheduler=False)
    env = {"EOFFICE_URL": url, "EOFFICE_USER": state.username, "EOFFICE_PASSWORD": state.password}
    return build_runtime(settings, retry=RETRY, metrics=Metrics(), env=env)


def _sync_until_done(runtime: Runtime, *, runs: int = 8) -> list[str]:
    outcomes = []
    for _ in range(runs):
        connector = runtime.connector("eoffice")
        try:
            report = runtime.sync.run(connector)
        except Exception as exc:  # the store connection died mid-page: the run is left for the next one
            outcomes.append(type(exc).__name__)
            continue
        finally:
            connector.close()
        outcomes.append(report.outcome)
        if report.outcome != "failed":
            return outcomes
    raise AssertionError(f"no run finished: {outcomes}")


def _active(state: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {k: h for k, (h, s) in state.items() if s == "active"}


def _reconcile(runtime: Runtime, tmp_path: Path, server: RunningServer, state: EOfficeState) -> None:
    """The faulty store holds exactly the facts of a clean run against the source as it is now."""
    clean = _runtime(tmp_path, f"sqlite:///{tmp_path}/clean.db", server.url, state, name="clean-sources")
    try:
        _sync_until_done(clean, runs=1)
        expected = _active(fact_state(clean.db))
    finally:
        clean.close()
    got = _active(fact_state(runtime.db))
    assert got == expected and len(expected) > 50, (len(got), len(expected))
    twice = rows(runtime.db, "SELECT fact_key FROM fact_change WHERE op = 'insert' GROUP BY fact_key "
                             "HAVING count(*) > 1")  # fmt: skip
    assert twice == []
    assert count(runtime.db, "SELECT count(*) FROM sync_run WHERE outcome = 'running'") == 0


def test_a_sync_through_a_bad_network_ends_with_the_facts_of_a_clean_run(
    standin: tuple[EOfficeState, RunningServer], proxy: FaultProxy, tmp_path: Path
) -> None:
    state, server = standin
    runtime = _runtime(tmp_path, f"sqlite:///{tmp_path}/s.db", proxy.url, state)
    cycle = [None, Status(503, retry_after=0.05), Latency(0.1), Status(429, retry_after=0.1), None, Reset(),
             Drip(chunk=2048, every=0.01), Status(500), None, Hang(), Status(502)]  # fmt: skip

    def weather(request: Request) -> Any:
        return cycle[request.number % len(cycle)]

    proxy.policy(weather)
    try:
        outcomes = _sync_until_done(runtime)
        proxy.clear()
        for kind in (Status, Latency, Reset, Drip, Hang):
            assert proxy.faults_applied(kind) > 0, kind
        assert metric(runtime.metrics.registry, "kpigw_upstream_retries_total") >= proxy.faults_applied(Status)
        _reconcile(runtime, tmp_path, server, state)
        assert outcomes[-1] == "partial"
    finally:
        runtime.close()


def test_flapping_source_and_records_changing_between_pages(
    standin: tuple[EOfficeState, RunningServer], proxy: FaultProxy, tmp_path: Path
) -> None:
    state, server = standin
    runtime = _runtime(tmp_path, f"sqlite:///{tmp_path}/s.db", proxy.url, state)
    first_page = sorted(state.rows("van-ban-den"), key=lambda r: (r["ngayCapNhat"], r["id"]))[:3]

    def change() -> None:  # between pages one and two: three records of page one change
        state.move_deadline(first_page[0]["id"], (state.now + timedelta(days=9)).date())
        state.complete_late(first_page[1]["id"])
        state.move_deadline(first_page[2]["id"], (state.now + timedelta(days=4)).date())

    proxy.inject(Latency(0.0), Mutate(change), path="van-ban-den/danh-sach")  # before the second page
    # then flapping: down for 4 requests out of 10, retries and reruns carry it through
    proxy.policy(lambda r: Status(503, retry_after=0.01) if r.number % 10 < 4 else None)
    try:
        _sync_until_done(runtime)
        proxy.clear()
        _reconcile(runtime, tmp_path, server, state)
    finally:
        runtime.close()


def test_deadlines_bound_hangs_and_slow_drips(
    standin: tuple[EOfficeState, RunningServer], proxy: FaultProxy, tmp_path: Path
) -> None:
    state, _server = standin
    runtime = _runtime(tmp_path, f"sqlite:///{tmp_path}/s.db", proxy.url, state, page_size=100)
    runtime.retry = RetryPolicy.instant(attempts=1)
    try:
        for fault, bound in ((Hang(), LIMITS["read_timeout"]), (Drip(chunk=64, every=0.1), LIMITS["deadline"])):
            connector = runtime.connector("eoffice")
            proxy.inject(fault, path="danh-sach")
            started = time.monotonic()
            with pytest.raises(SourceUnavailable):
                next(iter(connector.read("incoming", None)))
            elapsed = time.monotonic() - started
            connector.close()
            assert bound <= elapsed + 0.05 and elapsed < bound + 1.0, (fault, elapsed)
    finally:
        runtime.close()


def test_the_circuit_opens_in_a_storm_and_closes_when_the_source_recovers(
    standin: tuple[EOfficeState, RunningServer], proxy: FaultProxy, tmp_path: Path
) -> None:
    state, server = standin
    runtime = _runtime(tmp_path, f"sqlite:///{tmp_path}/s.db", proxy.url, state)
    runtime.retry = RetryPolicy.instant(attempts=2)
    sources = {n: dataclasses.replace(s, interval=0.1, jitter=0.0) for n, s in runtime.sources.items()}
    scheduler = Scheduler(sources=sources, engine=runtime.sync, db=runtime.db, connector_for=runtime.connector,
                          metrics=runtime.metrics, replica="r1", lease_seconds=5, tick=0.05,
                          circuit_factory=lambda: Circuit(threshold=2, cooldown=1.0))  # fmt: skip
    circuit = scheduler._states["eoffice"].circuit
    proxy.policy(lambda _r: Status(503, retry_after=0))
    scheduler.start()
    try:
        deadline = time.monotonic() + 20
        while circuit.state != OPEN:
            assert time.monotonic() < deadline, "the circuit never opened"
            time.sleep(0.02)
        runs_when_open = count(runtime.db, "SELECT count(*) FROM sync_run")
        time.sleep(0.4)  # resting: no run while open, though the interval is 0.1 s
        assert count(runtime.db, "SELECT count(*) FROM sync_run") == runs_when_open
        assert metric(runtime.metrics.registry, "kpigw_source_circuit_state", source="eoffice") == OPEN
        proxy.clear()  # the source recovers; the half-open probe closes the circuit
        while circuit.state != CLOSED or count(runtime.db, "SELECT count(*) FROM sync_run WHERE outcome = "
                                                           "'partial'") == 0:  # fmt: skip
            assert time.monotonic() < deadline, "the circuit never closed"
            time.sleep(0.05)
    finally:
        scheduler.stop()
    _reconcile(runtime, tmp_path, server, state)
    runtime.close()


def test_the_postgresql_connection_killed_mid_sync(
    standin: tuple[EOfficeState, RunningServer], tmp_path: Path, pg_server_url: str
) -> None:
    """The gateway's own backend is terminated in the middle of a page's transaction, at several statements."""
    state, server = standin
    _reset_pg(pg_server_url)
    runtime = _runtime(tmp_path, pg_server_url, server.url, state)
    admin = pg_server_url.rsplit("/", 1)[0] + "/postgres"
    # the fact rows themselves go by COPY (no SQLAlchemy event), so the fact step is hit at its write lock
    plan = [("INSERT INTO raw_record", 2), ("pg_advisory_xact_lock", 3), ("INTO cursor", 4), ("UPDATE sync_run", 9)]
    seen = {"n": 0}
    killed: list[str] = []

    def kill_at_points(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not plan or plan[0][0] not in statement:
            return
        seen["n"] += 1
        if seen["n"] < plan[0][1]:
            return
        killed.append(plan.pop(0)[0])
        seen["n"] = 0
        pid = conn.connection.dbapi_connection.info.backend_pid
        with psycopg.connect(admin, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))

    event.listen(runtime.db, "before_cursor_execute", kill_at_points)
    try:
        outcomes = _sync_until_done(runtime, runs=10)
        assert len(killed) == 4 and outcomes[-1] == "partial" and len(outcomes) == 5, (killed, outcomes)
        assert set(outcomes[:-1]) == {"OperationalError"}
        event.remove(runtime.db, "before_cursor_execute", kill_at_points)
        _reconcile(runtime, tmp_path, server, state)
    finally:
        runtime.close()


def test_circuit_unit_transitions() -> None:
    now = [0.0]
    circuit = Circuit(threshold=2, cooldown=10, clock=lambda: now[0])
    circuit.record(ok=False)
    assert circuit.allows()
    circuit.record(ok=False)
    assert not circuit.allows() and circuit.state_name == "open"
    now[0] = 10.0
    assert circuit.allows() and circuit.state_name == "half-open"
    circuit.record(ok=False)  # the probe failed: open again, for longer
    now[0] = 25.0
    assert not circuit.allows()
    now[0] = 31.0
    assert circuit.allows()
    circuit.record(ok=True)
    assert circuit.state == CLOSED

