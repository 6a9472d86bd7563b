"""Writing facts idempotently, with a change feed in commit order.

A page's facts replace, for each origin record in the page, the facts that record produced before:

- a fact whose key is new is inserted;
- a fact whose values changed (``value_hash``) or that was retracted is updated and its version bumped;
- an unchanged fact writes nothing (re-reading a page is free and emits no change);
- an active fact of a re-read origin that the origin no longer produces is retracted.

**Closed periods.** A change that touches a closed (agency, period) (see :mod:`gateway.store.periods`) never
edits the frozen fact: it is recorded in ``fact_correction`` (op ``insert``, ``update``, ``retract``, or
``revert`` when the source goes back to the frozen values) and the fact stays byte for byte as closed. A fact
moving *out of* an open period *into* a closed one is retracted from the open period and recorded as a
correction ``insert`` of the closed one. Corrections are idempotent too: the same proposed values for the same
fact are recorded once (compared with the fact's latest correction).

Every insert, update and retraction appends a ``fact_change`` row holding the fact's new snapshot. Change
numbers (``seq``) and new fact ids are allocated while holding the fact-write lock
(:func:`gateway.store.db.lock_fact_writes`), which is kept until commit, so ``seq`` order is commit order:
a reader following ``seq > N`` can never see N+2 committed while N+1 is still in flight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, func, select, update

from gateway.store._upsert import db_timestamp, fast_insert, insert_tuples
from gateway.store.db import lock_fact_writes
from gateway.store.models import FactChange, FactCorrection, FactRow, PeriodClosure, PeriodReopening
from gateway.types import Fact, scaled_text, to_scaled

FACT = FactRow.__table__  # type: ignore[attr-defined]
CHANGE = FactChange.__table__  # type: ignore[attr-defined]
CORRECTION = FactCorrection.__table__  # type: ignore[attr-defined]
CLOSURE = PeriodClosure.__table__  # type: ignore[attr-defined]
REOPENING = PeriodReopening.__table__  # type: ignore[attr-defined]
RETRACTED_HASH = "retracted"

_FACT_COLUMNS = tuple(c.name for c in FACT.columns)  # an inserted row carries every column
_CHANGE_ROW = ("seq", "fact_id", "fact_key", "op", "agency", "period", "version", "committed_at", "snapshot")
Origin = tuple[str, str, str]  # (source, stream, record_key)

_VALUE_COLUMNS = (
    "item_key",
    "person_id",
    "role",
    "agency",
    "unit",
    "period",
    "product_code",
    "catalog_version",
    "rule_id",
    "units_scaled",
    "quantity_scaled",
    "assigned",
    "completed",
    "due_at",
    "done_at",
    "on_time",
    "delays",
    "failed_reviews",
    "exempt",
)
"""What a fact *is* worth. Where it was read from (source, stream, record, lineage) is not part of the hash: the
same document read from a second system with the same values is the same fact, not a change, and a record
re-read with only bookkeeping fields changed (its update time) writes nothing and emits no change. The
lineage kept is that of the version that last changed the fact's values."""


@dataclass
class FactWriteResult:
    inserted: int = 0
    updated: int = 0
    retracted: int = 0
    unchanged: int = 0
    corrected: int = 0  # changes to closed periods, recorded in ``fact_correction`` instead

    @property
    def written(self) -> int:
        return self.inserted + self.updated


def fact_values(fact: Fact) -> dict[str, Any]:
    """The stored column values of a fact (without identity, state and bookkeeping)."""
    return {
        "item_key": fact.item_key,
        "person_id": fact.person_id,
        "role": fact.role.value,
        "agency": fact.agency,
        "unit": fact.unit,
        "period": fact.period,
        "product_code": fact.product_code,
        "catalog_version": fact.catalog_version,
        "rule_id": fact.rule_id,
        "units_scaled": to_scaled(fact.units),
        "quantity_scaled": to_scaled(fact.quantity),
        "assigned": fact.assigned,
        "completed": fact.completed,
        "due_at": fact.due_at,
        "done_at": fact.done_at,
        "on_time": fact.on_time,
        "delays": fact.delays,
        "failed_reviews": fact.failed_reviews,
        "exempt": fact.exempt,
        "source": fact.source,
        "stream": fact.stream,
        "record_key": fact.record_key,
        "lineage": orjson.dumps(dict(fact.lineage), option=orjson.OPT_SORT_KEYS).decode(),
    }


