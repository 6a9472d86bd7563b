"""The sync pipeline's fast paths store and behave exactly like the plain paths they replace (no timing here).

- driver-level inserts (:mod:`gateway.store._upsert`) write the same raw column values as SQLAlchemy's
  statements, timestamps included, on SQLite and PostgreSQL;
- the date parser's positional fast path gives what the regex + groupdict path gave;
- fetching one page ahead on a worker thread yields the same pages and surfaces a fetch error unchanged;
- on PostgreSQL the engine refreshes the statistics of the tables a backfill grows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, text

from connectors.declarative.fieldmap import date_parser, strptime_pattern
from gateway.connector import Page
from gateway.errors import AuthError
from gateway.store._upsert import db_timestamp, fast_insert, fast_upsert, upsert
from gateway.store.db import make_engine, migrate
from gateway.store.facts import CHANGE, FACT
from gateway.store.records import QUARANTINE, RAW, QuarantineEntry, quarantine
from gateway.sync.engine import _one_page_ahead
from gateway.types import VN_TZ

ICT = timezone(timedelta(hours=7))


def _raw(conn: Connection, table: str, order: str) -> list[tuple[Any, ...]]:
    """Rows as the driver returns them (no SQLAlchemy result processing), minus the surrogate id."""
    return [tuple(r)[1:] for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {order}")]


def _fact_row(i: int, *, key: str, due: datetime | None) -> dict[str, Any]:
    now = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
    return {
        "id": i, "fact_key": key, "item_key": f"doc:{i}", "person_id": "p1", "role": "lead", "agency": "A",
        "unit": None if i % 2 else "A-1", "period": "2026-03", "product_code": "P1", "catalog_version": "v1",
        "rule_id": "r1", "units_scaled": 12_500 * i, "quantity_scaled": 10_000, "assigned": True,
        "completed": i % 2 == 0, "due_at": due, "done_at": None if i % 3 else due, "on_time": None if i % 2 else False,
        "delays": i, "failed_reviews": 0, "exempt": False, "source": "s", "stream": "st", "record_key": str(i),
        "lineage": '{"a":1}', "state": "active", "value_hash": f"h{i}", "version": 1, "change_seq": i,
        "created_at": now, "updated_at": now,
    }  # fmt: skip


def test_fast_insert_stores_what_sqlalchemy_stores(db: Engine) -> None:
    dues = [datetime(2026, 3, 5, 23, 59, 59, tzinfo=VN_TZ), datetime(2026, 1, 1, tzinfo=UTC), None,
            datetime(2025, 12, 31, 23, 0, 0, 1, tzinfo=ICT)]  # fmt: skip
    plain = [_fact_row(i, key=f"a{i}", due=d) for i, d in enumerate(dues, start=1)]
    fast = [_fact_row(i, key=f"b{i}", due=d) | {"id": i + 100} for i, d in enumerate(dues, start=1)]
    changes = [
        {"seq": n, "fact_id": n, "fact_key": f"k{n}", "op": "insert", "agency": "A", "period": "2026-03",
         "version": 1, "committed_at": datetime(2026, 3, 1, 1, 2, 3, tzinfo=ICT), "snapshot": "{}"}
        for n in (1, 2, 101, 102)
    ]  # fmt: skip
    with db.begin() as conn:
        conn.execute(FACT.insert(), plain)
        fast_insert(conn, FACT, [c.name for c in FACT.columns], fast)
        conn.execute(CHANGE.insert(), changes[:2])
        fast_insert(conn, CHANGE, [c.name for c in CHANGE.columns], changes[2:])
    with db.connect() as conn:
        rows = _raw(conn, "fact", "id")
        assert [r[1:] for r in rows[:4]] == [r[1:] for r in rows[4:]]  # all but fact_key identical, raw
        feed = [r[1:] for r in _raw(conn, "fact_change", "seq")]
        assert feed[0][1:] == feed[2][1:] and feed[1][1:] == feed[3][1:]
        # and SQLAlchemy reads both back as the same aware UTC datetimes
        due = conn.execute(text("SELECT due_at FROM fact ORDER BY id")).scalars().all()
        assert due[:4] == due[4:]


def test_fast_upsert_matches_upsert_including_conflicts(db: Engine) -> None:
    now = datetime(2026, 3, 1, 10, 0, tzinfo=ICT)
    later = now + timedelta(hours=1, microseconds=5)
    cols = ("source", "stream", "record_key", "content_hash", "payload", "fetched_at", "run_id")
    with db.begin() as conn:
        for stream, via_driver in (("plain", False), ("fast", True)):
            for moment, payload in ((now, "{}"), (later, '{"again":1}')):  # the second is a conflict: ignored
                row = {"source": "s", "stream": stream, "record_key": "k", "content_hash": "h", "payload": payload,
                       "fetched_at": moment, "run_id": None}  # fmt: skip
                if via_driver:
                    row["fetched_at"] = db_timestamp(conn, moment)
                    fast_upsert(conn, RAW, cols, [tuple(row[c] for c in cols)], conflict=cols[:4])
                else:
                    upsert(conn, RAW, [row], conflict=cols[:4])
    with db.connect() as conn:
        plain_row, fast_row = _raw(conn, "raw_record", "stream DESC")
        assert plain_row[2:] == fast_row[2:]


def test_fast_upsert_in_many_statements_keeps_row_order_semantics(db: Engine) -> None:
    """SQLite sends multi-row VALUES in chunks: a key repeated across and within chunks ends as its last row,
    exactly as row-by-row upserts would leave it, on both stores."""
    cols = ("source", "stream", "record_key", "item_key", "kind", "agency", "unit", "content_hash", "body",
            "match_status", "problems", "updated_at")  # fmt: skip
    from gateway.store.records import WORK

    with db.begin() as conn:
        stamp = db_timestamp(conn, datetime(2026, 3, 1, tzinfo=UTC))
        rows = [("s", "st", f"k{i % 700}", f"i{i}", "task", "A", None, f"h{i}", "{}", "mapped", None, stamp)
                for i in range(1_900)]  # fmt: skip
        fast_upsert(conn, WORK, cols, rows, conflict=cols[:3], update=cols[3:])
    with db.connect() as conn:
        stored = dict(conn.exec_driver_sql("SELECT record_key, item_key FROM work_item").fetchall())
    assert stored == {f"k{i % 700}": f"i{i}" for i in range(1_900)}


def test_quarantine_bumps_count_and_keeps_first_seen(db: Engine) -> None:
    first, second = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    entry = QuarantineEntry("s", "st", "k", "h", "{}", "map", "MappingError", "why")
    with db.begin() as conn:
        quarantine(conn, [entry], now=first)
        quarantine(conn, [entry], now=second)
    with db.connect() as conn:
        row = conn.execute(QUARANTINE.select()).one()
    assert (row.seen_count, row.first_seen_at, row.last_seen_at, row.status) == (2, first, second, "open")


@pytest.mark.parametrize("end_of_day", [False, True])
@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("dd/MM/yyyy HH:mm:ss", "01/09/2025 07:05:09"),
        ("dd/MM/yyyy HH:mm:ss", " 1/9/2025 7:05:09 "),  # short fields: the regex path
        ("dd/MM/yyyy", "03/09/2025"),
        ("yyyy-MM-dd HH:mm", "2025-12-31 23:59"),
        ("yyyyMMdd", "20250228"),
    ],
)
def test_date_parser_fields(fmt: str, value: str, end_of_day: bool) -> None:
    moment = date_parser(fmt, end_of_day=end_of_day)(value)
    digits = [int(x) for x in __import__("re").findall(r"\d+", value)]
    if fmt == "yyyyMMdd":
        digits = [int(value[:4]), int(value[4:6]), int(value[6:])]
    order = [t for t in ("yyyy", "MM", "dd", "HH", "mm", "ss") if t in fmt]
    order.sort(key=fmt.find)
    got = dict(zip(order, digits, strict=True))
    time_of_day = (23, 59, 59) if end_of_day and "HH" not in fmt else (got.get("HH", 0), got.get("mm", 0),
                                                                         got.get("ss", 0))  # fmt: skip
    assert moment == datetime(got["yyyy"], got["MM"], got["dd"], *time_of_day, tzinfo=VN_TZ)


def test_date_parser_rejects_what_it_rejected() -> None:
    parse = date_parser("dd/MM/yyyy HH:mm:ss")
    for bad in ("2025-09-01 07:05:09", "01/09/2025", "31/02/2025 00:00:00", "01/09/2025 07:05:0x",
                "05/09/2025 24:00:00"):  # fmt: skip
        with pytest.raises(ValueError, match=r"date format|day is out of range|hour must be in"):
            parse(bad)
    assert parse(None) is None and parse("") is None


def _pages(n: int, *, fail_at: int | None = None) -> Iterator[Page]:
    for i in range(n):
        if i == fail_at:
            raise AuthError("token refused", source="s")
        yield Page(records=[], checkpoint=str(i))


def test_one_page_ahead_yields_the_same_pages() -> None:
    assert [p.checkpoint for p in _one_page_ahead(_pages(5), "t")] == ["0", "1", "2", "3", "4"]
    assert list(_one_page_ahead(_pages(0), "t")) == []


def test_one_page_ahead_surfaces_the_fetch_error_after_the_good_pages() -> None:
    pages = _one_page_ahead(_pages(5, fail_at=2), "t")
    assert [next(pages).checkpoint, next(pages).checkpoint] == ["0", "1"]
    with pytest.raises(AuthError, match="token refused"):
        next(pages)


def test_one_page_ahead_is_bounded_and_closes_the_source_when_stopped_early() -> None:
    fetched: list[int] = []
    closed = threading.Event()

    def source() -> Iterator[Page]:
        try:
            for i in range(100):
                fetched.append(i)
                yield Page(records=[], checkpoint=str(i))
        finally:
            closed.set()

    pages = _one_page_ahead(source(), "t")
    first = next(pages)
    assert first.checkpoint == "0"
    pages.close()  # the consumer stops (a store error): the in-flight fetch finishes, the source is closed
    assert closed.is_set()
    assert len(fetched) <= 2  # never more than one page ahead


@settings(max_examples=300, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31)))
def test_date_fast_path_reads_what_the_regex_reads(moment: datetime) -> None:
    """Fixed-width texts take the fromisoformat path; padded ones the regex path: both read the same moment."""
    for fmt in ("dd/MM/yyyy HH:mm:ss", "dd/MM/yyyy", "yyyy-MM-dd HH:mm", "yyyyMMddHHmmss", "MM/dd/yyyy HH:mm:ss"):
        for end_of_day in (False, True):
            parse = date_parser(fmt, end_of_day=end_of_day)
            text_value = moment.strftime(strptime_pattern(fmt))
            assert parse(text_value) == parse(f" {text_value} ")
            assert parse(text_value).utcoffset() == timedelta(hours=7)


def test_postgresql_statistics_refresh_as_this_process_doubles_its_inserts(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A first backfill must not run on the empty tables' statistics (see SyncEngine._refresh_statistics)."""
    import time

    from gateway.metrics import Metrics
    from gateway.sync.engine import SyncEngine
    from tests.conftest import empty_store

    engine = make_engine(empty_store("postgresql", request, tmp_path))
    migrate(engine)
    sync = SyncEngine(engine=engine, valuer=lambda: cast(Any, None), metrics=Metrics())

    def analyzed() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'fact'").scalar_one())  # fmt: skip

    def settles_at(expected: int) -> int:
        deadline = time.monotonic() + 5  # statistics reach other sessions shortly after the ANALYZE
        while analyzed() != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return analyzed()

    sync._refresh_statistics(4_999)
    assert settles_at(0) == 0
    sync._refresh_statistics(1)  # 5,000 inserted: the first refresh
    assert settles_at(1) == 1
    sync._refresh_statistics(4_999)  # the next one comes at twice as many
    assert settles_at(1) == 1
    sync._refresh_statistics(1)
    assert settles_at(2) == 2
    engine.dispose()


