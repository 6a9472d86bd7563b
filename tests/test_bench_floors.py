"""``bench/floors.py store-write`` rewrites every row a sync stored: it breaks loudly (and here) when the schema
gains a column or a table the floor does not copy, instead of measuring less than the sync writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
