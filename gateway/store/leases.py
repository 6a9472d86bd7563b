"""Leases: each source is synced by one replica at a time.

A lease is a row (``lease``) with a holder and an expiry, taken and renewed by one atomic
``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired OR mine`` statement, so it works the same on PostgreSQL
(many replicas) and SQLite (one process). A replica that dies stops renewing; after ``ttl`` another takes over.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, case, delete, or_
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store.models import Lease

LEASE = Lease.__table__  # type: ignore[attr-defined]


def acquire(conn: Connection, name: str, *, holder: str, ttl: float, now: datetime) -> bool:
    """Take or renew the lease ``name``; True when ``holder`` holds it afterwards."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(LEASE).values(name=name, holder=holder, acquired_at=now, expires_at=now + timedelta(seconds=ttl))
    upsert = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "holder": holder,
            "expires_at": stmt.excluded.expires_at,
            # a renewal keeps the original acquisition time; a takeover starts a new one
            "acquired_at": case((LEASE.c.holder == holder, LEASE.c.acquired_at), else_=stmt.excluded.acquired_at),
        },
        where=or_(LEASE.c.expires_at < now, LEASE.c.holder == holder),
    ).returning(LEASE.c.holder)
    row = conn.execute(upsert).first()
    return row is not None and row[0] == holder


def release(conn: Connection, name: str, *, holder: str) -> None:
    conn.execute(delete(LEASE).where(LEASE.c.name == name, LEASE.c.holder == holder))