def value_hash(values: Mapping[str, Any]) -> str:
    """The hash that decides whether a fact changed (see ``_VALUE_COLUMNS``)."""
    blob = orjson.dumps([values[c] for c in _VALUE_COLUMNS], default=str)
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def snapshot(row: Mapping[str, Any], *, lineage_as_fragment: bool = False) -> dict[str, Any]:
    """The public JSON shape of a fact, used by the API, the change feed and the history.

    ``lineage_as_fragment``: a stored (JSON text) lineage is embedded as it is, for :func:`orjson.dumps` only,
    instead of being parsed and serialized again (the same bytes: it was stored by orjson with sorted keys).
    """

    def iso(value: datetime | None) -> str | None:
        # always UTC: the snapshot written to the change feed and one rebuilt from the stored row are equal
        return value.astimezone(UTC).isoformat() if value is not None else None

    lineage = row["lineage"]
    return {
        "id": row["id"],
        **_value_members(row["fact_key"], row, iso),
        "state": row["state"],
        "version": row["version"],
        "change_seq": row["change_seq"],
        "source": row["source"],
        "stream": row["stream"],
        "record_key": row["record_key"],
        "lineage": (orjson.Fragment(lineage) if lineage_as_fragment else orjson.loads(lineage))
        if isinstance(lineage, str)
        else lineage,
        "updated_at": iso(row["updated_at"]),
    }


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class _Work:
    """What a page's write will do, computed from the store's current rows."""

    inserts: list[dict[str, Any]]
    updates: list[tuple[Any, dict[str, Any]]]
    retracts: list[Any]
    corrections: list[dict[str, Any]]
    unchanged: int

    @property
    def empty(self) -> bool:
        return not (self.inserts or self.updates or self.retracts or self.corrections)


def _closed_pairs(conn: Connection) -> set[tuple[str, str]]:
    return {(r.agency, r.period) for r in conn.execute(select(CLOSURE.c.agency, CLOSURE.c.period))}


def _latest_corrections(conn: Connection, keys: Sequence[str]) -> dict[tuple[str, str, str], Any]:
    """(fact_key, agency, closed period) -> the latest correction of that fact recorded for that agency's month
    (its id, proposed hash and proposed snapshot).

    Per month: a fact whose source moved it from one closed month to another has a correction in each, with
    the same proposed values (reopening the first month applies its correction and leaves the second's).
    Corrections a reopening already applied do not count: the same values proposed again after the month was
    closed anew are a new correction."""
    applied = {(r.agency, r.period): r.upto for r in conn.execute(
        select(REOPENING.c.agency, REOPENING.c.period, func.max(REOPENING.c.last_correction_id).label("upto"))
        .group_by(REOPENING.c.agency, REOPENING.c.period))}  # fmt: skip
    latest: dict[tuple[str, str, str], Any] = {}
    for chunk in _chunks(list(keys)):
        for r in conn.execute(
            select(CORRECTION.c.id, CORRECTION.c.fact_key, CORRECTION.c.agency, CORRECTION.c.period,
                   CORRECTION.c.proposed_hash, CORRECTION.c.proposed).where(CORRECTION.c.fact_key.in_(chunk))
        ):  # fmt: skip
            at = (r.fact_key, r.agency, r.period)
            if r.id <= applied.get((r.agency, r.period), 0):
                continue
            if at not in latest or r.id > latest[at].id:
                latest[at] = r
    return latest


