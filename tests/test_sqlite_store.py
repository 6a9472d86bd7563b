"""SQLite store settings (page size for new files, page cache, WAL limit in bytes) and the WAL checkpointer."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine

from gateway.store.db import (
    SQLITE_CACHE_KIB,
    SQLITE_CHECKPOINT_BYTES,
    SQLITE_PAGE_SIZE,
    WalCheckpointer,
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


def test_the_checkpointer_keeps_the_wal_small_while_writes_go_on_and_stops_after(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/ckpt.db")
    migrate(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE blob_rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    checkpointer = WalCheckpointer(engine, interval=0.005)
    wal = tmp_path / "ckpt.db-wal"
    largest = 0
    with checkpointer.active(), checkpointer.active():  # re-entrant: two syncs share one thread
        assert checkpointer.running
        for page in range(60):  # 60 "pages" of 0.5 MB: 30 MB through the WAL
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO blob_rows (body) VALUES " + ", ".join(["(?)"] * 10),
                                     tuple(f"{page}-{i}-" + "x" * 50_000 for i in range(10)))  # fmt: skip
            largest = max(largest, wal.stat().st_size)
            time.sleep(0.01)
    assert not checkpointer.running
    assert checkpointer.checkpoints > 0
    assert largest < 12 * 2**20, largest  # the WAL was reset behind the writer, far below 30 MB
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM blob_rows").scalar_one() == 600
    engine.dispose()


def test_the_checkpointer_is_a_no_op_where_there_is_no_wal_file() -> None:
    engine = make_engine("sqlite://")
    checkpointer = WalCheckpointer(engine)
    with checkpointer.active():
        assert not checkpointer.running
    engine.dispose()
