"""Writing facts idempotently, with a change feed in commit order.

A page's facts replace, for each origin record in the page, the facts that record produced before:

- a fact whose key is new is inserted;
- a fact whose values changed (``value_hash``) or that was retracted is updated and its version bumped;
- an unchanged fact writes nothing (re-reading a page is free and emits no change);
- an active fact of a re-read origin that the origin no longer produces is retracted.

Every insert, update and retraction appends a ``fact_change`` row holding the fact's new snapshot. Change
numbers (``seq``) and new fact ids are allocated while holding the fact-write lock
(:func:`gateway.store.db.lock_fact_writes`), which is kept until commit, so ``seq`` order is commit order:
a reader following ``seq > N`` can never see N+2 committed while N+1 is still in flight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, func, select, tuple_, update

from gateway.store.db import lock_fact_writes
from gateway.store.models import FactChange, FactRow
from gateway.types import Fact, from_scaled, to_scaled

FACT = FactRow.__table__  # type: ignore[attr-defined]
CHANGE = FactChange.__table__  # type: ignore[attr-defined]

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
    "source",
    "stream",
    "record_key",
    "lineage",
)


@dataclass
class FactWriteResult:
    inserted: int = 0
    updated: int = 0
    retracted: int = 0
    unchanged: int = 0

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


def _hash_values(values: Mapping[str, Any]) -> str:
    blob = orjson.dumps([values[c] for c in _VALUE_COLUMNS], default=str)
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def snapshot(row: Mapping[str, Any]) -> dict[str, Any]:
    """The public JSON shape of a fact, used by the API, the change feed and the history."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    lineage = row["lineage"]
    return {
        "id": row["id"],
        "fact_key": row["fact_key"],
        "item_key": row["item_key"],
        "person_id": row["person_id"],
        "role": row["role"],
        "agency": row["agency"],
        "unit": row["unit"],
        "period": row["period"],
        "product_code": row["product_code"],
        "catalog_version": row["catalog_version"],
        "rule_id": row["rule_id"],
        "units": str(from_scaled(row["units_scaled"])),
        "quantity": str(from_scaled(row["quantity_scaled"])),
        "assigned": bool(row["assigned"]),
        "completed": bool(row["completed"]),
        "due_at": iso(row["due_at"]),
        "done_at": iso(row["done_at"]),
        "on_time": None if row["on_time"] is None else bool(row["on_time"]),
        "delays": row["delays"],
        "failed_reviews": row["failed_reviews"],
        "exempt": bool(row["exempt"]),
        "state": row["state"],
        "version": row["version"],
        "change_seq": row["change_seq"],
        "source": row["source"],
        "stream": row["stream"],
        "record_key": row["record_key"],
        "lineage": orjson.loads(lineage) if isinstance(lineage, str) else lineage,
        "updated_at": iso(row["updated_at"]),
    }


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def write_facts(
    conn: Connection, *, origins: Iterable[Origin], facts: Sequence[Fact], now: datetime
) -> FactWriteResult:
    """Make the store's facts for ``origins`` equal ``facts``; see the module docstring."""
    result = FactWriteResult()
    wanted: dict[str, dict[str, Any]] = {}
    for fact in facts:
        values = fact_values(fact)
        values["value_hash"] = _hash_values(values)
        wanted[fact.natural_key] = values  # a later fact for the same key in one page wins
    origin_list = list(dict.fromkeys(origins))

    cols = (FACT.c.id, FACT.c.fact_key, FACT.c.value_hash, FACT.c.state, FACT.c.version, FACT.c.created_at)
    existing: dict[str, Any] = {}
    for chunk in _chunks(list(wanted)):
        for found in conn.execute(select(*cols).where(FACT.c.fact_key.in_(chunk))):
            existing[found.fact_key] = found
    to_retract: list[Any] = []
    for chunk in _chunks(origin_list):
        for found in conn.execute(
            select(*cols).where(
                tuple_(FACT.c.source, FACT.c.stream, FACT.c.record_key).in_(chunk), FACT.c.state == "active"
            )
        ):
            if found.fact_key not in wanted:
                to_retract.append(found)

    inserts: list[dict[str, Any]] = []
    updates: list[tuple[Any, dict[str, Any]]] = []
    for key, values in wanted.items():
        old = existing.get(key)
        if old is None:
            inserts.append({"fact_key": key, **values})
        elif old.value_hash != values["value_hash"] or old.state != "active":
            updates.append((old, values))
        else:
            result.unchanged += 1
    if not (inserts or updates or to_retract):
        return result

    lock_fact_writes(conn)
    next_seq = (conn.execute(select(func.coalesce(func.max(CHANGE.c.seq), 0))).scalar_one()) + 1
    next_id = (conn.execute(select(func.coalesce(func.max(FACT.c.id), 0))).scalar_one()) + 1
    changes: list[dict[str, Any]] = []

    def record(row: dict[str, Any], op: str) -> None:
        nonlocal next_seq
        row["change_seq"] = next_seq
        changes.append(
            {
                "seq": next_seq,
                "fact_id": row["id"],
                "fact_key": row["fact_key"],
                "op": op,
                "agency": row["agency"],
                "period": row["period"],
                "version": row["version"],
                "committed_at": now,
                "snapshot": orjson.dumps(snapshot(row)).decode(),
            }
        )
        next_seq += 1

    for row in inserts:
        row.update(id=next_id, state="active", version=1, created_at=now, updated_at=now)
        next_id += 1
        record(row, "insert")
    update_rows: list[dict[str, Any]] = []
    for old, values in updates:
        row = {
            **values,
            "id": old.id,
            "fact_key": old.fact_key,
            "state": "active",
            "version": old.version + 1,
            "created_at": old.created_at,
            "updated_at": now,
        }
        record(row, "update")
        update_rows.append(row)
    retract_rows: list[dict[str, Any]] = []
    if to_retract:
        full = {
            r.fact_key: r._asdict()
            for chunk in _chunks([r.id for r in to_retract])
            for r in conn.execute(select(FACT).where(FACT.c.id.in_(chunk)))
        }
        for old in to_retract:
            row = {**full[old.fact_key], "state": "retracted", "version": old.version + 1, "updated_at": now}
            record(row, "retract")
            retract_rows.append(row)

    if inserts:
        conn.execute(FACT.insert(), inserts)
    for rows in (update_rows, retract_rows):
        if rows:
            conn.execute(
                update(FACT).where(FACT.c.id == bindparam("b_id")),
                [
                    {"b_id": r["id"], **{k: v for k, v in r.items() if k not in ("id", "fact_key", "created_at")}}
                    for r in rows
                ],
            )
    conn.execute(CHANGE.insert(), changes)
    result.inserted, result.updated, result.retracted = len(inserts), len(update_rows), len(retract_rows)
    return result
