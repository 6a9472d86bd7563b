"""Invariant 1: kill the sync process (SIGKILL) at many points, restart it, and the store holds exactly the facts
of an uninterrupted run: no loss, no duplicate, on SQLite and on PostgreSQL.

The sync runs as a real ``kpigw sync`` subprocess against the e-office stand-in on loopback. Deterministic
kills use failpoints (``KPIGW_FAILPOINT=name:n`` SIGKILLs the process the n-th time it passes ``name``);
timed kills hit wherever the process happens to be.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.standins.eoffice import EOfficeState, create_eoffice_app
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.store import make_engine
from tests.conftest import empty_store, write_eoffice_source
from tests.spine_support import count, fact_state, rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[EOfficeState, RunningServer]]:
    state = EOfficeState(days=4)
    with serve_in_thread(create_eoffice_app(state)) as server:
        yield state, server


@pytest.fixture(scope="module")
def sources_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sources")
    # small pages so a sync has many page boundaries to die at; logs embedded to keep each run quick
    write_eoffice_source(directory, page_size=12, params={"kemNhatKy": "1"})
    return directory


def _sync(store: str, sources: Path, server: RunningServer, state: EOfficeState,
          failpoint: str | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    # a restart after SIGKILL waits for the killed run's lease to expire: keep the lease short
    env = {**os.environ, "EOFFICE_URL": server.url, "EOFFICE_PASSWORD": state.password, "KPIGW_LOG_LEVEL": "WARNING",
           "KPIGW_LEASE_SECONDS": "1.5"}  # fmt: skip
    env.pop("KPIGW_FAILPOINT", None)
    if failpoint:
        env["KPIGW_FAILPOINT"] = failpoint
    cmd = [sys.executable, "-m", "gateway.cli", "--database-url", store, "--sources-dir", str(sources), "sync",
           "eoffice"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> int:
    out, err = proc.communicate(timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"sync exited {proc.returncode}:\n{out.decode()}\n{err.decode()}")
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, sources_dir: Path,
              standin: tuple[EOfficeState, RunningServer]) -> dict[str, tuple[str, str]]:  # fmt: skip
    state, server = standin
    url = f"sqlite:///{tmp_path_factory.mktemp('ref')}/ref.db"
    assert _finish(_sync(url, sources_dir, server, state)) == 0
    facts = fact_state(make_engine(url))
    assert len(facts) > 50
    return facts


def _assert_same_as_reference(store: str, reference: dict[str, tuple[str, str]]) -> None:
    db = make_engine(store)
    try:
        assert fact_state(db) == reference
        # every fact was inserted exactly once and its versions are consecutive: no duplicate, no gap
        per_fact = rows(db, "SELECT fact_key, count(*) AS inserts FROM fact_change WHERE op = 'insert' "
                            "GROUP BY fact_key HAVING count(*) <> 1")  # fmt: skip
        assert per_fact == []
        assert count(db, "SELECT count(*) FROM fact_change WHERE op = 'insert'") == len(reference)
        assert count(db, "SELECT count(*) FROM sync_run WHERE outcome = 'running'") == 0
    finally:
        db.dispose()


FAILPOINTS = [
    "page_fetched:1",
    "page_archived:2",
    "facts_written:3",
    "before_commit:1",
    "before_commit:6",
    "page_committed:4",
    "page_archived:2,before_commit:9",  # two crashes in a row before the run completes
]


# Every failpoint on SQLite; on PostgreSQL the ones around the transaction boundary (each run costs seconds).
CASES = [pytest.param("sqlite", fp, id=f"sqlite-{fp}") for fp in FAILPOINTS] + [
    pytest.param("postgresql", fp, id=f"postgresql-{fp}")
    for fp in ("page_archived:2", "before_commit:6", "page_committed:4", "page_archived:2,before_commit:9")
]


@pytest.fixture
def crash_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return empty_store(request.param, request, tmp_path)


@pytest.mark.parametrize(("crash_store", "failpoint"), CASES, indirect=["crash_store"])
def test_killed_at_a_failpoint_then_restarted_equals_an_uninterrupted_run(
    failpoint: str, crash_store: str, sources_dir: Path, standin: tuple[EOfficeState, RunningServer],
    reference: dict[str, tuple[str, str]],
) -> None:  # fmt: skip
    state, server = standin
    store_url = crash_store
    for point in failpoint.split(","):
        assert _finish(_sync(store_url, sources_dir, server, state, failpoint=point)) == -signal.SIGKILL
    assert _finish(_sync(store_url, sources_dir, server, state)) == 0
    _assert_same_as_reference(store_url, reference)
    if failpoint.startswith("page_committed"):  # it died after committing pages: those were not read twice
        db = make_engine(store_url)
        assert count(db, "SELECT count(*) FROM raw_record") == count(
            db, "SELECT count(DISTINCT record_key || stream) FROM raw_record"
        )
        db.dispose()


def test_killed_at_random_moments_then_restarted_equals_an_uninterrupted_run(
    store_url: str, sources_dir: Path, standin: tuple[EOfficeState, RunningServer],
    reference: dict[str, tuple[str, str]],
) -> None:  # fmt: skip
    state, server = standin
    rng = random.Random(335)
    for _ in range(3):
        proc = _sync(store_url, sources_dir, server, state)
        time.sleep(rng.uniform(0.8, 2.5))  # imports take ~1 s; the sync itself a second or two
        proc.send_signal(signal.SIGKILL)
        _finish(proc)
    assert _finish(_sync(store_url, sources_dir, server, state)) == 0
    _assert_same_as_reference(store_url, reference)
