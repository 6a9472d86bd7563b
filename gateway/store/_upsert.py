"""Set-based INSERT ... ON CONFLICT for SQLite and PostgreSQL, one statement per batch.

Two paths with the same semantics:

- :func:`upsert` builds the statement with SQLAlchemy from dict rows (bind processing per value; flexible);
- :func:`fast_upsert` sends one precompiled SQL string and plain tuples straight to the driver
  (``exec_driver_sql`` -> ``cursor.executemany``). The sync engine's big per-page writes use it: SQLAlchemy's
  per-row parameter construction and type processing cost more than the inserts themselves. Callers must
  pass values already in their stored form (see :func:`db_timestamp`).
- :func:`fast_insert` is the same for a plain INSERT of dict rows, converting the table's
  :class:`~gateway.store.models.UtcDateTime` columns itself (the fact inserts); :func:`insert_tuples` takes
  tuples already in stored form (the change feed's rows).

Both store exactly what the SQLAlchemy path stores (``tests/test_perf_paths.py`` compares the raw rows).
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store.models import UtcDateTime


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    conflict: Sequence[str],
    update: Sequence[str] | None = None,
    extra_updates: dict[str, Any] | None = None,
) -> None:
    """Insert ``rows``; on a conflict over ``conflict`` columns update ``update`` columns (or do nothing)."""
    if not rows:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table)
    if update or extra_updates:
        values: dict[str, Any] = {col: stmt.excluded[col] for col in update or ()}
        for col, expr in (extra_updates or {}).items():
            values[col] = expr(table, stmt.excluded) if callable(expr) else expr
        final = stmt.on_conflict_do_update(index_elements=list(conflict), set_=values)
    else:
        final = stmt.on_conflict_do_nothing(index_elements=list(conflict))
    conn.execute(final, list(rows))


def db_timestamp(conn: Connection, value: datetime) -> Any:
    """``value`` as :class:`gateway.store.models.UtcDateTime` + the driver would store it.

    SQLite: naive UTC rendered in SQLAlchemy's ``DateTime`` string format (always with microseconds), so rows
    written here compare and read back exactly like rows written through SQLAlchemy. PostgreSQL: aware UTC.
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; attach a timezone first")
    utc = value.astimezone(UTC)
    if conn.dialect.name != "sqlite":
        return utc
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}"
    )


def _conflict_clause(table: str, conflict: Sequence[str], update: Sequence[str], increment: str | None) -> str:
    sets = [f"{col} = excluded.{col}" for col in update]
    if increment is not None:
        sets.append(f"{increment} = {table}.{increment} + 1")
    return f" ON CONFLICT ({', '.join(conflict)}) DO " + (f"UPDATE SET {', '.join(sets)}" if sets else "NOTHING")


def _send(
    conn: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]], tail: str = ""
) -> None:
    """``INSERT INTO table (columns) VALUES (...) tail`` for every row: one ``executemany`` through the driver.

    (On PostgreSQL, multi-row ``VALUES`` batches measured no faster than psycopg's pipelined executemany.)
    Table and column names come from the models (never from data), so building the SQL text is safe.
    """
    names = ", ".join(columns)
    if conn.dialect.name != "sqlite":
        marks = ", ".join(["%s"] * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({marks}){tail}", list(rows))  # noqa: S608
        return
    # SQLite: multi-row VALUES, one statement per chunk. The driver releases the GIL around every statement
    # step; with executemany that is once per row, and a thread valuing the next page (see the sync engine)
    # then holds the GIL for a whole switch interval each time, so a page's inserts crawled. One step per
    # chunk also binds all values in one call.
    row_marks = "(" + ", ".join(["?"] * len(columns)) + ")"
    variables = conn.connection.driver_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[union-attr]
    per_chunk = max(1, min(_SQLITE_ROWS_PER_STATEMENT, variables // len(columns)))
    for start in range(0, len(rows), per_chunk):
        chunk = rows[start : start + per_chunk]
        values = ", ".join([row_marks] * len(chunk))
        flat = tuple(itertools.chain.from_iterable(chunk))
        conn.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES {values}{tail}", flat)  # noqa: S608


_SQLITE_ROWS_PER_STATEMENT = 250  # the variable limit of the linked SQLite (999 on some builds) may lower it


def fast_upsert(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    conflict: Sequence[str],
    update: Sequence[str] = (),
    increment: str | None = None,
) -> None:
    """:func:`upsert` for tuples in ``columns`` order, already in stored form; ``increment`` adds 1 on conflict."""
    if not rows:
        return
    q = conn.dialect.identifier_preparer.quote  # quotes only names that need it (reserved words)
    tail = _conflict_clause(q(table.name), [q(c) for c in conflict], [q(c) for c in update],
                            q(increment) if increment else None)  # fmt: skip
    _send(conn, q(table.name), [q(c) for c in columns], rows, tail)


def fast_insert(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """``conn.execute(table.insert(), rows)`` restricted to ``columns``, through the driver directly.

    Values go as they are except the table's ``UtcDateTime`` columns, converted by :func:`db_timestamp` (a
    page's rows share a few timestamps, so conversions are memoized per call).
    """
    if not rows:
        return
    cols = tuple(columns)
    stamped = [i for i, col in enumerate(cols) if isinstance(table.c[col].type, UtcDateTime)]
    pick = operator.itemgetter(*cols)  # one C call per row instead of a Python loop over the columns
    if len(cols) == 1:
        tuples = [(pick(row),) for row in rows]
    elif not stamped:
        tuples = [pick(row) for row in rows]
    else:
        memo: dict[datetime, Any] = {}
        tuples = []
        for row in rows:
            values = list(pick(row))
            for i in stamped:
                moment = values[i]
                if moment is not None:
                    stored = memo.get(moment)
                    if stored is None:
                        stored = memo[moment] = db_timestamp(conn, moment)
                    values[i] = stored
            tuples.append(tuple(values))
    insert_tuples(conn, table, cols, tuples)


def insert_tuples(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """A plain INSERT of tuples in ``columns`` order, already in stored form (see :func:`db_timestamp`)."""
    if not rows:
        return
    q = conn.dialect.identifier_preparer.quote
    if conn.dialect.name == "postgresql":
        _copy(conn, q(table.name), [q(c) for c in columns], rows)
    else:
        _send(conn, q(table.name), [q(c) for c in columns], rows)


def _copy(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """PostgreSQL: plain inserts (no conflict possible) as one ``COPY ... FROM STDIN`` in the same transaction.

    COPY streams the rows in one round trip instead of a pipelined statement per row (the fact and change-feed
    inserts of a page are thousands of rows).
    """
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
