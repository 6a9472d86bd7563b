"""``bench/floors.py store-write`` rewrites every row a sync stored: it breaks loudly (and here) when the schema
gains a column or a table the floor does not copy, instead of measuring less than the sync writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench.floors import WRITTEN, store_write
from tests.conftest import RuntimeFactory


def test_store_write_floor_copies_every_row_the_sync_wrote(make_runtime: RuntimeFactory, tmp_path: Path) -> None:
    store = tmp_path / "synced.db"
    runtime = make_runtime(f"sqlite:///{store}")
    connector = runtime.connector("eoffice")
    try:
        report = runtime.sync.run(connector, trigger="test")
    finally:
        connector.close()
    assert report.read > 0  # "partial": the stand-in's few malformed records went to quarantine
    with sqlite3.connect(store) as conn:
        stored = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in WRITTEN}
    assert all(stored.values()), stored

    floor = store_write(store, "as-stored", pages=None)
    assert floor["rows"] == stored
    assert floor["records"] == stored["raw_record"]
    assert floor["wall_us_per_record"] > 0 and floor["records_per_s_at_most"] > 0
    lean = store_write(store, "facts-and-changes", pages=3)
    assert lean["rows"] == {"fact": stored["fact"], "fact_change": stored["fact_change"]} and lean["pages"] == 3


def test_feed_floor_pages_are_the_feed_and_its_snapshots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench/floors.py feed`` measures what it says: its ``rows`` page is the API's own feed page, its
    ``snapshots`` page the stored fact snapshots alone, in commit order (PostgreSQL, as the bench)."""
    import orjson

    from bench import floors
    from gateway.api.facts import list_changes
    from gateway.security.principal import Scope
    from tests.api_support import fact, fresh_pg_database, make_runtime, put

    with fresh_pg_database() as url:
        runtime = make_runtime(url, tmp_path)
        try:
            put(runtime, [fact(n) for n in range(5)])
            with runtime.db.connect() as conn:
                items, token, more = list_changes(conn, scope=Scope(None), after=None, limit=3)
            monkeypatch.setenv("KPIGW_FLOOR_DB", url)
            monkeypatch.setenv("KPIGW_FLOOR_MODE", "rows")
            assert floors._feed_page(0, 3) == orjson.dumps({"items": items, "next": token, "has_more": more})
            monkeypatch.setenv("KPIGW_FLOOR_MODE", "snapshots")
            page = orjson.loads(floors._feed_page(0, 3))
            assert page["items"] == [orjson.loads(orjson.dumps(i["fact"])) for i in items]
        finally:
            # the pages' connection of this thread (an engine, a psycopg connection), closed before the drop
            for name, close in (("engine", "dispose"), ("pg", "close")):
                held = floors._local.__dict__.pop(name, None)
                if held is not None:
                    getattr(held, close)()
            runtime.close()
