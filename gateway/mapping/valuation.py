"""Valuing one work item: the first matching rule, the catalog in force, the people, the policy -> facts.

This is the sync engine's hot path. Everything it can precompute is precomputed at load (rules in order per
agency, lineage fragments per rule and catalog); conditions are memoized (see :mod:`gateway.mapping._cel`).
Ordinary data problems never raise: they come back as :class:`MappingProblem` next to the facts produced.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from gateway.mapping._cel import Expression, ExpressionError, ItemVars
from gateway.mapping.people import Person
from gateway.mapping.policy import DelayCount, ScoringPolicy
from gateway.mapping.rules import CompiledRole, CompiledRule
from gateway.types import VN_TZ, EventKind, Fact, Participant, Role, WorkItem

if TYPE_CHECKING:
    from gateway.mapping.mappingset import MappingSet


@dataclass(frozen=True, slots=True)
class MappingProblem:
    """Something the mapping could not value. ``quarantine``: replay the record once the cause is fixed."""

    kind: str  # unresolved_person | no_catalog | unknown_product | invalid_value | no_period | no_rule | ...
    detail: str
    quarantine: bool
    subject: str | None = None  # what to count in reports, e.g. "ioffice:u123" for an unresolved person


@dataclass(frozen=True, slots=True)
class Valuation:
    facts: list[Fact]
    unmatched: bool
    problems: list[MappingProblem] = field(default_factory=list)
    rule_id: str | None = None

    @property
    def quarantine(self) -> bool:
        return any(p.quarantine for p in self.problems)

    @property
    def match_status(self) -> str:
        """What the engine stores on the work item: mapped | unmatched | partial."""
        if self.unmatched:
            return "unmatched"
        return "partial" if self.quarantine else "mapped"


_DAY = 86_400.0


def pattern_of(item: WorkItem) -> str:
    """A low-cardinality description of an item, for unmatched-pattern counts."""
    view = ItemVars(item)
    return f"{item.kind.value}|{view.get('doc_type') or '-'}|{item.source}/{item.stream}"


def select_rule(rules: tuple[CompiledRule, ...], item: WorkItem, view: ItemVars,
                problems: list[MappingProblem]) -> CompiledRule | None:  # fmt: skip
    doc_type = view.get("doc_type")
    for rule in rules:
        if item.kind not in rule.kinds:
            continue
        if rule.doc_types is not None and doc_type not in rule.doc_types:
            continue
        if (rule.sources is not None and item.source not in rule.sources) or (
            rule.streams is not None and item.stream not in rule.streams
        ) or (rule.id_systems is not None and item.id_system not in rule.id_systems):
            continue
        if rule.condition is not None:
            try:
                ok = rule.condition.evaluate(view)
            except ExpressionError as exc:
                problems.append(MappingProblem("condition_error", f"rule {rule.id}: {exc}", False, rule.id))
                continue
            if ok is not True:
                if not isinstance(ok, bool):
                    problems.append(MappingProblem(
                        "condition_error", f"rule {rule.id}: when gave {ok!r}, not true/false", False, rule.id))
                continue
        return rule
    return None


def _quantity(rule: CompiledRule, view: ItemVars) -> Decimal:
    if not isinstance(rule.quantity, Expression):
        return rule.quantity
    raw = rule.quantity.evaluate(view)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ExpressionError(f"quantity gave {raw!r}, not a number")
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise ExpressionError(f"quantity gave {raw!r}, not a number") from exc
    if not value.is_finite() or value < 0:
        raise ExpressionError(f"quantity gave {raw!r}; it must be a number >= 0")
    return value


@dataclass(slots=True)
class _Holder:
    user_id: str
    system: str
    person: Person | None
    participant: Participant | None


def _holders(ms: MappingSet, item: WorkItem, credit: CompiledRole, problems: list[MappingProblem]) -> list[_Holder]:
    out: list[_Holder] = []
    seen: set[str] = set()
    people: set[str] = set()
    for p in item.participants:
        if p.role is not credit.role or p.user_id in seen:
            continue
        seen.add(p.user_id)
        person = ms.directory.resolve(item.id_system, p.user_id)
        if person is not None:
            # One person named under two of their ids (a renamed account) holds the role once: a second holder
            # would be a second fact with the same natural key and would shrink everyone's split share.
            if person.person_id in people:
                continue
            people.add(person.person_id)
        if person is None:
            problems.append(MappingProblem(
                "unresolved_person",
                f"{item.id_system} user {p.user_id!r} ({p.role.value}) is not in the people directory",
                True, f"{item.id_system}:{p.user_id}",
            ))  # fmt: skip
        out.append(_Holder(p.user_id, item.id_system, person, p))
    if not out and credit.from_reports_to:
        for p in item.participants:
            lead = ms.directory.resolve(item.id_system, p.user_id) if p.role is Role.LEAD else None
            if lead is None:
                continue
            leader = ms.directory.leader_of(lead.person_id)
            if leader is not None and leader.person_id not in seen:
                seen.add(leader.person_id)
                # The credit comes from the directory's reporting line: lineage names the lead it came through.
                out.append(_Holder(lead.person_id, "reports_to", leader, None))
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=VN_TZ)
_DUE_EVENTS = frozenset({EventKind.ASSIGN, EventKind.FORWARD, EventKind.DEADLINE_CHANGE})


def _deadlines(item: WorkItem, user_id: str, final_due: datetime | None) -> list[tuple[datetime | None, datetime]]:
    """The deadlines in force over time, as (set at, due), from events that carry a due date for this person."""
    timeline: list[tuple[datetime | None, datetime]] = []
    for e in item.events:
        if e.due_at is not None and e.kind in _DUE_EVENTS and (e.target is None or e.target == user_id):
            timeline.append((e.at, e.due_at))
    if len(timeline) > 1:
        timeline.sort(key=lambda pair: pair[0] or _EPOCH)
    if not timeline and final_due is not None:
        timeline.append((None, final_due))
    return timeline


def _delays(policy: ScoringPolicy, timeline: list[tuple[datetime | None, datetime]], done: datetime | None,
            reference_due: datetime | None) -> int:  # fmt: skip
    count = policy.delay.count
    if count is DelayCount.MISSED_DEADLINE:
        missed = 0
        for index, (_set_at, due) in enumerate(timeline):
            end = timeline[index + 1][0] if index + 1 < len(timeline) else done
            if end is not None and end > due:
                missed += 1
        return missed
    if count is DelayCount.EXTENSION:
        extended = sum(1 for prev, cur in itertools.pairwise(timeline) if cur[1] > prev[1])
        final_late = done is not None and bool(timeline) and done > timeline[-1][1]
        return extended + (1 if final_late else 0)
    if done is None or reference_due is None or done <= reference_due:
        return 0
    return math.ceil((done - reference_due).total_seconds() / _DAY / policy.delay.days_per_delay)


def _failed_reviews(policy: ScoringPolicy, item: WorkItem, role: Role, user_id: str) -> int:
    if role not in policy.returns_roles:
        return 0
    explicit = item.attributes.get(policy.failed_reviews_attribute)
    failed = explicit if isinstance(explicit, int) and not isinstance(explicit, bool) else 0
    if not policy.returns_are_failed_reviews:
        return failed
    returns = [e for e in item.events if e.kind is EventKind.RETURN]
    if returns:
        return failed + sum(1 for e in returns if e.target is None or e.target == user_id)
    counted = item.attributes.get(policy.returns_attribute)
    return failed + (counted if isinstance(counted, int) and not isinstance(counted, bool) else 0)


def _credit_moment(policy: ScoringPolicy, *, completed: bool, dates: Mapping[str, datetime | None]
                   ) -> datetime | None:  # fmt: skip
    order = policy.credit_date.completed if completed else policy.credit_date.open
    for name in order:
        moment = dates.get(name)
        if moment is not None:
            return moment
    return None


def value_item(ms: MappingSet, item: WorkItem, raw: Mapping[str, str]) -> Valuation:
    if item.revoked:
        return Valuation([], False, [])
    problems: list[MappingProblem] = []
    view = ItemVars(item)
    rule = select_rule(ms.rules_for(item.agency), item, view, problems)
    if rule is None:
        problems.append(MappingProblem("no_rule", f"no rule matches {pattern_of(item)}", False, pattern_of(item)))
        return Valuation([], True, problems)
    if rule.skip is not None:
        return Valuation([], False, problems, rule.id)
    try:
        quantity = _quantity(rule, view)
    except ExpressionError as exc:
        problems.append(MappingProblem("invalid_value", f"rule {rule.id}: {exc}", True, rule.id))
        return Valuation([], False, problems, rule.id)
    policy = ms.policy_for(item.agency)
    unplanned = bool(item.attributes.get(policy.unplanned.attribute))
    raw_lineage = {"source": item.source, "stream": item.stream, "record_key": item.record_key,
                   "content_hash": raw.get("content_hash")}  # fmt: skip
    rule_lineage = {"id": rule.id, "file": rule.file, "line": rule.line}
    facts: list[Fact] = []
    for credit in rule.roles:
        holders = _holders(ms, item, credit, problems)
        if not holders:
            continue
        share = credit.share / len(holders) if credit.split else credit.share
        code = credit.product or rule.product or ""
        for holder in holders:
            if holder.person is None:
                continue
            fact = _fact(ms, item, rule, credit, holder, holder.person, policy, problems,
                         code=code, units_factor=quantity * share, quantity=quantity, unplanned=unplanned,
                         raw_lineage=raw_lineage, rule_lineage=rule_lineage)  # fmt: skip
            if fact is not None:
                facts.append(fact)
    if len(problems) > 1:
        problems = list(dict.fromkeys(problems))  # one catalog gap is one problem, not one per person
    return Valuation(facts, False, problems, rule.id)


def _fact(ms: MappingSet, item: WorkItem, rule: CompiledRule, credit: CompiledRole, holder: _Holder,
          person: Person, policy: ScoringPolicy, problems: list[MappingProblem], *, code: str,
          units_factor: Decimal, quantity: Decimal, unplanned: bool, raw_lineage: dict[str, Any],
          rule_lineage: dict[str, Any]) -> Fact | None:  # fmt: skip
    p = holder.participant
    due = (p.due_at if p else None) or item.due_at
    done = (p.done_at if p else None) or item.done_at
    timeline = _deadlines(item, holder.user_id, due)
    if due is None and timeline:
        due = timeline[-1][1]
    reference_due = (timeline[0][1] if timeline else due) if policy.on_time_against == "original" else due
    completed = done is not None
    on_time = None if done is None else (reference_due is None or done <= reference_due)
    dates = {"done_at": done, "due_at": due, "received_at": item.received_at,
             "assigned_at": (p.assigned_at if p else None)}  # fmt: skip
    moment = _credit_moment(policy, completed=completed, dates=dates)
    if moment is None:
        problems.append(MappingProblem("no_period", f"item {item.key} has none of the dates the policy credits "
                                       "by", True, item.key))  # fmt: skip
        return None
    local = moment.astimezone(VN_TZ)
    catalog = ms.catalog_for(item.agency, local.date())
    if catalog is None:
        problems.append(MappingProblem("no_catalog", f"no catalog of {item.agency} is in force on "
                                       f"{local.date().isoformat()}", True, item.agency))  # fmt: skip
        return None
    if code not in catalog.products:
        problems.append(MappingProblem("unknown_product", f"rule {rule.id}: product {code} is not in catalog "
                                       f"{item.agency} {catalog.version}", True, code))  # fmt: skip
        return None
    exemptions = [e for e in ms.exemptions.get((item.key, person.person_id), ())
                  if e.role is None or e.role is credit.role]  # fmt: skip
    lineage: dict[str, Any] = {
        "raw": raw_lineage,
        "rule": rule_lineage,
        "catalog": ms.catalog_lineage(catalog),
        "person": {"system": holder.system, "user_id": holder.user_id, "person_id": person.person_id,
                   "directory_version": ms.directory.version},
        "mappings_version": ms.version,
        "product": {"code": code, "coefficient": str(catalog.coefficient(code)), "share": str(credit.share)},
        "policy": ms.policy_summary(item.agency),
    }  # fmt: skip
    if exemptions:
        lineage["exemptions"] = [e.model_dump(mode="json") for e in exemptions]
    return Fact(
        item_key=item.key, person_id=person.person_id, role=credit.role, agency=item.agency,
        unit=person.unit or item.unit, period=f"{local.year:04d}-{local.month:02d}", product_code=code,
        catalog_version=catalog.version, rule_id=rule.id, units=catalog.coefficient(code) * units_factor,
        quantity=quantity, assigned=policy.unplanned.assigned if unplanned else True, completed=completed,
        due_at=due, done_at=done, on_time=on_time, delays=_delays(policy, timeline, done, reference_due),
        failed_reviews=_failed_reviews(policy, item, credit.role, holder.user_id), exempt=bool(exemptions),
        source=item.source, stream=item.stream, record_key=item.record_key, lineage=lineage,
    )  # fmt: skip


__all__ = ["MappingProblem", "Valuation", "pattern_of", "value_item"]