def test_a_failed_statistics_refresh_does_not_fail_the_sync(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Another session holds a lock ANALYZE needs (a VACUUM, an index build): the refresh gives up quietly."""
    import psycopg

    from gateway.metrics import Metrics
    from gateway.sync.engine import SyncEngine
    from tests.conftest import empty_store

    url = empty_store("postgresql", request, tmp_path)
    engine = make_engine(url)
    migrate(engine)
    sync = SyncEngine(engine=engine, valuer=lambda: cast(Any, None), metrics=Metrics())
    with psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE fact IN SHARE UPDATE EXCLUSIVE MODE")  # what VACUUM or ANALYZE hold
        sync._refresh_statistics(10_000)  # waits at most the lock timeout, then logs and returns
    engine.dispose()


def test_sqlite_chunks_follow_the_linked_librarys_variable_limit(tmp_path: Path) -> None:
    """Some SQLite builds allow 999 variables per statement, or fewer: the chunks shrink to fit."""
    import sqlite3

    from gateway.store.records import WORK

    engine = make_engine(f"sqlite:///{tmp_path}/limit.db")
    migrate(engine)
    cols = ("source", "stream", "record_key", "item_key", "kind", "agency", "unit", "content_hash", "body",
            "match_status", "problems", "updated_at")  # fmt: skip
    with engine.begin() as conn:
        conn.connection.driver_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)  # type: ignore[union-attr]
        stamp = db_timestamp(conn, datetime(2026, 3, 1, tzinfo=UTC))
        rows = [("s", "st", f"k{i}", f"i{i}", "task", "A", None, "h", "{}", "mapped", None, stamp) for i in range(60)]
        fast_upsert(conn, WORK, cols, rows, conflict=cols[:3], update=cols[3:])  # 8 rows (96 variables) a chunk
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM work_item").scalar_one() == 60
    engine.dispose()
