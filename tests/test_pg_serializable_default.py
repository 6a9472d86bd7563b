"""A PostgreSQL server whose default isolation is SERIALIZABLE (some DBAs set it) serves the API and takes
fact writes under concurrency without serialization failures.

The statements the API runs in autocommit (a cache hit's audit entry, which checks the store version, and
the change feed's read and entry) then run as SERIALIZABLE transactions of their own, beside sync pages
that are SERIALIZABLE too. They cannot fail: an audit entry reads the change feed's tables that a sync
writes, but a sync never reads the audit log, so no cycle of read-write dependencies (what SERIALIZABLE
aborts) can form. Multi-statement reads name REPEATABLE READ themselves. This runs both for a few seconds.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.runtime import Runtime
from tests.api_support import fact, fresh_pg_database, make_runtime, new_key, put, serve


@pytest.fixture
def serializable_runtime(tmp_path: Path) -> Iterator[Runtime]:
    with fresh_pg_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            name = url.rsplit("/", 1)[1]
            conn.execute(f"ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'")
        rt = make_runtime(url, tmp_path)
        with rt.db.connect() as conn:
            assert conn.exec_driver_sql("SHOW default_transaction_isolation").scalar_one() == "serializable"
        put(rt, [fact(n) for n in range(40)])
        yield rt
        rt.close()


def test_reads_and_writes_under_a_serializable_default(serializable_runtime: Runtime) -> None:
    rt = serializable_runtime
    key = new_key(rt, "reader", ["SKHCN"], rate_per_minute=10**7)
    stop = time.monotonic() + 3
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()
    failures: list[str] = []
    writes = [0]

    def writer() -> None:
        while time.monotonic() < stop:
            n = writes[0] % 40
            try:
                put(rt, [fact(i, units=str(1 + writes[0] % 7)) for i in range(n, min(n + 5, 40))])
            except Exception as exc:  # the property under test: nothing fails
                failures.append(f"{type(exc).__name__}: {exc}")
                return
            writes[0] += 1

    with serve(rt) as api:

        def reader(path: str, params: dict[str, str]) -> None:
            while time.monotonic() < stop:
                statuses[(path, api.get(path, key, **params).status_code)] += 1

        reads = [("/v1/facts", {}), ("/v1/facts", {}), ("/v1/facts/changes", {}),
                 ("/v1/summaries", {"period": "2026-01"})]  # fmt: skip
        threads = [threading.Thread(target=writer)]
        threads += [threading.Thread(target=reader, args=read) for read in reads]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures
    assert writes[0] > 5
    assert {status for _, status in statuses} == {200}, statuses
    assert all(statuses[(path, 200)] > 5 for path in ("/v1/facts", "/v1/facts/changes", "/v1/summaries"))