def _plan(conn: Connection, wanted: dict[str, dict[str, Any]], origin_list: list[Origin], now: datetime,
          retract_keys: Sequence[str] = ()) -> _Work:  # fmt: skip
    cols = (FACT.c.id, FACT.c.fact_key, FACT.c.value_hash, FACT.c.state, FACT.c.version, FACT.c.created_at,
            FACT.c.agency, FACT.c.period)  # fmt: skip
    existing: dict[str, Any] = {}
    for chunk in _chunks(list(wanted)):
        for found in conn.execute(select(*cols).where(FACT.c.fact_key.in_(chunk))):
            existing[found.fact_key] = found
    to_retract: list[Any] = []
    dormant: list[Any] = []  # retracted facts of these origins, not wanted: see _moved_in_then_dropped
    # One query per (source, stream) with a plain IN on record_key, which uses ix_fact_origin. A row-value IN
    # does not: SQLite scans the whole fact table for it (quadratic over a backfill) and PostgreSQL spends ~1 s
    # planning a 500-tuple list. A page has a single (source, stream), so this is still one query per chunk.
    by_stream: dict[tuple[str, str], list[str]] = {}
    for source, stream, record_key in origin_list:
        by_stream.setdefault((source, stream), []).append(record_key)
    for (source, stream), record_keys in by_stream.items():
        for chunk in _chunks(record_keys):
            for found in conn.execute(
                select(*cols).where(
                    FACT.c.source == source,
                    FACT.c.stream == stream,
                    FACT.c.record_key.in_(chunk),
                )
            ):
                if found.fact_key not in wanted:
                    (to_retract if found.state == "active" else dormant).append(found)
    named = sorted(set(retract_keys) - set(wanted) - {r.fact_key for r in to_retract})
    for chunk in _chunks(named):
        to_retract.extend(conn.execute(select(*cols).where(FACT.c.fact_key.in_(chunk), FACT.c.state == "active")))
    work = _Work([], [], [], [], 0)
    closed = _closed_pairs(conn)
    pending: list[_Pending] = []
    for key, values in wanted.items():
        old = existing.get(key)
        new_closed = (values["agency"], values["period"]) in closed
        if old is None:
            if new_closed:
                pending.append((key, None, "insert", values["period"], values["value_hash"], values))
            else:
                work.inserts.append({"fact_key": key, **values})
            continue
        old_closed = (old.agency, old.period) in closed
        same = old.value_hash == values["value_hash"] and old.state == "active"
        if old_closed:
            op = "revert" if same else "update"
            pending.append((key, old, op, old.period, values["value_hash"], values))
            work.unchanged += int(same)
        elif same:
            work.unchanged += 1
        elif new_closed:  # leaves an open period for a closed one: retract here, correction there
            if old.state == "active":
                work.retracts.append(old)
            pending.append((key, old, "insert", values["period"], values["value_hash"], values))
        else:
            work.updates.append((old, values))
    for old in to_retract:
        if (old.agency, old.period) in closed:
            pending.append((old.fact_key, old, "retract", old.period, RETRACTED_HASH, {}))
        else:
            work.retracts.append(old)
    if dormant and closed:
        work.corrections.extend(_moved_in_then_dropped(conn, dormant, closed, now))
    if pending:
        latest = _latest_corrections(conn, [p[0] for p in pending])
        for key, old, op, period, proposed_hash, values in pending:
            agency = values["agency"] if op == "insert" or old is None else old.agency  # as _correction files it
            recorded = latest.get((key, agency, period))
            previous = None if recorded is None else recorded.proposed_hash
            if op == "revert" and (previous is None or previous == proposed_hash):
                continue  # never corrected, or already back to the frozen values
            if previous == proposed_hash:
                continue  # this correction is already recorded
            work.corrections.append(_correction(conn, key, old, op, period, proposed_hash, values, now))
    return work


_Pending = tuple[str, Any, str, str, str, dict[str, Any]]
"""A correction awaiting de-duplication: (fact_key, old row or None, op, closed period, proposed hash, values)."""


