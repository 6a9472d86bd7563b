"""Closed periods: an agency's month frozen for scoring, and the corrections that arrive after.

Closing takes the fact-write lock (so no page is half-written across the close), records the last change
number, a SHA-256 digest of the period's facts (their public snapshots, in id order) and the scoring policy in
force. From then on :func:`gateway.store.facts.write_facts` leaves those facts untouched and records any later
source change in ``fact_correction``; :func:`facts_digest` recomputed at any time equals the closure's digest.

**Reopening** (:func:`reopen_period`, for a month closed too early or with a wrong policy) ends the closure in
one transaction under the same lock: the closure and its frozen policy go, a ``period_reopening`` row keeps
them with who reopened it and why, and the corrections recorded since the closure are applied, the latest one
per fact, through the ordinary write path, so each lands in the change feed as the update, insert or
retraction the source asked for (a ``revert`` needs nothing: the source went back to the frozen values). A
correction moving a fact into another closed month stays a correction there. Closing again freezes the
period anew, with a new digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection, func, select

from gateway.errors import GatewayError
from gateway.security.principal import Scope
from gateway.store.db import lock_fact_writes
from gateway.store.facts import (
    CHANGE,
    CLOSURE,
    CORRECTION,
    FACT,
    FactWriteResult,
    PreparedFacts,
    snapshot,
    write_prepared,
)
from gateway.store.models import PeriodPolicy, PeriodReopening
from gateway.types import to_scaled

POLICY = PeriodPolicy.__table__  # type: ignore[attr-defined]
REOPENING = PeriodReopening.__table__  # type: ignore[attr-defined]


class PeriodAlreadyClosed(GatewayError):
    pass


class PeriodNotClosed(GatewayError):
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


def reopen_period(conn: Connection, *, agency: str, period: str, by: str, reason: str,
                  now: datetime) -> dict[str, Any]:  # fmt: skip
    """Reopen a closed (agency, period) and apply the corrections recorded since; see the module docstring.

    Raises :class:`PeriodNotClosed`. Run it in its own transaction: the reopening and every fact it writes
    commit together, or nothing does."""
    lock_fact_writes(conn)
    closure = conn.execute(select(CLOSURE).where(CLOSURE.c.agency == agency, CLOSURE.c.period == period)).first()
    if closure is None:
        raise PeriodNotClosed(f"{agency} {period} is not closed")
    applied_up_to = conn.execute(
        select(func.coalesce(func.max(REOPENING.c.last_correction_id), 0)).where(
            REOPENING.c.agency == agency, REOPENING.c.period == period)
    ).scalar_one()  # fmt: skip
    by_fact: dict[str, list[Any]] = {}  # fact_key -> its corrections since the last reopening, in id order
    last_id = applied_up_to
    for row in conn.execute(select(CORRECTION).where(CORRECTION.c.agency == agency, CORRECTION.c.period == period,
                                                     CORRECTION.c.id > applied_up_to).order_by(CORRECTION.c.id)):
        by_fact.setdefault(row.fact_key, []).append(row)
        last_id = row.id
    conn.execute(CLOSURE.delete().where(CLOSURE.c.agency == agency, CLOSURE.c.period == period))
    conn.execute(POLICY.delete().where(POLICY.c.agency == agency, POLICY.c.period == period))
    result, applied = _apply_corrections(conn, by_fact, now)
    reopening = {
        "agency": agency, "period": period, "closed_at": closure.closed_at, "closed_by": closure.closed_by,
        "closed_at_seq": closure.closed_at_seq, "digest": closure.digest, "reopened_at": now, "reopened_by": by,
        "reason": reason, "last_correction_id": last_id, "facts_inserted": result.inserted,
        "facts_updated": result.updated, "facts_retracted": result.retracted,
    }  # fmt: skip
    new_id = conn.execute(REOPENING.insert().returning(REOPENING.c.id), reopening).scalar_one()
    return _reopening_view({**reopening, "id": new_id, "corrections_applied": applied})


def _values_of_snapshot(snap: Mapping[str, Any], proposed_hash: str) -> dict[str, Any]:
    """A fact's stored values (as :func:`gateway.store.facts.fact_values` gives them) from its public snapshot.

    The hash is the one the source's values had when the correction was recorded: the snapshot's times are in
    UTC while a source may give +07:00, and the hash of the same moment written differently would differ, so
    the next re-read of the record would count as a change."""

    def moment(text: str | None) -> datetime | None:
        return None if text is None else datetime.fromisoformat(text)

    return {
        "item_key": snap["item_key"], "person_id": snap["person_id"], "role": snap["role"], "agency": snap["agency"],
        "unit": snap["unit"], "period": snap["period"], "product_code": snap["product_code"],
        "catalog_version": snap["catalog_version"], "rule_id": snap["rule_id"],
        "units_scaled": to_scaled(Decimal(snap["units"])), "quantity_scaled": to_scaled(Decimal(snap["quantity"])),
        "assigned": snap["assigned"], "completed": snap["completed"], "due_at": moment(snap["due_at"]),
        "done_at": moment(snap["done_at"]), "on_time": snap["on_time"], "delays": snap["delays"],
        "failed_reviews": snap["failed_reviews"], "exempt": snap["exempt"], "source": snap["source"],
        "stream": snap["stream"], "record_key": snap["record_key"],
        "lineage": orjson.dumps(snap["lineage"], option=orjson.OPT_SORT_KEYS).decode(),
        "value_hash": proposed_hash,
    }  # fmt: skip


def _origin(snap: Mapping[str, Any]) -> tuple[str, str, str]:
    return snap["source"], snap["stream"], snap["record_key"]


def _effective(corrections: list[Any]) -> tuple[Any, dict[str, Any]] | None:
    """What one fact's corrections since the last reopening (in id order) add up to: the correction to apply
    and its proposed snapshot, or None.

    A later insert or update supersedes what came before; a ``revert`` cancels it (the source went back to the
    frozen values); a ``retract`` comes from a re-read of the record that last gave the fact, so it is ignored
    when another record has since taken the fact over (the fact changed records while the month was closed)."""
    chosen: tuple[Any, dict[str, Any]] | None = None
    owner: tuple[str, str, str] | None = None
    for correction in corrections:
        snap = orjson.loads(correction.proposed)
        if correction.op in ("insert", "update"):
            chosen, owner = (correction, snap), _origin(snap)
        elif correction.op == "retract":
            if owner is None or owner == _origin(snap):
                chosen = (correction, snap)
        else:  # revert
            chosen, owner = None, None
    return chosen


def _apply_corrections(conn: Connection, by_fact: dict[str, list[Any]],
                       now: datetime) -> tuple[FactWriteResult, int]:  # fmt: skip
    """Write what each fact's corrections add up to (:func:`_effective`) in one :func:`write_prepared` call;
    return its result and how many facts' corrections were applied.

    A correction is stale, and skipped, when the fact was written after it was recorded: a fact proposed for
    the closed month that its source then moved on within an open month (its version grew past the one the
    correction proposed), or a fact proposed as new that has since appeared elsewhere. Retractions are asked
    by key, so the record's other facts are not touched (nor are corrections of other closed months)."""
    chosen = {key: found for key, corrections in by_fact.items() if (found := _effective(corrections))}
    keys = sorted(chosen)
    versions: dict[str, int] = {}
    for start in range(0, len(keys), 500):
        rows = conn.execute(select(FACT.c.fact_key, FACT.c.version).where(FACT.c.fact_key.in_(keys[start:start + 500])))
        versions.update({r.fact_key: r.version for r in rows})
    wanted: PreparedFacts = {}
    retract: list[str] = []
    for key, (correction, snap) in chosen.items():
        current = versions.get(key)
        if correction.fact_id is None and current is not None:
            continue  # proposed as new; the fact has appeared elsewhere since
        if current is not None and current > snap["version"]:
            continue  # the fact was written after this correction was recorded
        if correction.op == "retract":
            retract.append(key)
        else:
            wanted[key] = _values_of_snapshot(snap, correction.proposed_hash)
    if not wanted and not retract:
        return FactWriteResult(), 0
    return write_prepared(conn, origins=[], wanted=wanted, now=now, retract_keys=retract), len(wanted) + len(retract)


