"""Re-mapping from the raw archive after a catalog, rule, policy or directory change: no re-pull.

For each record (optionally of one source), the newest archived version is re-normalized through its
connector's ``normalize`` and valued with the new :class:`MappingSet`. The result is compared with the
store's current facts of that record: *added*, *changed* (a value moved), *retracted*, *unchanged*, per
agency; "changed" means what :func:`gateway.store.facts.write_facts` would write (its value hash), so a
new mappings version that values a fact the same is no change. ``apply=True`` then writes it all
through :func:`gateway.store.facts.write_facts` in one transaction, so the change feed and ``fact_change``
history keep every previous state (any past period can be reproduced as it was, see
:func:`gateway.mapping.explain.facts_as_of`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, func, select, tuple_

from gateway.errors import RecordError
from gateway.mapping.mappingset import MappingSet
from gateway.store.facts import fact_values, value_hash, write_facts
from gateway.store.models import FactRow, RawRecord
from gateway.store.records import save_work_items
from gateway.types import Fact, SourceRecord, WorkItem

RAW = RawRecord.__table__  # type: ignore[attr-defined]
FACT = FactRow.__table__  # type: ignore[attr-defined]

Normalizer = Callable[[SourceRecord], Sequence[WorkItem]]
Origin = tuple[str, str, str]
CHUNK = 500


@dataclass
class AgencyDiff:
    added: int = 0
    changed: int = 0
    retracted: int = 0
    unchanged: int = 0

    @property
    def touched(self) -> int:
        return self.added + self.changed + self.retracted


@dataclass
class RemapReport:
    applied: bool = False
    records: int = 0
    normalize_failed: int = 0
    quarantine: int = 0
    unmatched: int = 0
    per_agency: dict[str, AgencyDiff] = field(default_factory=lambda: defaultdict(AgencyDiff))
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "records": self.records, "normalize_failed": self.normalize_failed,
                "quarantine": self.quarantine, "unmatched": self.unmatched,
                "per_agency": {a: vars(d) for a, d in sorted(self.per_agency.items())},
                "examples": self.examples}  # fmt: skip


def newest_raw(conn: Connection, *, source: str | None = None, chunk: int = CHUNK) -> Iterator[list[Any]]:
    """The newest archived version of every record, in chunks (memory stays flat over a province-year)."""
    newest = select(func.max(RAW.c.id).label("id")).group_by(RAW.c.source, RAW.c.stream, RAW.c.record_key)
    if source is not None:
        newest = newest.where(RAW.c.source == source)
    ids = sorted(row.id for row in conn.execute(newest))
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        yield list(conn.execute(select(RAW).where(RAW.c.id.in_(part)).order_by(RAW.c.id)))


def _classify(fact: Fact, old: Any | None) -> str:
    if old is None or old.state != "active":
        return "added"
    return "unchanged" if value_hash(fact_values(fact)) == old.value_hash else "changed"


def remap(conn: Connection, *, mappings: MappingSet, normalizer_for: Callable[[str], Normalizer],
          source: str | None = None, apply: bool = False, now: datetime, max_examples: int = 20
          ) -> RemapReport:  # fmt: skip
    """Diff (and with ``apply``, write) the facts the raw archive yields under ``mappings``.

    The caller owns the transaction: run it inside ``engine.begin()`` so an applied remap commits at once.
    """
    report = RemapReport(applied=apply)
    normalizers: dict[str, Normalizer] = {}
    for rows in newest_raw(conn, source=source):
        facts: list[Fact] = []
        origins: list[Origin] = []
        statuses: list[tuple[WorkItem, str, str | None]] = []
        agency_of: dict[Origin, str] = {}
        for raw in rows:
            report.records += 1
            normalize = normalizers.get(raw.source)
            if normalize is None:
                normalize = normalizers[raw.source] = normalizer_for(raw.source)
            record = SourceRecord(raw.source, raw.stream, raw.record_key, orjson.loads(raw.payload))
            try:
                produced = normalize(record)
            except RecordError:
                report.normalize_failed += 1
                continue
            origin = (raw.source, raw.stream, raw.record_key)
            origins.append(origin)
            for item in produced:
                valuation = mappings.value(item, raw={"content_hash": raw.content_hash})
                facts.extend(valuation.facts)
                agency_of[origin] = item.agency
                report.unmatched += valuation.unmatched
                report.quarantine += valuation.quarantine
                detail = "; ".join(f"{p.kind}: {p.detail}" for p in valuation.problems) or None
                statuses.append((item, valuation.match_status, detail))
        _diff(conn, report, origins, facts, agency_of, max_examples)
        if apply and origins:
            write_facts(conn, origins=origins, facts=facts, now=now)
            save_work_items(conn, statuses, now=now)
    return report


def _diff(conn: Connection, report: RemapReport, origins: list[Origin], facts: list[Fact],
          agency_of: dict[Origin, str], max_examples: int) -> None:  # fmt: skip
    if not origins:
        return
    existing: dict[str, Any] = {}
    for start in range(0, len(origins), CHUNK):
        part = origins[start : start + CHUNK]
        stmt = select(FACT).where(tuple_(FACT.c.source, FACT.c.stream, FACT.c.record_key).in_(part))
        existing.update({row.fact_key: row for row in conn.execute(stmt)})
    wanted = {f.natural_key: f for f in facts}
    missing = [k for k in wanted if k not in existing]
    for start in range(0, len(missing), CHUNK):  # a fact may move between origins (same item, other source)
        stmt = select(FACT).where(FACT.c.fact_key.in_(missing[start : start + CHUNK]))
        existing.update({row.fact_key: row for row in conn.execute(stmt)})
    counts: Counter[tuple[str, str]] = Counter()
    for key, fact in wanted.items():
        outcome = _classify(fact, existing.get(key))
        counts[(fact.agency, outcome)] += 1
        if outcome in ("added", "changed") and len(report.examples) < max_examples:
            report.examples.append(f"{outcome}: {key} {fact.product_code} {fact.units} ({fact.rule_id})")
    for key, row in existing.items():
        if key not in wanted and row.state == "active" and (row.source, row.stream, row.record_key) in agency_of:
            counts[(row.agency, "retracted")] += 1
            if len(report.examples) < max_examples:
                report.examples.append(f"retracted: {key} {row.product_code} ({row.rule_id})")
    origin_set = set(origins)
    for key, row in existing.items():
        origin = (row.source, row.stream, row.record_key)
        if key not in wanted and row.state == "active" and origin in origin_set and origin not in agency_of:
            counts[(row.agency, "retracted")] += 1  # the record now yields no item at all
    for (agency, outcome), n in counts.items():
        diff = report.per_agency[agency]
        setattr(diff, outcome, getattr(diff, outcome) + n)


__all__ = ["AgencyDiff", "RemapReport", "newest_raw", "remap"]
