"""Summaries per person, unit or agency for a month, quarter or year: every input of criteria a, b and c
(Decree 335/2025, DOMAIN.md §2) in converted standard units, plus a *reference* computation of a, b, c and
the 70-point task score. Front ends own the official score; the reference shows how the inputs combine.

Per completed fact, with ``u`` its converted units (exact, integers of 1/10,000 in the store):

- quality credit = ``u × (1 − 0.25 × failed_reviews)``, at least 0; full ``u`` when an exemption covering
  quality applies (``failed_reviews`` already counts returned drafts when the policy says
  ``returns_are_failed_reviews``);
- timeliness credit = ``u × (1 − 0.25 × delays)`` (at least 0) when on time (a deadline missed and then extended
  is a delay of a product done by the extended one: each delay deducts 25% [law]) and, when late, if the policy
  says ``late_products: deduct``; 0 when late if ``exclude``; full ``u`` when an exemption covering timeliness
  applies.

The policy is the agency's current one, except for closed months, which use the policy frozen at closing, so
a closed period's summary is reproducible byte for byte. Totals are sums of exact quarter-units.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Connection, Select, String, bindparam, case, false, func, literal_column, select

from gateway.errors import GatewayError
from gateway.security.principal import Scope
from gateway.store.facts import FACT
from gateway.store.periods import frozen_policies
from gateway.types import UNIT_SCALE

GROUPS: dict[str, tuple[str, ...]] = {
    "person": ("agency", "unit", "person_id"),
    "unit": ("agency", "unit"),
    "agency": ("agency",),
}
SUMMARY_PERIOD = r"^\d{4}(-(0[1-9]|1[0-2])|-Q[1-4])?$"
DEDUCTION = Decimal("0.25")  # per failed review and per delay [law]
REFERENCE_LABEL = (
    "REFERENCE ONLY: a, b, c and the task score as Decree 335/2025 describes them for a non-leader "
    "((a+b+c)/3 x 70%, each component capped at 100%); the scoring front end computes the official score"
)
_Q = Decimal(1) / (4 * UNIT_SCALE)  # one quarter of 1/10,000 unit: the exact grain of deducted credit


class BadPeriod(GatewayError):
    pass


def months_of(period: str) -> list[str]:
    """``2026-03`` -> one month; ``2026-Q1`` -> three; ``2026`` -> twelve."""
    if not re.match(SUMMARY_PERIOD, period):
        raise BadPeriod(f"period {period!r} is not YYYY-MM, YYYY-Qn or YYYY")
    year, _, rest = period.partition("-")
    if not rest:
        return [f"{year}-{m:02d}" for m in range(1, 13)]
    if rest.startswith("Q"):
        q = int(rest[1])
        return [f"{year}-{m:02d}" for m in range(3 * q - 2, 3 * q + 1)]
    return [period]


@dataclass
class _Acc:
    counts: dict[str, int] = field(default_factory=dict)
    scaled: dict[str, int] = field(default_factory=dict)  # integers of 1/10,000 unit
    quarters: dict[str, int] = field(default_factory=lambda: {"quality": 0, "timeliness": 0})
    months: set[str] = field(default_factory=set)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, bucket: dict[str, int], key: str, value: int) -> None:
        bucket[key] = bucket.get(key, 0) + int(value or 0)


_COUNTS = ("facts", "assigned", "completed", "on_time", "late", "delays", "failed_reviews",
           "facts_with_failed_reviews", "delayed", "exempt")  # fmt: skip
_UNITS = ("assigned", "completed", "on_time", "late")


def _aggregate(conn: Connection, *, scope: Scope, keys: tuple[str, ...], months: list[str],
               filters: Mapping[str, str | None]) -> tuple[list[Any], list[Any]]:  # fmt: skip
    given = tuple(col for col, v in filters.items() if v is not None)
    listed = None if scope.everything else scope.listing()
    agg, exempt = _statements(keys, given, len(months), None if listed is None else len(listed))
    params: dict[str, Any] = {f"m{i}": month for i, month in enumerate(months)}
    params.update({f"f_{col}": filters[col] for col in given})
    if listed is not None:
        params.update({f"s{i}": agency for i, agency in enumerate(listed)})
    rows = list(conn.execute(agg, params))
    # The aggregate counts the exempt facts of each group: with none (the usual case), the second query, for
    # the exempt facts' lineage, could only return nothing, and is not sent.
    return rows, (list(conn.execute(exempt, params)) if any(r.exempt for r in rows) else [])


_ZERO: Any = literal_column("0")  # constants written into the SQL, not bound (see _statements)
_ONE: Any = literal_column("1")
_FOUR: Any = literal_column("4")


@lru_cache(maxsize=512)
def _statements(keys: tuple[str, ...], given: tuple[str, ...], months: int,
                scope: int | None) -> tuple[Select[Any], Select[Any]]:  # fmt: skip
    """The aggregate and the exempt-facts statements for one shape of query, built once, values bound.

    Building this ~60-node expression and hashing it into SQLAlchemy's compiled-statement cache key cost more
    CPU per request than running the query; the shapes are few (3 groupings x which filters are given x 1, 3
    or 12 months x how many agencies a scoped caller has), so each is built once per process. Constants are
    written into the SQL and lists are bound one value per parameter: with 45 bound constants and two
    expanding lists, SQLAlchemy re-rendered the statement and psycopg converted every constant on each request
    (0.5 ms of the API's CPU per uncached summary). The caller's scope is still applied in SQL, as bound values
    (``scope``: how many; None for a caller who sees every agency; 0 matches nothing, as Scope.where's false()
    does)."""
    c = FACT.c
    u = c.units_scaled
    done = c.completed.is_(True)
    on_time = done & c.on_time.is_(True)
    late = done & c.on_time.is_(False)

    def total(cond: Any, value: Any = _ONE) -> Any:
        return func.coalesce(func.sum(case((cond, value), else_=_ZERO)), _ZERO)

    def quarters_left(n: Any) -> Any:
        return case((n >= _FOUR, _ZERO), else_=_FOUR - n)

    group = [c[k] for k in keys] + [c.period]
    # Grouped in the order of the covering index ix_fact_summary (agency, period, unit, person_id), so
    # PostgreSQL aggregates the index-only scan as it comes, with no sort, for a month, a quarter or a year.
    grouping = [c[k] for k in ("agency", "period", "unit", "person_id") if k in keys or k == "period"]
    where = [c.state == literal_column("'active'"), c.period.in_([bindparam(f"m{i}", type_=String)
                                                                  for i in range(months)])]  # fmt: skip
    where += [c[col] == bindparam(f"f_{col}", type_=String) for col in given]
    listed = [bindparam(f"s{i}", type_=String) for i in range(scope or 0)]
    if scope is not None and "agency" in given:
        # The same restriction, on the named agency instead of the column: PostgreSQL multiplied the
        # selectivities of ``agency IN scope`` and ``agency = X`` as if independent, underestimated a unit-year
        # tenfold and chose the keyset index and 3,600 heap pages (30 ms) over ix_fact_summary (2.9 ms).
        where.append(bindparam("f_agency", type_=String).in_(listed) if listed else false())
    elif scope is not None:
        where.append(c.agency.in_(listed) if listed else false())
    agg = select(
        *group,
        func.count().label("facts"), total(c.assigned.is_(True)).label("assigned"), total(done).label("completed"),
        total(done & c.on_time.is_(True)).label("on_time"), total(late).label("late"),
        func.coalesce(func.sum(c.delays), _ZERO).label("delays"),
        func.coalesce(func.sum(c.failed_reviews), _ZERO).label("failed_reviews"),
        total(c.failed_reviews > _ZERO).label("facts_with_failed_reviews"),
        total(c.delays > _ZERO).label("delayed"), total(c.exempt.is_(True)).label("exempt"),
        total(c.assigned.is_(True), u).label("u_assigned"), total(done, u).label("u_completed"),
        total(done & c.on_time.is_(True), u).label("u_on_time"), total(late, u).label("u_late"),
        total(done & c.exempt.is_(False), u * quarters_left(c.failed_reviews)).label("q_quality"),
        total(on_time & c.exempt.is_(False), u * quarters_left(c.delays)).label("q_on_time"),
        total(late & c.exempt.is_(False), u * quarters_left(c.delays)).label("q_late"),
    ).where(*where).group_by(*grouping)  # fmt: skip
    exempt = select(*group, u, c.on_time, c.delays, c.failed_reviews, c.lineage).where(
        *where, done, c.exempt.is_(True)
    )
    return agg, exempt


def _exempt_from(lineage: Any) -> set[str]:
    data = orjson.loads(lineage) if isinstance(lineage, str) else lineage
    found: set[str] = set()
    for e in (data or {}).get("exemptions") or [{}]:
        found.update(e.get("applies_to") or ("quality", "timeliness"))
    return found


def _units(scaled: int) -> str:
    return str((Decimal(scaled) / UNIT_SCALE).quantize(Decimal("0.0001")))


def _quarter_units(quarters: int) -> str:
    return str((Decimal(quarters) * _Q).quantize(Decimal("0.000001")))


def _pct(part: Decimal, whole: Decimal) -> Decimal | None:
    return None if whole == 0 else (part * 100 / whole).quantize(Decimal("0.01"), ROUND_HALF_UP)


PolicyFor = Callable[[str], dict[str, Any]]
FrozenFor = Callable[[Connection, str, list[str]], dict[str, dict[str, Any]]]


def _frozen(conn: Connection, agency: str, months: list[str]) -> dict[str, dict[str, Any]]:
    return frozen_policies(conn, agency=agency, periods=months)


def summarize(conn: Connection, *, scope: Scope, group_by: str, period: str, policy_for: PolicyFor,
              agency: str | None = None, unit: str | None = None, person: str | None = None,
              frozen_for: FrozenFor | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One summary per group, sorted by group key. ``policy_for(agency)`` gives the current policy summary;
    ``frozen_for(conn, agency, months)`` the policies frozen at the closure of those of ``months`` that are
    closed (read from the store unless the caller keeps them)."""
    frozen_of = frozen_for or _frozen
    keys = GROUPS[group_by]
    months = months_of(period)
    rows, exempt_rows = _aggregate(conn, scope=scope, keys=keys, months=months,
                                   filters={"agency": agency, "unit": unit, "person_id": person})  # fmt: skip
    policies: dict[tuple[str, str], dict[str, Any]] = {}
    frozen: dict[str, dict[str, dict[str, Any]]] = {}

    def policy(agency_code: str, month: str) -> dict[str, Any]:
        if (agency_code, month) not in policies:
            if agency_code not in frozen:
                frozen[agency_code] = frozen_of(conn, agency_code, months)
            policies[(agency_code, month)] = frozen[agency_code].get(month) or policy_for(agency_code)
        return policies[(agency_code, month)]

    accs: dict[tuple[Any, ...], _Acc] = {}
    for r in rows:
        key = tuple(r[i] for i in range(len(keys)))
        acc = accs.setdefault(key, _Acc())
        acc.months.add(r.period)
        pol = policy(r.agency, r.period)
        acc.policies[r.period] = pol
        for name in _COUNTS:
            acc.add(acc.counts, name, getattr(r, name))
        for name in _UNITS:
            acc.add(acc.scaled, name, getattr(r, f"u_{name}"))
        acc.quarters["quality"] += int(r.q_quality)
        # full credit for on-time products (exempt ones included) under a policy frozen before their delays
        # were deducted: a closed month keeps the arithmetic it was closed under
        on_time = int(r.q_on_time) if _deducts_on_time_delays(pol) else 4 * int(r.u_on_time)
        acc.quarters["timeliness"] += on_time + (int(r.q_late) if pol["late_products"] == "deduct" else 0)
    for r in exempt_rows:
        acc = accs[tuple(r[i] for i in range(len(keys)))]
        units, covered = int(r.units_scaled), _exempt_from(r.lineage)
        pol = policy(r.agency, r.period)
        deduct = pol["late_products"] == "deduct"
        acc.quarters["quality"] += 4 * units if "quality" in covered else units * max(0, 4 - r.failed_reviews)
        if r.on_time is not False and not _deducts_on_time_delays(pol):
            continue  # already in the on-time credit above
        if "timeliness" in covered:
            acc.quarters["timeliness"] += 4 * units
        elif r.on_time is True or deduct:
            acc.quarters["timeliness"] += units * max(0, 4 - r.delays)
    return [_view(keys, key, accs[key], period, months) for key in sorted(accs, key=lambda k: [x or "" for x in k])]


def _view(keys: tuple[str, ...], key: tuple[Any, ...], acc: _Acc, period: str, months: list[str]) -> dict[str, Any]:
    assigned = Decimal(acc.scaled.get("assigned", 0)) / UNIT_SCALE
    completed = Decimal(acc.scaled.get("completed", 0)) / UNIT_SCALE
    quality = Decimal(acc.quarters["quality"]) * _Q
    timeliness = Decimal(acc.quarters["timeliness"]) * _Q
    a, b, c = _pct(completed, assigned), _pct(quality, assigned), _pct(timeliness, assigned)
    score = None
    if a is not None and b is not None and c is not None:
        capped = min(a, Decimal(100)) + min(b, Decimal(100)) + min(c, Decimal(100))
        score = (capped / 3 * Decimal("0.7")).quantize(Decimal("0.01"), ROUND_HALF_UP)
    completed_q = 4 * acc.scaled.get("completed", 0)
    by_policy: dict[bytes, list[str]] = {}
    for month in sorted(acc.policies):
        by_policy.setdefault(orjson.dumps(acc.policies[month], option=orjson.OPT_SORT_KEYS), []).append(month)
    return {
        **dict(zip(keys, key, strict=True)),
        "period": period,
        "months": [m for m in months if m in acc.months],
        "counts": {name: acc.counts.get(name, 0) for name in _COUNTS},
        "units": {
            "assigned": _units(acc.scaled.get("assigned", 0)),
            "completed": _units(acc.scaled.get("completed", 0)),
            "completed_on_time": _units(acc.scaled.get("on_time", 0)),
            "completed_late": _units(acc.scaled.get("late", 0)),
            "quality": _quarter_units(acc.quarters["quality"]),
            "timeliness": _quarter_units(acc.quarters["timeliness"]),
            "quality_deducted": _quarter_units(completed_q - acc.quarters["quality"]),
            "timeliness_deducted": _quarter_units(completed_q - acc.quarters["timeliness"]),
        },
        "policies": [{"months": ms, **orjson.loads(p)} for p, ms in by_policy.items()],
        "reference": {
            "label": REFERENCE_LABEL,
            "a_quantity_pct": None if a is None else str(a),
            "b_quality_pct": None if b is None else str(b),
            "c_timeliness_pct": None if c is None else str(c),
            "task_score_70": None if score is None else str(score),
        },
    }  # fmt: skip


def policy_summary(policy: Any) -> dict[str, Any]:
    """What of a :class:`~gateway.mapping.policy.ScoringPolicy` a summary depends on (frozen at closing).

    ``on_time_delays: deduct``: an on-time product's delays deduct from its timeliness too (session 6; DOMAIN.md
    §2, each delay deducts 25 %). Policies frozen before it lack the member, and their months keep full
    timeliness for on-time products, so a closed month's summary stays what it was when it was closed."""
    return {
        "scoring_period": policy.scoring_period, "late_products": policy.late_products,
        "delay": policy.delay.count.value, "days_per_delay": policy.delay.days_per_delay,
        "on_time_against": policy.on_time_against, "returns_are_failed_reviews": policy.returns_are_failed_reviews,
        "deduction_per_failed_review": str(DEDUCTION), "deduction_per_delay": str(DEDUCTION),
        "on_time_delays": "deduct",
    }  # fmt: skip


def _deducts_on_time_delays(policy: Mapping[str, Any]) -> bool:
    return policy.get("on_time_delays") == "deduct"
