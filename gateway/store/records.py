"""Raw archive, work items, cursors, sync runs and quarantine: the sync engine's writes and reads.

All functions take an open ``Connection`` so the engine decides the transaction: a page's archive, work items,
facts, quarantine entries and cursor commit together or not at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, select, update

from gateway.store._upsert import db_timestamp, fast_upsert, upsert
from gateway.store.models import CursorRow, QuarantineRow, RawRecord, SyncRun, WorkItemRow
from gateway.types import SourceRecord, WorkItem

RAW = RawRecord.__table__  # type: ignore[attr-defined]
WORK = WorkItemRow.__table__  # type: ignore[attr-defined]
CURSOR = CursorRow.__table__  # type: ignore[attr-defined]
RUN = SyncRun.__table__  # type: ignore[attr-defined]
QUARANTINE = QuarantineRow.__table__  # type: ignore[attr-defined]


def encode_payload(payload: Any) -> tuple[str, str]:
    """A payload's JSON as the source sent it (its keys in the source's order) and its content hash, taken over
    the canonical JSON (sorted keys: equal content, equal hash, whatever the order).

    The archive keeps the source's order so that re-mapping from it (``kpigw remap``, quarantine replays) hands
    a normalizer exactly the record a live sync handed it: a field map that stringifies a whole object saw
    sorted keys there before. Records archived before kept their sorted JSON; the hash is the same either way."""
    payload_json, digest, _plain = _encode(payload)
    return payload_json, digest


def _encode(payload: Any) -> tuple[str, str, bool]:
    """:func:`encode_payload`, and whether the JSON decodes back to the payload itself: False when a value JSON
    has no type for (a parser's datetime, Decimal, dataclass, a str subclass) was written as its text."""
    digest = hashlib.blake2b(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS, default=str), digest_size=16)
    try:
        return orjson.dumps(payload, option=_NO_TEXT_FOR_OBJECTS).decode(), digest.hexdigest(), True
    except TypeError:
        return orjson.dumps(payload, default=str).decode(), digest.hexdigest(), False


# orjson writes these natively; passed through to ``default`` (none here), they raise instead.
_NO_TEXT_FOR_OBJECTS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                        | orjson.OPT_PASSTHROUGH_SUBCLASS)


@dataclass(frozen=True, slots=True)
class ArchivedRecord:
    record: SourceRecord
    payload_json: str
    content_hash: str
    plain_json: bool = True  # payload_json decodes to the payload itself (see prepare's records crossing as JSON)

    def __reduce__(self) -> tuple[Any, ...]:  # positional: pickles in C (see SourceRecord.__reduce__)
        return ArchivedRecord, (self.record, self.payload_json, self.content_hash, self.plain_json)


_RAW_COLUMNS = ("source", "stream", "record_key", "content_hash", "payload", "fetched_at", "run_id")


def encode_records(records: Sequence[SourceRecord]) -> list[ArchivedRecord]:
    """Each record with its JSON and content hash (:func:`encode_payload`); pure, so the engine runs it off the
    store's thread."""
    return [ArchivedRecord(rec, *_encode(rec.payload)) for rec in records]


def archive(
    conn: Connection, records: Sequence[SourceRecord], *, fetched_at: datetime, run_id: int | None
) -> list[ArchivedRecord]:
    """Append each record version not archived yet; return the records with their hashes."""
    archived = encode_records(records)
    archive_encoded(conn, archived, fetched_at=fetched_at, run_id=run_id)
    return archived


def archive_encoded(
    conn: Connection, archived: Sequence[ArchivedRecord], *, fetched_at: datetime, run_id: int | None
) -> None:
    """:func:`archive` for records :func:`encode_records` already encoded."""
    stamp = db_timestamp(conn, fetched_at)  # one conversion per page, not per row
    rows = [(a.record.source, a.record.stream, a.record.key, a.content_hash, a.payload_json, stamp, run_id)
            for a in archived]  # fmt: skip
    fast_upsert(conn, RAW, _RAW_COLUMNS, rows, conflict=("source", "stream", "record_key", "content_hash"))


