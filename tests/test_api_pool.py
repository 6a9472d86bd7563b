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

import psycopg
import pytest

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
