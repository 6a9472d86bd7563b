"""Set-based INSERT ... ON CONFLICT for SQLite and PostgreSQL, one statement per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


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
