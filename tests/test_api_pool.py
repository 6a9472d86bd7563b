"""A pooled PostgreSQL connection that died (a restart, an idle timeout) is replaced, never answered as a 500.

The pool pings a connection at checkout only when it sat idle for more than ``PING_AFTER_IDLE_SECONDS`` or
the server has sent it something (gateway/store/db.py: a terminated backend's FATAL message and closed socket).
Each test kills every backend of the API's pool with ``pg_terminate_backend`` and asks again, on hot reads
and on plain routes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text

from gateway.runtime import Runtime
from gateway.store.db import PING_AFTER_IDLE_SECONDS
from tests.api_support import fact, make_runtime, new_key, put, serve
from tests.conftest import empty_store


@pytest.fixture
def pg_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(empty_store("postgresql", request, tmp_path), tmp_path)
    put(rt, [fact(n) for n in range(4)])
    yield rt
    rt.close()


def _kill_pool(runtime: Runtime) -> int:
    """Terminate every other backend connected to the runtime's database, and wait until they are gone
    (``pg_terminate_backend`` only signals: a request racing a backend's exit is a race in any pool); how many
    there were."""
    url = runtime.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [pid for (pid,) in conn.execute(f"SELECT pid {others}").fetchall()]
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while conn.execute(f"SELECT count(*) {others} AND pid = ANY(%s)", (pids,)).fetchone() != (0,):
            assert time.monotonic() < deadline, "terminated backends did not exit"
            time.sleep(0.02)
    return len(pids)


def test_a_connection_dead_after_an_idle_period_is_replaced(pg_runtime: Runtime) -> None:
    key = new_key(pg_runtime, "reader", ["SKHCN"])
    with serve(pg_runtime) as api:
        first = api.get("/v1/facts", key)
        assert first.status_code == 200
        fact_id = first.json()["items"][0]["id"]
        time.sleep(PING_AFTER_IDLE_SECONDS + 0.3)
        assert _kill_pool(pg_runtime) >= 1
        assert api.get(f"/v1/facts/{fact_id}", key).status_code == 200
        assert api.get("/v1/summaries", key, period="2026-01").status_code == 200


def test_a_connection_killed_a_moment_after_use_is_replaced(pg_runtime: Runtime) -> None:
    key = new_key(pg_runtime, "reader", ["SKHCN"])
    with serve(pg_runtime) as api:
        first = api.get("/v1/facts", key)
        assert first.status_code == 200
        assert _kill_pool(pg_runtime) >= 1  # no idle period: the server's goodbye on the socket is the sign
        again = api.get("/v1/facts", key)
        assert again.status_code == 200 and again.json()["items"]
        assert api.get(f"/v1/facts/{again.json()['items'][0]['id']}", key).status_code == 200
        assert api.get("/v1/summaries", key, period="2026-01").status_code == 200
        assert api.get("/v1/facts/changes", key).status_code == 200


def _kill_own_backend_at(runtime: Runtime, marker: str) -> list[str]:
    """Terminate a request's own backend just before its first statement containing ``marker`` runs (once):
    the statement then meets a closed socket, as when a server restarts in the middle of a request. Returns a
    list that gets the statement's text when the kill happened."""
    url = runtime.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    killed: list[str] = []

    @event.listens_for(runtime.db, "before_cursor_execute")
    def _kill(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if killed or marker not in statement:
            return
        killed.append(statement)
        pid = conn.connection.dbapi_connection.info.backend_pid
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))
            deadline = time.monotonic() + 10
            while other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() != (0,):
                assert time.monotonic() < deadline, "the terminated backend did not exit"
                time.sleep(0.01)

    return killed


def _audit_rows(runtime: Runtime, action: str) -> int:
    with runtime.db.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_log WHERE action = :a"), {"a": action}).scalar_one())


@pytest.mark.parametrize(
    ("path", "params", "action", "marker", "warm"),
    [
        # a cache hit: the audit insert that checks the entry is current, in autocommit
        ("/v1/facts", {}, "read_facts", "INSERT INTO audit_log", True),
        # a miss: its snapshot's first statement
        ("/v1/facts", {}, "read_facts", "FROM fact_change", False),
        ("/v1/facts/changes", {}, "read_changes", "FROM fact_change", False),
        ("/v1/summaries", {"period": "2026-01"}, "read_summaries", "FROM fact", False),
    ],
    ids=["page-cache-hit", "page-miss", "feed", "summary"],
)
def test_a_backend_killed_during_a_hot_read_is_retried_on_a_new_connection(
    pg_runtime: Runtime, path: str, params: dict[str, str], action: str, marker: str, warm: bool
) -> None:
    """Before, the read answered 500 and the client had to ask again. Now the read runs once more on a fresh
    connection. A killed autocommit audit insert may have committed before the socket closed, so the log can
    hold one more entry than the reads served, never one fewer: what the client's own retry of a 500 did."""
    key = new_key(pg_runtime, "reader", ["SKHCN"])
    with serve(pg_runtime) as api:
        if warm:
            assert api.get(path, key, **params).status_code == 200
        before = _audit_rows(pg_runtime, action)
        killed = _kill_own_backend_at(pg_runtime, marker)
        response = api.get(path, key, **params)
        assert killed, f"no statement with {marker!r} ran"
        assert response.status_code == 200, response.text
        assert response.json()["items"]
        assert api.get(path, key, **params).status_code == 200  # and the pool is sound afterwards
    assert _audit_rows(pg_runtime, action) - before in (2, 3)
