"""SQLite store settings: page size for new files, page cache, WAL checkpoint limit in bytes, durability."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Engine

from gateway.store.db import (
    SQLITE_CACHE_KIB,
    SQLITE_CHECKPOINT_BYTES,
    SQLITE_PAGE_SIZE,
    make_engine,
    migrate,
)


def _pragmas(engine: Engine) -> dict[str, object]:
    names = ("page_size", "journal_mode", "synchronous", "cache_size", "wal_autocheckpoint")
    with engine.connect() as conn:
        return {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar_one() for name in names}


def test_a_new_store_gets_large_pages_and_keeps_wal_durability(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/new.db")
    migrate(engine)
    assert _pragmas(engine) == {
        "page_size": SQLITE_PAGE_SIZE,
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL
        "cache_size": -SQLITE_CACHE_KIB,
        "wal_autocheckpoint": SQLITE_CHECKPOINT_BYTES // SQLITE_PAGE_SIZE,
    }
    engine.dispose()


def test_an_existing_store_keeps_its_page_size_and_checkpoints_by_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:  # a store created before the larger pages: 4 KiB, already in WAL mode
        raw.execute("PRAGMA page_size=4096")
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("CREATE TABLE kept (x INTEGER)")
    raw.close()
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    settings = _pragmas(engine)
    assert (settings["page_size"], settings["wal_autocheckpoint"]) == (4096, SQLITE_CHECKPOINT_BYTES // 4096)
    engine.dispose()
