"""Closed periods: an agency's month frozen for scoring, and the corrections that arrive after.

Closing takes the fact-write lock (so no page is half-written across the close), records the last change
number, a SHA-256 digest of the period's facts (their public snapshots, in id order) and the scoring policy in
force. From then on :func:`gateway.store.facts.write_facts` leaves those facts untouched and records any later
source change in ``fact_correction``; :func:`facts_digest` recomputed at any time equals the closure's digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, func, select

from gateway.errors import GatewayError
from gateway.security.principal import Scope
from gateway.store.db import lock_fact_writes
from gateway.store.facts import CHANGE, CLOSURE, CORRECTION, FACT, snapshot
from gateway.store.models import PeriodPolicy

POLICY = PeriodPolicy.__table__  # type: ignore[attr-defined]


class PeriodAlreadyClosed(GatewayError):
    pass


def facts_digest(conn: Connection, *, agency: str, period: str) -> tuple[str, int]:
    """SHA-256 over the period's fact snapshots (every state), one JSON line each in id order; and the count."""
    digest = hashlib.sha256()
    count = 0
    rows = conn.execute(select(FACT).where(FACT.c.agency == agency, FACT.c.period == period).order_by(FACT.c.id))
    for row in rows:
        digest.update(orjson.dumps(snapshot(row._asdict()), option=orjson.OPT_SORT_KEYS))
        digest.update(b"\n")
        count += 1
    return digest.hexdigest(), count


def close_period(conn: Connection, *, agency: str, period: str, by: str, policy: Mapping[str, Any],
                 now: datetime) -> dict[str, Any]:  # fmt: skip
    """Close (agency, period); raises :class:`PeriodAlreadyClosed`. Run it in its own transaction."""
    lock_fact_writes(conn)
    if conn.execute(select(CLOSURE.c.agency).where(CLOSURE.c.agency == agency, CLOSURE.c.period == period)).first():
        raise PeriodAlreadyClosed(f"{agency} {period} is already closed")
    seq = conn.execute(select(func.coalesce(func.max(CHANGE.c.seq), 0))).scalar_one()
    digest, count = facts_digest(conn, agency=agency, period=period)
    conn.execute(CLOSURE.insert(), {"agency": agency, "period": period, "closed_at": now, "closed_by": by,
                                    "closed_at_seq": seq, "digest": digest})  # fmt: skip
    frozen = orjson.dumps(dict(policy), option=orjson.OPT_SORT_KEYS).decode()
    conn.execute(POLICY.insert(), {"agency": agency, "period": period, "fact_count": count, "policy": frozen})
    found = get_closure(conn, scope=Scope(None), agency=agency, period=period)
    if found is None:  # pragma: no cover - inserted above in this transaction
        raise GatewayError(f"closure of {agency} {period} vanished")
    return found


def _closure_view(row: Any) -> dict[str, Any]:
    return {
        "agency": row.agency, "period": row.period, "closed_at": row.closed_at.isoformat(),
        "closed_by": row.closed_by, "closed_at_seq": row.closed_at_seq, "digest": row.digest,
        "fact_count": row.fact_count or 0,
        "policy": orjson.loads(row.policy) if row.policy else None,
    }  # fmt: skip


def _closures(scope: Scope) -> Any:
    return (
        select(CLOSURE, POLICY.c.policy, POLICY.c.fact_count)
        .join(POLICY, (POLICY.c.agency == CLOSURE.c.agency) & (POLICY.c.period == CLOSURE.c.period), isouter=True)
        .where(scope.where(CLOSURE.c.agency))
    )


def get_closure(conn: Connection, *, scope: Scope, agency: str, period: str) -> dict[str, Any] | None:
    row = conn.execute(_closures(scope).where(CLOSURE.c.agency == agency, CLOSURE.c.period == period)).first()
    return _closure_view(row) if row else None


def list_closures(conn: Connection, *, scope: Scope, agency: str | None = None) -> list[dict[str, Any]]:
    stmt = _closures(scope).order_by(CLOSURE.c.agency, CLOSURE.c.period)
    if agency is not None:
        stmt = stmt.where(CLOSURE.c.agency == agency)
    return [_closure_view(r) for r in conn.execute(stmt)]


def frozen_policies(conn: Connection, *, agency: str, periods: Iterable[str]) -> dict[str, dict[str, Any]]:
    """period -> the policy frozen at its closure, for the closed ones among ``periods``."""
    wanted = list(periods)
    rows = conn.execute(select(POLICY.c.period, POLICY.c.policy).where(POLICY.c.agency == agency,
                                                                       POLICY.c.period.in_(wanted)))  # fmt: skip
    return {r.period: orjson.loads(r.policy) for r in rows}


def list_corrections(conn: Connection, *, scope: Scope, agency: str | None = None, period: str | None = None,
                     fact_id: int | None = None, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:  # fmt: skip
    stmt = (select(CORRECTION).where(scope.where(CORRECTION.c.agency), CORRECTION.c.id > after)
            .order_by(CORRECTION.c.id).limit(limit))  # fmt: skip
    for column, value in ((CORRECTION.c.agency, agency), (CORRECTION.c.period, period),
                          (CORRECTION.c.fact_id, fact_id)):  # fmt: skip
        if value is not None:
            stmt = stmt.where(column == value)
    return [
        {"id": r.id, "fact_id": r.fact_id, "fact_key": r.fact_key, "agency": r.agency, "period": r.period,
         "op": r.op, "detected_at": r.detected_at.isoformat(), "proposed": orjson.loads(r.proposed)}
        for r in conn.execute(stmt)
    ]  # fmt: skip
