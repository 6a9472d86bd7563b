"""Cursor view and reset, in the manner of Kafka Connect's offsets API.

A reset needs the source **paused** and its lease free (Kafka Connect asks for a stopped connector): no sync
may commit a checkpoint over the new value. The reset itself runs under the source's lease, in one
transaction with its audit entry. ``to=None`` deletes the cursor, so the next sync starts from the stream's
configured ``start``; a time sets the cursor there, and the next sync reads from that time minus the stream's
look-back window. Backfill cursors (``backfill:<stream>``) are shown too and reset the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete

from gateway.ops._errors import Conflict, Invalid, NotFound
from gateway.ops.audit import record_action
from gateway.ops.control import read_controls
from gateway.store import leases
from gateway.store import records as rec_store

BACKFILL_PREFIX = "backfill:"


def lease_name(source: str) -> str:
    """The lease a replica holds while it schedules and syncs ``source`` (one replica at a time)."""
    return f"source:{source}"


def show(conn: Connection, *, source: str, sources: Collection[str]) -> list[dict[str, Any]]:
    if source not in sources:
        raise NotFound(f"no source named {source!r}")
    out = []
    for row in rec_store.list_cursors(conn, source):
        stream = str(row["stream"])
        out.append({"stream": stream, "kind": "backfill" if stream.startswith(BACKFILL_PREFIX) else "live",
                    "value": row["value"], "run_id": row["run_id"],
                    "updated_at": row["updated_at"].isoformat() if row["updated_at"] else None})  # fmt: skip
    return out


def reset(conn: Connection, *, source: str, streams: Sequence[str], known_streams: Collection[str],
          to: datetime | None, actor: str, now: datetime, sources: Collection[str]) -> list[dict[str, Any]]:
    """Set ``streams``' cursors of ``source`` (all ``known_streams`` when empty) to ``to`` (aware) or delete
    them (``None``); returns each stream's old and new value."""
    if source not in sources:
        raise NotFound(f"no source named {source!r}")
    allowed = set(known_streams) | {BACKFILL_PREFIX + s for s in known_streams}
    unknown = [s for s in streams if s not in allowed]
    if unknown:
        raise NotFound(f"{source!r} has no stream {unknown[0]!r}; streams: {', '.join(sorted(known_streams))}")
    streams = list(streams) or sorted(known_streams)
    if to is not None and to.tzinfo is None:
        raise Invalid("a cursor time must be timezone-aware")
    control = read_controls(conn).get(source)
    if control is None or not control.paused:
        raise Conflict(f"pause {source!r} first (kpigw sources pause {source}); a running sync would overwrite "
                       "the cursor", source=source)  # fmt: skip
    holder = f"ops:{actor}"
    if not leases.acquire(conn, lease_name(source), holder=holder, ttl=30.0, now=now):
        raise Conflict(f"{source!r} is still syncing on another replica (its lease is held); retry in a moment",
                       source=source)  # fmt: skip
    current = {r["stream"]: r["value"] for r in rec_store.list_cursors(conn, source)}
    changes = []
    for stream in streams:
        old = current.get(stream)
        if to is None:
            conn.execute(delete(rec_store.CURSOR).where(rec_store.CURSOR.c.source == source,
                                                        rec_store.CURSOR.c.stream == stream))  # fmt: skip
            new = None
        else:
            new = to.isoformat()
            rec_store.set_cursor(conn, source, stream, new, run_id=None, now=now)
        changes.append({"stream": stream, "old": old, "new": new})
    record_action(conn, actor=actor, action="reset_cursor", detail={"source": source, "changes": changes}, now=now)
    leases.release(conn, lease_name(source), holder=holder)
    return changes


def parse_time(text: str, *, default_tz: Any) -> datetime:
    """An ISO date or date-time; naive values are read in ``default_tz`` (Vietnam time for the CLI)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise Invalid(f"{text!r} is not an ISO date or date-time (e.g. 2026-01-05 or 2026-01-05T08:00)") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=default_tz)


__all__ = ["BACKFILL_PREFIX", "lease_name", "parse_time", "reset", "show"]