def _moved_in_then_dropped(conn: Connection, dormant: list[Any], closed: set[tuple[str, str]],
                           now: datetime) -> list[dict[str, Any]]:  # fmt: skip
    """Retract corrections for facts whose record now yields nothing while a correction of a closed month still
    proposes them from that record: the record moved the fact into that month (which retracted it where it
    was), then dropped it. Without this the pending correction would be the record's last word, and reopening
    the month would apply the move.

    Only a correction that is still the fact's pending one counts: proposed by this record (not by another
    that took the fact over) and not older than the fact's last write (the record has since moved it on and
    dropped it within open months, so reopening would skip it anyway). Cost: these lookups run only for
    retracted facts of re-read records while some month is closed."""
    rows = {row.fact_key: row for row in dormant}
    out = []
    for (key, agency, period), found in _latest_corrections(conn, list(rows)).items():
        row = rows[key]
        if found.proposed_hash == RETRACTED_HASH or (agency, period) not in closed:
            continue
        proposed = orjson.loads(found.proposed)
        origin = conn.execute(select(FACT.c.source, FACT.c.stream, FACT.c.record_key).where(FACT.c.id == row.id)).one()
        if (proposed["source"], proposed["stream"], proposed["record_key"]) != tuple(origin):
            continue  # another record gives the fact now
        if row.version > proposed["version"]:
            continue  # written again since: this correction is stale
        correction = _correction(conn, key, row, "retract", period, RETRACTED_HASH, {}, now)
        out.append({**correction, "agency": agency})  # the month it was proposed for, whatever the row says
    return out


def _correction(conn: Connection, key: str, old: Any, op: str, period: str, proposed_hash: str,
                values: dict[str, Any], now: datetime) -> dict[str, Any]:  # fmt: skip
    if op == "retract":
        full = conn.execute(select(FACT).where(FACT.c.id == old.id)).one()._asdict()
        proposed = {**full, "state": "retracted", "version": old.version + 1, "change_seq": None, "updated_at": now}
        agency = old.agency
    else:
        version = old.version + 1 if old is not None else 1
        proposed = {**values, "id": old.id if old is not None else None, "fact_key": key, "state": "active",
                    "version": version, "change_seq": None, "updated_at": now}  # fmt: skip
        agency = old.agency if old is not None and op != "insert" else values["agency"]
    return {
        "fact_id": old.id if old is not None else None,
        "fact_key": key,
        "agency": agency,
        "period": period,
        "op": op,
        "proposed_hash": proposed_hash,
        "proposed": orjson.dumps(snapshot(proposed)).decode(),
        "detected_at": now,
    }


PreparedFacts = dict[str, dict[str, Any]]
"""natural key -> stored values with their ``value_hash``: what :func:`write_prepared` writes."""

SnapshotParts = dict[str, tuple[str, str]]
"""natural key -> the change-feed snapshot's JSON members that depend on the stored values alone: ``"fact_key"``
.. ``"exempt"`` and ``"source"`` .. ``"lineage"``. The writer splices in id, state, version, change number and
update time (:func:`_snapshot_text`), which gives ``orjson.dumps(snapshot(row))`` byte for byte."""


def prepare_facts(facts: Sequence[Fact]) -> PreparedFacts:
    """The stored values of ``facts``; pure (no store access), so the engine runs it off the store's thread."""
    wanted: PreparedFacts = {}
    for fact in facts:
        values = fact_values(fact)
        values["value_hash"] = value_hash(values)
        wanted[fact.natural_key] = values  # a later fact for the same key in one page wins
    return wanted


def prepare_snapshot_parts(wanted: PreparedFacts) -> SnapshotParts:
    """The snapshot parts of ``wanted`` for :func:`write_prepared`; pure, so the engine runs it off the store's
    thread (the writer would otherwise render them itself, on the thread that holds the write lock)."""
    memo: dict[datetime, str] = {}
    return {key: _snapshot_parts(key, values, memo) for key, values in wanted.items()}


