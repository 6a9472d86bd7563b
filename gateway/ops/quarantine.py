"""Quarantine: list, inspect, replay after a fix, discard with a reason. Every change is audited.

**Replay** takes an open entry's archived payload, re-normalizes it through the source connector's
``normalize`` (no network) and re-values it with the mappings in force now. If that goes through, the work item
and facts are written (:func:`gateway.store.facts.write_facts`, idempotent, closed periods respected) and the
entry is marked ``replayed``, all in one transaction with the audit row. If it fails again the entry stays
open with the new reason. Two kinds of entry are not replayed: ``fetch`` problems (a bad page or a failed
sub-request: the payload is incomplete; a sync reads the record again while it is within the stream's
look-back, and a backfill over its time reads it at any time) and versions that
a newer archived version of the record has superseded (closed as ``resolved``: replaying them would bring old
values back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select, update

from gateway.connector import Connector
from gateway.errors import RecordError
from gateway.ops._errors import Conflict, Invalid, NotFound
from gateway.ops.audit import record_action
from gateway.store import facts as fact_store
from gateway.store import records as rec_store
from gateway.sync.prepare import Valuer
from gateway.types import Fact, SourceRecord, WorkItem

Q = rec_store.QUARANTINE
_VIEW = ("id", "source", "stream", "record_key", "content_hash", "stage", "error_kind", "reason", "status",
         "seen_count", "first_seen_at", "last_seen_at", "resolved_at", "resolved_by", "resolution_note")  # fmt: skip


def _view(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {k: m[k].isoformat() if isinstance(m[k], datetime) else m[k] for k in _VIEW}


def list_entries(conn: Connection, *, source: str | None = None, status: str | None = "open",
                 stage: str | None = None, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:  # fmt: skip
    """Entries in id order (keyset paging with ``after``), without payloads."""
    stmt = select(*[Q.c[k] for k in _VIEW]).where(Q.c.id > after).order_by(Q.c.id).limit(limit)
    for column, value in (("source", source), ("status", status), ("stage", stage)):
        if value is not None:
            stmt = stmt.where(Q.c[column] == value)
    return [_view(r) for r in conn.execute(stmt)]


def get_entry(conn: Connection, entry_id: int) -> dict[str, Any]:
    """One entry with its payload (the record as archived, or the page body for a fetch problem)."""
    row = conn.execute(select(Q).where(Q.c.id == entry_id)).first()
    if row is None:
        raise NotFound(f"no quarantine entry {entry_id}")
    return {**_view(row), "payload": orjson.loads(row.payload)}


def discard(conn: Connection, *, entry_id: int, reason: str, actor: str, now: datetime) -> dict[str, Any]:
    """Close an open entry for good (a record that should never produce a fact); the reason is required."""
    if not reason.strip():
        raise Invalid("discarding needs a reason (--reason)")
    entry = get_entry(conn, entry_id)
    if entry["status"] != "open":
        raise Conflict(f"quarantine entry {entry_id} is {entry['status']}, not open")
    conn.execute(update(Q).where(Q.c.id == entry_id).values(
        status="discarded", resolved_at=now, resolved_by=actor, resolution_note=reason.strip()))  # fmt: skip
    record_action(conn, actor=actor, action="discard_quarantine", now=now,
                  detail={"id": entry_id, "source": entry["source"], "stream": entry["stream"],
                          "record_key": entry["record_key"], "reason": reason.strip()})  # fmt: skip
    entry = get_entry(conn, entry_id)
    entry.pop("payload")
    return entry


@dataclass
class ReplayOutcome:
    id: int
    outcome: str  # replayed | failed | skipped | superseded
    detail: str = ""
    facts_written: int = 0


@dataclass
class ReplayReport:
    outcomes: list[ReplayOutcome] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(o.outcome == outcome for o in self.outcomes)

    def as_dict(self) -> dict[str, Any]:
        counts = {k: self.count(k) for k in ("replayed", "failed", "skipped", "superseded")}
        return {**counts, "entries": [o.__dict__ for o in self.outcomes]}


def replay(db: Engine, *, ids: Sequence[int] = (), source: str | None = None, actor: str,
           now: datetime, connector_for: Callable[[str], Connector], valuer: Valuer,
           limit: int = 10_000) -> ReplayReport:  # fmt: skip
    """Replay the given entries, or every open entry of ``source``; one transaction per entry."""
    if not ids and source is None:
        raise Invalid("name the entries to replay or a source")
    with db.connect() as conn:
        if ids:
            targets = [int(i) for i in ids]
            found = {r[0] for r in conn.execute(select(Q.c.id).where(Q.c.id.in_(targets)))}
            missing = [i for i in targets if i not in found]
            if missing:
                raise NotFound(f"no quarantine entry {missing[0]}")
        else:
            stmt = select(Q.c.id).where(Q.c.source == source, Q.c.status == "open").order_by(Q.c.id).limit(limit)
            targets = [r[0] for r in conn.execute(stmt)]
    report = ReplayReport()
    connectors: dict[str, Connector] = {}
    try:
        for entry_id in targets:
            with db.begin() as conn:
                report.outcomes.append(_replay_one(conn, entry_id, actor=actor, now=now, valuer=valuer,
                                                   connector=lambda name: connectors.setdefault(
                                                       name, connector_for(name))))  # fmt: skip
    finally:
        for c in connectors.values():
            c.close()
    return report


def _replay_one(conn: Connection, entry_id: int, *, actor: str, now: datetime, valuer: Valuer,
                connector: Callable[[str], Connector]) -> ReplayOutcome:  # fmt: skip
    row = conn.execute(select(Q).where(Q.c.id == entry_id)).first()
    if row is None:
        return ReplayOutcome(entry_id, "skipped", "entry no longer exists")
    where = {"id": entry_id, "source": row.source, "stream": row.stream, "record_key": row.record_key}
    if row.status != "open":
        return ReplayOutcome(entry_id, "skipped", f"entry is {row.status}, not open")
    if row.stage == "fetch":
        return ReplayOutcome(entry_id, "skipped", "a fetch problem holds no complete record: a sync reads it again "
                             "only while it is within the stream's look-back; to read it now, run `kpigw backfill` "
                             "over its time (the live cursor stays) or `kpigw cursor reset`")  # fmt: skip
    raw = rec_store.RAW
    latest = conn.execute(
        select(raw.c.content_hash)
        .where(raw.c.source == row.source, raw.c.stream == row.stream, raw.c.record_key == row.record_key)
        .order_by(raw.c.id.desc()).limit(1)
    ).scalar()  # fmt: skip
    if latest is not None and latest != row.content_hash:
        note = "superseded by a newer version of the record"
        _close(conn, entry_id, status="resolved", actor=actor, now=now, note=note)
        record_action(conn, actor=actor, action="replay_quarantine", detail={**where, "outcome": "superseded"}, now=now)
        return ReplayOutcome(entry_id, "superseded", note)
    record = SourceRecord(row.source, row.stream, row.record_key, orjson.loads(row.payload))
    try:
        items = list(connector(row.source).normalize(record))
    except RecordError as exc:
        return _failed_again(conn, entry_id, where, "normalize", type(exc).__name__, exc.message, actor, now)
    facts: list[Fact] = []
    work: list[tuple[WorkItem, str, str | None]] = []
    reasons: list[str] = []
    for item in items:
        valuation = valuer.value(item, raw={"content_hash": row.content_hash})
        problems = [p for p in valuation.problems if p.quarantine]
        reasons.extend(f"{p.kind}: {p.detail}" for p in problems)
        facts.extend(valuation.facts)
        status = "unmatched" if valuation.unmatched else "partial" if problems else "mapped"
        work.append((item, status, "; ".join(f"{p.kind}: {p.detail}" for p in valuation.problems) or None))
    if reasons:
        return _failed_again(conn, entry_id, where, "map", "MappingError", "; ".join(reasons), actor, now)
    rec_store.save_work_items(conn, work, now=now)
    written = fact_store.write_facts(conn, origins=[(row.source, row.stream, row.record_key)], facts=facts, now=now)
    _close(conn, entry_id, status="replayed", actor=actor, now=now, note="replayed with the current mappings")
    record_action(conn, actor=actor, action="replay_quarantine", now=now,
                  detail={**where, "outcome": "replayed", "facts_written": written.written})  # fmt: skip
    return ReplayOutcome(entry_id, "replayed", f"{len(facts)} facts", written.written)


def _close(conn: Connection, entry_id: int, *, status: str, actor: str, now: datetime, note: str) -> None:
    conn.execute(update(Q).where(Q.c.id == entry_id).values(
        status=status, resolved_at=now, resolved_by=actor, resolution_note=note))  # fmt: skip


def _failed_again(conn: Connection, entry_id: int, where: dict[str, Any], stage: str, kind: str, reason: str,
                  actor: str, now: datetime) -> ReplayOutcome:  # fmt: skip
    conn.execute(update(Q).where(Q.c.id == entry_id).values(stage=stage, error_kind=kind, reason=reason,
                                                            last_seen_at=now))  # fmt: skip
    record_action(conn, actor=actor, action="replay_quarantine", now=now,
                  detail={**where, "outcome": "failed", "reason": reason})  # fmt: skip
    return ReplayOutcome(entry_id, "failed", reason)
