"""Coverage report: how much of each agency's and source's work the mappings value, and what they miss.

Reads ``work_item`` (its ``match_status`` and ``problems``, as the sync engine and ``remap`` store them):
the share of work items mapped per agency and source, the most frequent unmatched patterns (kind, Decree-30
type, source/stream) and the unresolved people (system:user id) with how many work items each blocks.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import orjson
from sqlalchemy import Connection, func, select

from gateway.mapping.doctypes import canonical_doc_type
from gateway.store.models import WorkItemRow

WORK = WorkItemRow.__table__  # type: ignore[attr-defined]
_UNRESOLVED = re.compile(r"unresolved_person: (\S+) user (['\"])(.*?)\2")


def coverage(conn: Connection, *, source: str | None = None, top: int = 20) -> dict[str, Any]:
    stmt = select(WORK.c.agency, WORK.c.source, WORK.c.match_status, func.count().label("n")).group_by(
        WORK.c.agency, WORK.c.source, WORK.c.match_status
    )
    if source is not None:
        stmt = stmt.where(WORK.c.source == source)
    table: dict[tuple[str, str], Counter[str]] = {}
    for row in conn.execute(stmt):
        table.setdefault((row.agency, row.source), Counter())[row.match_status] += row.n
    rows = []
    for (agency, src), counts in sorted(table.items()):
        total = sum(counts.values())
        rows.append({"agency": agency, "source": src, "total": total, "mapped": counts["mapped"],
                     "partial": counts["partial"], "unmatched": counts["unmatched"],
                     "mapped_share": round(counts["mapped"] / total, 4) if total else 0.0})  # fmt: skip
    patterns: Counter[str] = Counter()
    unmatched = select(WORK.c.agency, WORK.c.source, WORK.c.stream, WORK.c.kind, WORK.c.body).where(
        WORK.c.match_status == "unmatched"
    )
    if source is not None:
        unmatched = unmatched.where(WORK.c.source == source)
    for row in conn.execute(unmatched):
        try:
            doc_type = canonical_doc_type(orjson.loads(row.body).get("doc_type")) or "-"
        except orjson.JSONDecodeError:
            doc_type = "?"
        patterns[f"{row.agency} {row.kind} {doc_type} ({row.source}/{row.stream})"] += 1
    people: Counter[str] = Counter()
    blocked = select(WORK.c.agency, WORK.c.problems).where(WORK.c.problems.is_not(None))
    if source is not None:
        blocked = blocked.where(WORK.c.source == source)
    for row in conn.execute(blocked):
        for found in {(m.group(1), m.group(3)) for m in _UNRESOLVED.finditer(row.problems or "")}:
            people[f"{row.agency} {found[0]}:{found[1]}"] += 1
    return {
        "by_agency_source": rows,
        "unmatched_patterns": [{"pattern": p, "count": n} for p, n in patterns.most_common(top)],
        "unresolved_people": [{"who": p, "work_items": n} for p, n in people.most_common(top)],
    }


__all__ = ["coverage"]
