"""Explaining facts: which raw record, rule, catalog version and person resolution produced them.

- :func:`explain_fact` reads a stored fact, its lineage and its history (``fact_change``), and the raw record
  version it came from;
- :func:`explain_record` re-values the newest archived version of a record with the given mappings and says,
  for each work item, which rule decided, which catalog version and which people, next to the stored facts;
- :func:`facts_as_of` reproduces an agency's facts of a period as they were after change ``seq``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, select

from gateway.errors import RecordError
from gateway.mapping.mappingset import MappingSet
from gateway.store.facts import snapshot
from gateway.store.models import FactChange, FactRow, RawRecord
from gateway.types import SourceRecord, WorkItem

FACT = FactRow.__table__  # type: ignore[attr-defined]
CHANGE = FactChange.__table__  # type: ignore[attr-defined]
RAW = RawRecord.__table__  # type: ignore[attr-defined]


def _rule_info(mappings: MappingSet | None, agency: str, rule_id: str) -> dict[str, Any] | None:
    rule = mappings.rule(agency, rule_id) if mappings is not None else None
    if rule is None:
        return None
    return {"id": rule.id, "file": rule.file, "line": rule.line, "priority": rule.priority,
            "description": rule.spec.description, "when": rule.spec.when, "product": rule.product}  # fmt: skip


def explain_fact(conn: Connection, fact_id: int, *, mappings: MappingSet | None = None) -> dict[str, Any]:
    """A stored fact with its lineage, its history and its raw record; ``{}`` when there is no such fact."""
    row = conn.execute(select(FACT).where(FACT.c.id == fact_id)).first()
    if row is None:
        return {}
    fact = snapshot(dict(row._mapping))
    lineage = fact["lineage"]
    raw = lineage.get("raw", {})
    raw_row = conn.execute(
        select(RAW.c.id, RAW.c.fetched_at, RAW.c.content_hash).where(
            RAW.c.source == fact["source"], RAW.c.stream == fact["stream"], RAW.c.record_key == fact["record_key"],
            RAW.c.content_hash == raw.get("content_hash"),
        )
    ).first()  # fmt: skip
    history = [
        {"seq": c.seq, "op": c.op, "version": c.version, "committed_at": c.committed_at.isoformat(),
         "rule_id": orjson.loads(c.snapshot).get("rule_id"), "units": orjson.loads(c.snapshot).get("units")}
        for c in conn.execute(select(CHANGE).where(CHANGE.c.fact_id == fact_id).order_by(CHANGE.c.seq))
    ]  # fmt: skip
    explanation: dict[str, Any] = {
        "fact": fact,
        "rule": lineage.get("rule"),
        "catalog": lineage.get("catalog"),
        "person": lineage.get("person"),
        "mappings_version": lineage.get("mappings_version"),
        "raw_record": None if raw_row is None else
        {"id": raw_row.id, "content_hash": raw_row.content_hash, "fetched_at": raw_row.fetched_at.isoformat()},
        "history": history,
    }  # fmt: skip
    current = _rule_info(mappings, fact["agency"], fact["rule_id"])
    if mappings is not None:
        explanation["current_rule"] = current
        explanation["current_mappings_version"] = mappings.version
    return explanation


def explain_item(mappings: MappingSet, item: WorkItem, *, content_hash: str | None) -> dict[str, Any]:
    valuation = mappings.value(item, raw={"content_hash": content_hash or ""})
    return {
        "item_key": item.key,
        "kind": item.kind.value,
        "agency": item.agency,
        "doc_type": item.doc_type,
        "match_status": valuation.match_status,
        "rule": _rule_info(mappings, item.agency, valuation.rule_id) if valuation.rule_id else None,
        "facts": [
            {"fact_key": f.natural_key, "person_id": f.person_id, "role": f.role.value, "period": f.period,
             "product_code": f.product_code, "units": str(f.units), "catalog": f.lineage.get("catalog"),
             "person": f.lineage.get("person"), "exempt": f.exempt, "delays": f.delays,
             "failed_reviews": f.failed_reviews}
            for f in valuation.facts
        ],
        "problems": [{"kind": p.kind, "detail": p.detail, "quarantine": p.quarantine} for p in valuation.problems],
    }


def explain_record(conn: Connection, mappings: MappingSet, normalizer: Callable[[SourceRecord], Sequence[WorkItem]],
                   source: str, stream: str, key: str) -> dict[str, Any]:  # fmt: skip
    """Re-value a record's newest archived version and show how; ``{}`` when it was never archived."""
    raw = conn.execute(
        select(RAW).where(RAW.c.source == source, RAW.c.stream == stream, RAW.c.record_key == key)
        .order_by(RAW.c.id.desc()).limit(1)
    ).first()  # fmt: skip
    if raw is None:
        return {}
    record = SourceRecord(source, stream, key, orjson.loads(raw.payload))
    out: dict[str, Any] = {
        "record": {"source": source, "stream": stream, "key": key, "raw_id": raw.id, "content_hash": raw.content_hash},
        "mappings_version": mappings.version,
        "directory_version": mappings.directory.version,
    }
    try:
        items = normalizer(record)
    except RecordError as exc:
        out["normalize_error"] = str(exc)
        items = ()
    out["items"] = [explain_item(mappings, item, content_hash=raw.content_hash) for item in items]
    stored = conn.execute(
        select(FACT).where(FACT.c.source == source, FACT.c.stream == stream, FACT.c.record_key == key)
        .order_by(FACT.c.id)
    )  # fmt: skip
    out["stored_facts"] = [
        {"id": r.id, "fact_key": r.fact_key, "state": r.state, "rule_id": r.rule_id, "product_code": r.product_code,
         "catalog_version": r.catalog_version, "version": r.version}
        for r in stored
    ]  # fmt: skip
    return out


def facts_as_of(conn: Connection, *, agency: str, period: str, seq: int) -> list[dict[str, Any]]:
    """The agency's active facts of ``period`` as they stood right after change ``seq`` (from the history)."""
    latest: dict[str, dict[str, Any]] = {}
    stmt = (
        select(CHANGE.c.fact_key, CHANGE.c.snapshot)
        .where(CHANGE.c.agency == agency, CHANGE.c.seq <= seq)
        .order_by(CHANGE.c.seq)
    )
    for row in conn.execute(stmt):
        latest[row.fact_key] = orjson.loads(row.snapshot)
    return [s for s in latest.values() if s["state"] == "active" and s["period"] == period]


__all__ = ["explain_fact", "explain_item", "explain_record", "facts_as_of"]
