"""Reads of several statements see one state of the store, even when a sync commits between two of them.

A summary reads the store version (its cache key), the aggregate, the exempt facts and the frozen policies;
an export reads facts page by page and then two summaries; a page of facts reads the version and the page.
Under PostgreSQL's READ COMMITTED each statement saw the latest commit, so a sync committing between them
mixed two states: an exempt fact of a group the aggregate had not seen was a KeyError (500), and a page or
summary of the newer state was cached under the older version. Each test commits a write from inside the
read, just before the statement that would see it (a ``before_cursor_execute`` hook), and checks that the
response is the state the read started in, and that the next request (a new version) shows the write.

PostgreSQL only: on SQLite every transaction is ``BEGIN IMMEDIATE``, so the write would wait for the read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from gateway.runtime import Runtime
from tests.api_support import NOW, fact, make_runtime, new_key, put, serve
from tests.conftest import empty_store


@pytest.fixture
def pg_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(empty_store("postgresql", request, tmp_path), tmp_path)
    put(rt, [fact(n, exempt=n == 1) for n in range(8)])  # persons P0..P3 of SKHCN.VP, one exempt fact
    yield rt
    rt.close()


def _commit_before(runtime: Runtime, matches: Callable[[str], bool], write: Callable[[], None]) -> list[str]:
    """Run ``write`` (its own connection, committed) just before the first statement that ``matches``."""
    fired: list[str] = []

    def hook(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not fired and matches(statement):
            fired.append(statement)
            write()

    event.listen(runtime.db, "before_cursor_execute", hook)
    return fired


def _late_exempt_fact(runtime: Runtime) -> Callable[[], None]:
    """A sync page that adds a person (P9) whose only fact is exempt: a group the aggregate has not seen."""
    return lambda: put(runtime, [fact(100, person="P9", exempt=True)], now=NOW + timedelta(minutes=5))


def _exempt_query(statement: str) -> bool:
    """A summary's exempt-facts statement (an export's fact pages read the lineage too, but not by exemption)."""
    return "fact.lineage" in statement and "fact.exempt IS true" in statement and "GROUP BY" not in statement


@pytest.mark.parametrize("path", ["/v1/summaries", "/v1/export"])
def test_a_summary_never_mixes_two_states(pg_runtime: Runtime, path: str) -> None:
    key = new_key(pg_runtime, "reader", ["SKHCN"])
    query = {"period": "2026-01", "agency": "SKHCN", "unit": "SKHCN.VP"}
    query |= {"group_by": "person"} if path == "/v1/summaries" else {"format": "csv", "table": "summaries"}
    with serve(pg_runtime) as api:
        fired = _commit_before(pg_runtime, _exempt_query, _late_exempt_fact(pg_runtime))
        first = api.get(path, key, **query)
        assert fired, "the write did not run inside the read"
        assert first.status_code == 200, first.text  # was a 500: KeyError on P9's exempt fact
        assert "P9" not in first.text  # the state the read started in
        again = api.get(path, key, **query)  # a new version: the write shows, nothing stale is served
        assert again.status_code == 200 and "P9" in again.text
        if path == "/v1/summaries":
            assert again.headers["X-KPIGW-Cache"] == "miss"


def test_a_cached_page_is_the_state_of_its_version(pg_runtime: Runtime) -> None:
    key = new_key(pg_runtime, "reader", ["SKHCN"])
    with serve(pg_runtime) as api:
        fired = _commit_before(pg_runtime, lambda s: "fact_change.snapshot" in s, _late_exempt_fact(pg_runtime))
        first = api.get("/v1/facts", key, limit=500)
        assert fired and first.status_code == 200
        assert "P9" not in first.text  # under READ COMMITTED the newer page was cached under the older version
        again = api.get("/v1/facts", key, limit=500)
        assert again.headers["X-KPIGW-Cache"] == "miss" and "P9" in again.text


def test_one_fact_and_its_history_agree(pg_runtime: Runtime) -> None:
    key = new_key(pg_runtime, "reader", ["SKHCN"])
    with pg_runtime.db.connect() as conn:
        fact_id = conn.exec_driver_sql("SELECT id FROM fact WHERE item_key = 'SKHCN:doc3'").scalar_one()
    with serve(pg_runtime) as api:
        update = lambda: put(pg_runtime, [fact(3, units="7")], now=NOW + timedelta(minutes=5))  # noqa: E731
        fired = _commit_before(pg_runtime, lambda s: "FROM fact_change" in s and "fact_change.fact_id =" in s, update)
        found = api.get(f"/v1/facts/{fact_id}", key)
        assert fired and found.status_code == 200
        body = found.json()
        assert body["fact"]["version"] == body["history"][-1]["version"] == len(body["history"]) == 1