def _iso_text(value: datetime | None, memo: dict[datetime, str]) -> str | None:
    # snapshot()'s rendering (UTC ISO 8601); a page's deadlines and completions repeat, hence the memo
    if value is None:
        return None
    text = memo.get(value)
    if text is None:
        text = memo[value] = value.astimezone(UTC).isoformat()
    return text


def _value_members(fact_key: str, v: Mapping[str, Any], iso: Callable[[datetime | None], str | None]) -> dict[str, Any]:
    """The members of :func:`snapshot` from ``"fact_key"`` to ``"exempt"``, in its order: the fact's values."""
    return {
        "fact_key": fact_key,
        "item_key": v["item_key"],
        "person_id": v["person_id"],
        "role": v["role"],
        "agency": v["agency"],
        "unit": v["unit"],
        "period": v["period"],
        "product_code": v["product_code"],
        "catalog_version": v["catalog_version"],
        "rule_id": v["rule_id"],
        "units": scaled_text(v["units_scaled"]),
        "quantity": scaled_text(v["quantity_scaled"]),
        "assigned": bool(v["assigned"]),
        "completed": bool(v["completed"]),
        "due_at": iso(v["due_at"]),
        "done_at": iso(v["done_at"]),
        "on_time": None if v["on_time"] is None else bool(v["on_time"]),
        "delays": v["delays"],
        "failed_reviews": v["failed_reviews"],
        "exempt": bool(v["exempt"]),
    }


def _snapshot_parts(key: str, v: Mapping[str, Any], memo: dict[datetime, str]) -> tuple[str, str]:
    """The members of :func:`snapshot` computed from the stored values alone, in its order (see SnapshotParts)."""
    values = _value_members(key, v, lambda moment: _iso_text(moment, memo))
    origin = {"source": v["source"], "stream": v["stream"], "record_key": v["record_key"],
              "lineage": orjson.Fragment(v["lineage"])}  # fmt: skip
    return orjson.dumps(values)[1:-1].decode(), orjson.dumps(origin)[1:-1].decode()


_SNAPSHOT_TEMPLATE = '{"id":%d,%s,"state":"active","version":%d,"change_seq":%d,%s,"updated_at":%s}'


def _snapshot_text(parts: tuple[str, str], *, fact_id: int, version: int, seq: int, updated_json: str) -> str:
    """``orjson.dumps(snapshot(row)).decode()`` of an active fact, from its prepared parts."""
    return _SNAPSHOT_TEMPLATE % (fact_id, parts[0], version, seq, parts[1], updated_json)