def _reopening_view(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "agency", "period", "closed_by", "closed_at_seq", "digest", "reopened_by",
                               "reason", "last_correction_id", "facts_inserted", "facts_updated",
                               "facts_retracted")}  # fmt: skip
    out["closed_at"] = row["closed_at"].isoformat()
    out["reopened_at"] = row["reopened_at"].isoformat()
    if "corrections_applied" in row:
        out["corrections_applied"] = row["corrections_applied"]
    return out


def list_reopenings(conn: Connection, *, scope: Scope, agency: str | None = None, period: str | None = None,
                    after: int = 0, limit: int = 100) -> list[dict[str, Any]]:  # fmt: skip
    stmt = (select(REOPENING).where(scope.where(REOPENING.c.agency), REOPENING.c.id > after)
            .order_by(REOPENING.c.id).limit(limit))  # fmt: skip
    for column, value in ((REOPENING.c.agency, agency), (REOPENING.c.period, period)):
        if value is not None:
            stmt = stmt.where(column == value)
    return [_reopening_view(dict(r._mapping)) for r in conn.execute(stmt)]


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
    rows = list(conn.execute(stmt))
    settled = _settling_reopenings(conn, {(r.agency, r.period) for r in rows})
    return [
        {"id": r.id, "fact_id": r.fact_id, "fact_key": r.fact_key, "agency": r.agency, "period": r.period,
         "op": r.op, "detected_at": r.detected_at.isoformat(), "proposed": orjson.loads(r.proposed),
         "settled_by_reopening": next((rid for rid, upto in settled.get((r.agency, r.period), ())
                                       if upto >= r.id), None)}
        for r in rows
    ]  # fmt: skip


def _settling_reopenings(conn: Connection, months: set[tuple[str, str]]) -> dict[tuple[str, str], list[Any]]:
    """(agency, period) -> [(reopening id, last correction id it settled)] in id order, for ``months``."""
    found: dict[tuple[str, str], list[Any]] = {}
    for agency in sorted({a for a, _ in months}):
        wanted = sorted(p for a, p in months if a == agency)
        for r in conn.execute(select(REOPENING.c.id, REOPENING.c.period, REOPENING.c.last_correction_id)
                              .where(REOPENING.c.agency == agency, REOPENING.c.period.in_(wanted))
                              .order_by(REOPENING.c.id)):  # fmt: skip
            found.setdefault((agency, r.period), []).append((r.id, r.last_correction_id))
    return found