def work_item_doc(item: WorkItem) -> dict[str, Any]:
    """The stored JSON shape of a work item (hand-written: ``dataclasses.asdict`` deep-copies, 50x slower)."""
    return {
        "key": item.key,
        "kind": item.kind.value,
        "source": item.source,
        "stream": item.stream,
        "record_key": item.record_key,
        "agency": item.agency,
        "id_system": item.id_system,
        "unit": item.unit,
        "title": item.title,
        "doc_type": item.doc_type,
        "number_symbol": item.number_symbol,
        "status": item.status,
        "received_at": item.received_at,
        "due_at": item.due_at,
        "done_at": item.done_at,
        "revoked": item.revoked,
        "participants": [
            {
                "user_id": p.user_id,
                "role": p.role.value,
                "assigned_at": p.assigned_at,
                "due_at": p.due_at,
                "done_at": p.done_at,
                "display_name": p.display_name,
            }
            for p in item.participants
        ],
        "events": [
            {"kind": e.kind.value, "at": e.at, "actor": e.actor, "target": e.target, "due_at": e.due_at, "note": e.note}
            for e in item.events
        ],
        "attributes": dict(item.attributes),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


_WORK_COLUMNS = ("source", "stream", "record_key", "item_key", "kind", "agency", "unit", "content_hash", "body",
                 "match_status", "problems", "updated_at")  # fmt: skip


EncodedWorkItem = tuple[Any, ...]  # a work_item row in ``_WORK_COLUMNS`` order, without its trailing update time


def encode_work_items(items: Sequence[tuple[WorkItem, str, str | None]]) -> list[EncodedWorkItem]:
    """Rows for :func:`save_encoded_work_items`; pure, so the engine runs it off the store's thread."""
    rows: dict[tuple[str, str, str], EncodedWorkItem] = {}
    for item, status, problems in items:
        body = orjson.dumps(work_item_doc(item), default=_json_default, option=orjson.OPT_SORT_KEYS)
        # One row per (source, stream, record_key); a record normalizing into several items keeps the last.
        rows[(item.source, item.stream, item.record_key)] = (
            item.source, item.stream, item.record_key, item.key, item.kind.value, item.agency, item.unit,
            hashlib.blake2b(body, digest_size=16).hexdigest(), body.decode(), status, problems,
        )  # fmt: skip
    return list(rows.values())


def save_work_items(conn: Connection, items: Sequence[tuple[WorkItem, str, str | None]], *, now: datetime) -> None:
    """Upsert work items with their match status (mapped | unmatched | partial) and problems."""
    save_encoded_work_items(conn, encode_work_items(items), now=now)


def save_encoded_work_items(conn: Connection, rows: Sequence[EncodedWorkItem], *, now: datetime) -> None:
    """:func:`save_work_items` for rows :func:`encode_work_items` built."""
    stamp = db_timestamp(conn, now)
    fast_upsert(conn, WORK, _WORK_COLUMNS, [(*row, stamp) for row in rows], conflict=_WORK_COLUMNS[:3],
                update=_WORK_COLUMNS[3:])  # fmt: skip


def get_cursor(conn: Connection, source: str, stream: str) -> str | None:
    row = conn.execute(select(CURSOR.c.value).where(CURSOR.c.source == source, CURSOR.c.stream == stream)).first()
    return None if row is None else row[0]


def set_cursor(
    conn: Connection, source: str, stream: str, value: str | None, *, run_id: int | None, now: datetime
) -> None:
    upsert(
        conn,
        CURSOR,
        [{"source": source, "stream": stream, "value": value, "run_id": run_id, "updated_at": now}],
        conflict=("source", "stream"),
        update=("value", "run_id", "updated_at"),
    )


def list_cursors(conn: Connection, source: str | None = None) -> list[dict[str, Any]]:
    stmt = select(CURSOR).order_by(CURSOR.c.source, CURSOR.c.stream)
    if source:
        stmt = stmt.where(CURSOR.c.source == source)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def start_run(conn: Connection, *, source: str, trigger: str, replica: str | None, now: datetime) -> int:
    result = conn.execute(
        RUN.insert().returning(RUN.c.id),
        {"source": source, "trigger": trigger, "replica": replica, "started_at": now, "outcome": "running"},
    )
    return int(result.scalar_one())


RUN_COUNTERS = (
    "pages",
    "records_read",
    "records_archived",
    "records_mapped",
    "records_quarantined",
    "facts_written",
    "facts_retracted",
)


def add_run_counts(conn: Connection, run_id: int, counts: dict[str, int]) -> None:
    if counts:
        conn.execute(update(RUN).where(RUN.c.id == run_id).values({k: RUN.c[k] + v for k, v in counts.items()}))


def finish_run(
    conn: Connection,
    run_id: int,
    *,
    outcome: str,
    now: datetime,
    error: str | None = None,
    error_kind: str | None = None,
) -> None:
    conn.execute(
        update(RUN)
        .where(RUN.c.id == run_id)
        .values(outcome=outcome, finished_at=now, error=error, error_kind=error_kind)
    )


def abandon_stale_runs(conn: Connection, *, source: str, now: datetime) -> int:
    """Mark runs left 'running' by a process that died as failed (called while holding the source's lease)."""
    result = conn.execute(
        update(RUN)
        .where(RUN.c.source == source, RUN.c.outcome == "running")
        .values(
            outcome="failed", finished_at=now, error="process ended before the run finished", error_kind="abandoned"
        )
    )
    return int(result.rowcount or 0)


def last_runs(conn: Connection) -> dict[str, dict[str, Any]]:
    """The newest run of each source, plus the time of its newest successful one."""
    out: dict[str, dict[str, Any]] = {}
    for row in conn.execute(select(RUN).order_by(RUN.c.id)):
        d = dict(row._mapping)
        prev = out.get(d["source"], {})
        d["last_success_at"] = d["finished_at"] if d["outcome"] == "success" else prev.get("last_success_at")
        out[d["source"]] = d
    return out


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    source: str
    stream: str
    record_key: str
    content_hash: str
    payload_json: str
    stage: str
    error_kind: str
    reason: str


_QUARANTINE_COLUMNS = ("source", "stream", "record_key", "content_hash", "stage", "error_kind", "reason", "payload",
                       "first_seen_at", "last_seen_at", "seen_count", "status")  # fmt: skip


def quarantine(conn: Connection, entries: Sequence[QuarantineEntry], *, now: datetime) -> None:
    """File bad records; the same bad version seen again bumps its count instead of filing it twice."""
    stamp = db_timestamp(conn, now)
    rows = [
        (e.source, e.stream, e.record_key, e.content_hash, e.stage, e.error_kind, e.reason, e.payload_json,
         stamp, stamp, 1, "open")
        for e in entries
    ]  # fmt: skip
    fast_upsert(
        conn,
        QUARANTINE,
        _QUARANTINE_COLUMNS,
        rows,
        conflict=("source", "stream", "record_key", "content_hash"),
        update=("reason", "stage", "error_kind", "last_seen_at"),
        increment="seen_count",
    )


def resolve_quarantine(
    conn: Connection,
    *,
    source: str,
    stream: str,
    record_keys: Sequence[str],
    status: str,
    now: datetime,
    by: str = "sync",
    note: str | None = None,
) -> None:
    """Close open entries of records that now went through (or were discarded)."""
    if record_keys:
        conn.execute(
            update(QUARANTINE)
            .where(
                QUARANTINE.c.source == source,
                QUARANTINE.c.stream == stream,
                QUARANTINE.c.record_key.in_(list(record_keys)),
                QUARANTINE.c.status == "open",
            )
            .values(status=status, resolved_at=now, resolved_by=by, resolution_note=note)
        )