def _full_rows(conn: Connection, rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """fact_key -> every column of the stored fact, for ``rows`` (planned rows carrying an ``id``)."""
    return {
        r.fact_key: r._asdict()
        for chunk in _chunks([r.id for r in rows])
        for r in conn.execute(select(FACT).where(FACT.c.id.in_(chunk)))
    }


def write_facts(
    conn: Connection, *, origins: Iterable[Origin], facts: Sequence[Fact], now: datetime
) -> FactWriteResult:
    """Make the store's facts for ``origins`` equal ``facts``; see the module docstring."""
    return write_prepared(conn, origins=origins, wanted=prepare_facts(facts), now=now)


def write_prepared(
    conn: Connection, *, origins: Iterable[Origin], wanted: PreparedFacts, now: datetime,
    retract_keys: Sequence[str] = (), snapshot_parts: SnapshotParts | None = None,
) -> FactWriteResult:
    """:func:`write_facts` for facts :func:`prepare_facts` prepared. ``retract_keys``: facts to retract by key
    besides those of ``origins`` (a reopened period's retract corrections), with the same closed-period rules.
    ``snapshot_parts``: from :func:`prepare_snapshot_parts`; those missing are rendered here."""
    origin_list = list(dict.fromkeys(origins))

    # Lock before reading: the plan then sees everything the previous writer (or a period closure) committed,
    # and one read suffices (planning first and re-planning under the lock read every page twice).
    lock_fact_writes(conn)
    work = _plan(conn, wanted, origin_list, now, retract_keys)
    if work.empty:
        return FactWriteResult(unchanged=work.unchanged)
    result = FactWriteResult(unchanged=work.unchanged, corrected=len(work.corrections))
    if work.corrections:
        conn.execute(CORRECTION.insert(), work.corrections)
    if not (work.inserts or work.updates or work.retracts):
        return result

    next_seq = (conn.execute(select(func.coalesce(func.max(CHANGE.c.seq), 0))).scalar_one()) + 1
    next_id = (conn.execute(select(func.coalesce(func.max(FACT.c.id), 0))).scalar_one()) + 1
    committed_at = db_timestamp(conn, now)
    updated_json = orjson.dumps(now.astimezone(UTC).isoformat()).decode()
    parts = snapshot_parts if snapshot_parts is not None else {}
    memo: dict[datetime, str] = {}
    changes: list[tuple[Any, ...]] = []  # in _CHANGE_ROW order

    def active_snapshot(key: str, fact_id: int, version: int) -> str:
        found = parts.get(key)
        if found is None:
            found = _snapshot_parts(key, wanted[key], memo)
        return _snapshot_text(found, fact_id=fact_id, version=version, seq=next_seq, updated_json=updated_json)

    def record(row: dict[str, Any], op: str, snapshot_json: str) -> None:
        changes.append((row["change_seq"], row["id"], row["fact_key"], op, row["agency"], row["period"],
                        row["version"], committed_at, snapshot_json))  # fmt: skip

    for row in work.inserts:
        row.update(id=next_id, state="active", version=1, change_seq=next_seq, created_at=now, updated_at=now)
        record(row, "insert", active_snapshot(row["fact_key"], next_id, 1))
        next_id += 1
        next_seq += 1

    def retracted(full_row: dict[str, Any], version: int) -> dict[str, Any]:
        row = {**full_row, "state": "retracted", "version": version, "change_seq": next_seq, "updated_at": now}
        record(row, "retract", orjson.dumps(snapshot(row, lineage_as_fragment=True)).decode())
        return row

    # An active fact whose agency changes (a one-stop dossier keeps its key when its processing organ changes)
    # leaves its first agency with a retraction there: the feed is read by agency, and followers scoped to the
    # first one would otherwise keep it for ever (the update is filed under the new agency only).
    leaving = [old for old, values in work.updates if old.state == "active" and old.agency != values["agency"]]
    full = _full_rows(conn, [*work.retracts, *leaving])
    moving = {old.fact_key for old in leaving}
    update_rows: list[dict[str, Any]] = []
    for old, values in work.updates:
        version = old.version + 1
        if old.fact_key in moving:
            retracted(full[old.fact_key], version)
            next_seq += 1
            version += 1
        row = {**values, "id": old.id, "fact_key": old.fact_key, "state": "active", "version": version,
               "change_seq": next_seq, "created_at": old.created_at, "updated_at": now}  # fmt: skip
        record(row, "update", active_snapshot(old.fact_key, old.id, version))
        next_seq += 1
        update_rows.append(row)
    retract_rows: list[dict[str, Any]] = []
    for old in work.retracts:
        retract_rows.append(retracted(full[old.fact_key], old.version + 1))
        next_seq += 1

    if work.inserts:
        fast_insert(conn, FACT, _FACT_COLUMNS, work.inserts)
    for rows in (update_rows, retract_rows):
        if rows:
            conn.execute(
                update(FACT).where(FACT.c.id == bindparam("b_id")),
                [
                    {"b_id": r["id"], **{k: v for k, v in r.items() if k not in ("id", "fact_key", "created_at")}}
                    for r in rows
                ],
            )
    insert_tuples(conn, CHANGE, _CHANGE_ROW, changes)
    result.inserted, result.updated, result.retracted = len(work.inserts), len(update_rows), len(retract_rows)
    return result
