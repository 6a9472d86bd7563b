"""Several replicas on one PostgreSQL, as real ``kpigw serve`` processes: each source is synced by one replica at
a time (no two runs overlap, whichever replica ran them), the replica that dies mid-run (SIGKILL at a failpoint)
is replaced once its lease expires, and the facts equal those of a single uninterrupted run."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest
import yaml

from gateway.metrics import Metrics
from gateway.retry import RetryPolicy
from gateway.runtime import build_runtime
from gateway.settings import Settings
from gateway.standins.eoffice import EOfficeState, create_eoffice_app
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.store import make_engine, migrate
from tests.conftest import ROOT, _reset_pg, write_eoffice_source
from tests.spine_support import fact_state, rows

pytestmark = pytest.mark.slow
LEASE = 2.0


@pytest.fixture
def standin() -> Iterator[tuple[EOfficeState, RunningServer]]:
    state = EOfficeState(days=3, token_ttl=300)
    with serve_in_thread(create_eoffice_app(state)) as server:
        yield state, server


def _sources(directory: Path) -> Path:
    path = write_eoffice_source(directory, page_size=8, params={"kemNhatKy": "1"})
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["schedule"] = {"interval": 0.5, "jitter": 0.1}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_one_replica_per_source_failover_and_facts_of_one_run(
    standin: tuple[EOfficeState, RunningServer], pg_server_url: str, tmp_path: Path
) -> None:
    state, server = standin
    _reset_pg(pg_server_url)
    sources = _sources(tmp_path / "sources")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[BinaryIO] = []

    def start(replica: str, failpoint: str | None = None) -> None:
        env = {**os.environ, "KPIGW_DATABASE_URL": pg_server_url, "KPIGW_SOURCES_DIR": str(sources),
               "KPIGW_MAPPINGS_DIR": str(ROOT / "mappings"), "KPIGW_REPLICA_ID": replica,
               "KPIGW_LEASE_SECONDS": str(LEASE), "KPIGW_PORT": str(_free_port()), "KPIGW_LOG_LEVEL": "WARNING",
               "EOFFICE_URL": server.url, "EOFFICE_USER": state.username,
               "EOFFICE_PASSWORD": state.password}  # fmt: skip
        env.pop("KPIGW_FAILPOINT", None)
        if failpoint:
            env["KPIGW_FAILPOINT"] = failpoint
        log = (tmp_path / f"{replica}.log").open("wb")
        logs.append(log)
        procs[replica] = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=log,
                                          stderr=subprocess.STDOUT)  # fmt: skip

    db = make_engine(pg_server_url)
    migrate(db)  # as a deployment does before starting replicas (they would race to it otherwise, safely)
    try:
        start("replica-1", failpoint="page_committed:5")  # dies in the middle of its first run
        _wait("replica-1's first run", lambda: bool(rows(db, "SELECT id FROM sync_run")))
        start("replica-2")
        _wait("replica-1 to die mid-run", lambda: procs["replica-1"].poll() is not None)
        died = time.time()
        assert procs["replica-1"].returncode == -signal.SIGKILL, (tmp_path / "replica-1.log").read_text()
        _wait("replica-2 to take over", lambda: bool(rows(
            db, "SELECT id FROM sync_run WHERE replica = 'replica-2' AND outcome IN ('success', 'partial')")))
        start("replica-3")  # a third replica joins: now two compete for every run
        _wait("runs by both survivors", lambda: len({r["replica"] for r in rows(
            db, "SELECT replica FROM sync_run WHERE outcome <> 'running' AND replica <> 'replica-1'")}) == 2,
            timeout=180)  # which replica wins each due run is a race: on a loaded box the newcomer may lose for a while
        state.advance(days=1)  # new and changed records reach the facts through whichever replica runs next
        advanced = time.time()
        _wait("a run after the change", lambda: bool(rows(
            db, "SELECT id FROM sync_run WHERE outcome IN ('success', 'partial') AND started_at > :t",
            t=_utc(advanced + 0.5))))  # fmt: skip
        for name in ("replica-2", "replica-3"):
            procs[name].send_signal(signal.SIGTERM)
        for name in ("replica-2", "replica-3"):
            # uvicorn shuts down gracefully, then re-raises the signal: -SIGTERM is a clean exit here
            assert procs[name].wait(timeout=30) in (0, -signal.SIGTERM), (tmp_path / f"{name}.log").read_text()

        runs = rows(db, "SELECT id, replica, started_at, finished_at, outcome, error_kind FROM sync_run ORDER BY "
                        "started_at")  # fmt: skip
        first = runs[0]
        assert first["replica"] == "replica-1" and first["error_kind"] == "abandoned"  # closed by its successor
        takeover = runs[1]
        assert takeover["replica"] == "replica-2" and takeover["started_at"].timestamp() > died - 0.3
        for before, after in itertools.pairwise(runs):  # never two runs of the source at once
            assert before["finished_at"] is not None and before["finished_at"] <= after["started_at"], (before, after)
        assert {r["replica"] for r in runs} == {"replica-1", "replica-2", "replica-3"}
        assert rows(db, "SELECT * FROM lease") == []  # SIGTERM released the leases
        got = fact_state(db)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
        db.dispose()

    settings = Settings(database_url=f"sqlite:///{tmp_path}/one.db", sources_dir=sources,
                        mappings_dir=ROOT / "mappings", scheduler=False)  # fmt: skip
    single = build_runtime(settings, retry=RetryPolicy.instant(), metrics=Metrics(),
                           env={"EOFFICE_URL": server.url, "EOFFICE_USER": state.username,
                                "EOFFICE_PASSWORD": state.password})  # fmt: skip
    try:
        connector = single.connector("eoffice")
        single.sync.run(connector)
        connector.close()
        expected = fact_state(single.db)
    finally:
        single.close()
    active = {k: h for k, (h, s) in got.items() if s == "active"}
    assert active == {k: h for k, (h, s) in expected.items() if s == "active"} and len(active) > 50


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
