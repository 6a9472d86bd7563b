"""Authoring checks: ``mappings check`` (static analysis) and ``mappings test`` (rule-file examples).

Static analysis reasons about the structured ``match`` of rules (CEL ``when`` conditions are opaque): a rule is
*unreachable* when a rule tried before it, without a ``when``, matches everything it matches; two rules
*overlap* when they share a priority, have no ``when`` and can match the same item (file order then decides
silently). Catalog products whose coefficient falls outside their group's frame are reported too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.mapping.examples import Example, ExamplePerson
from gateway.mapping.mappingset import MappingSet, load_mappings
from gateway.mapping.people import ID_COLUMNS, PeopleDirectory, Person
from gateway.mapping.rules import CompiledRule
from gateway.types import Fact


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mappings: MappingSet | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def _covers(outer: frozenset[Any] | None, inner: frozenset[Any] | None) -> bool:
    return outer is None or (inner is not None and inner <= outer)


def _intersects(a: frozenset[Any] | None, b: frozenset[Any] | None) -> bool:
    return a is None or b is None or bool(a & b)


def shadows(first: CompiledRule, later: CompiledRule) -> bool:
    """Whether ``first`` (tried earlier, unconditional) matches every item ``later`` could match."""
    return first.condition is None and all((
        later.kinds <= first.kinds, _covers(first.doc_types, later.doc_types), _covers(first.sources, later.sources),
        _covers(first.streams, later.streams), _covers(first.id_systems, later.id_systems),
    ))  # fmt: skip


def overlaps(a: CompiledRule, b: CompiledRule) -> bool:
    return (
        a.priority == b.priority and a.condition is None and b.condition is None and bool(a.kinds & b.kinds)
        and _intersects(a.doc_types, b.doc_types) and _intersects(a.sources, b.sources)
        and _intersects(a.streams, b.streams) and _intersects(a.id_systems, b.id_systems)
    )  # fmt: skip


def rule_problems(ms: MappingSet) -> list[str]:
    out: list[str] = []
    for agency in ms.agencies:
        rules = ms.rules_for(agency)
        for index, later in enumerate(rules):
            where = f"{later.file}:{later.line}:1"
            for first in rules[:index]:
                if shadows(first, later):
                    out.append(f"{where}: rule {later.id} is unreachable for {agency}: {first.id} "
                               f"({first.file}:{first.line}) is tried first and matches all it does")  # fmt: skip
                    break
                if overlaps(first, later):
                    out.append(f"{where}: rule {later.id} overlaps {first.id} for {agency} at priority "
                               f"{later.priority}; give one a higher priority or a narrower match")  # fmt: skip
    return list(dict.fromkeys(out))


def check_mappings(directory: Path) -> CheckReport:
    """Everything ``kpigw mappings check`` reports: load errors, rule reachability, catalog frames."""
    report = CheckReport()
    try:
        ms = load_mappings(directory)
    except ConfigError as exc:
        lines = str(exc).splitlines()
        report.errors.extend(lines[1:] if len(lines) > 1 else lines)
        return report
    report.mappings = ms
    report.warnings.extend(ms.warnings)
    report.warnings.extend(rule_problems(ms))
    for history in ms.catalogs.values():
        for catalog in history.versions:
            report.warnings.extend(f"{catalog.path}: {p}" for p in catalog.frame_problems())
    return report


@dataclass
class ExampleResult:
    file: str
    name: str
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def example_directory(people: Sequence[ExamplePerson]) -> PeopleDirectory:
    persons = [Person(p.person_id, p.full_name, p.agency, p.unit, p.job_position, p.is_leader, p.reports_to)
               for p in people]  # fmt: skip
    ids: dict[str, dict[str, str]] = {system: {} for system in ID_COLUMNS}
    for p in people:
        for system, value in p.ids.items():
            for uid in [value] if isinstance(value, str) else value:
                ids.setdefault(system, {})[uid] = p.person_id
    return PeopleDirectory(persons, ids, version="p-examples")


def _compare(fact: Fact, expected: dict[str, Any]) -> list[str]:
    out = []
    for name, want in expected.items():
        got = getattr(fact, name)
        if isinstance(want, Decimal) and isinstance(got, Decimal):
            same = want == got
        else:
            same = (got.value if hasattr(got, "value") else got) == (want.value if hasattr(want, "value") else want)
        if not same:
            shown = format(got.normalize(), "f") if isinstance(got, Decimal) else got
            out.append(f"{fact.person_id}/{fact.role.value}: {name} is {shown}, expected {want}")
    return out


def run_example(ms: MappingSet, example: Example, *, label: str) -> list[str]:
    item = example.item.to_work_item(f"example:{label}")
    valuation = ms.value(item, raw={"content_hash": "example"})
    expect = example.expect
    failures: list[str] = []
    if expect.rule is not None and valuation.rule_id != expect.rule:
        failures.append(f"rule {valuation.rule_id} decided, expected {expect.rule}")
    if valuation.unmatched != expect.unmatched:
        failures.append(f"unmatched is {valuation.unmatched}, expected {expect.unmatched}")
    kinds = sorted({p.kind for p in valuation.problems})
    if kinds != sorted(set(expect.problems)):
        details = "; ".join(p.detail for p in valuation.problems) or "none"
        failures.append(f"problems {kinds}, expected {sorted(set(expect.problems))} ({details})")
    got = {(f.person_id, f.role): f for f in valuation.facts}
    wanted = {(e.person_id, e.role): e for e in expect.facts}
    for key in wanted.keys() - got.keys():
        failures.append(f"missing fact for {key[0]}/{key[1].value}")
    for key in got.keys() - wanted.keys():
        failures.append(f"unexpected fact for {key[0]}/{key[1].value} ({got[key].product_code})")
    for key in wanted.keys() & got.keys():
        fields = wanted[key].model_dump(exclude_none=True, exclude={"person_id", "role"})
        failures.extend(_compare(got[key], fields))
    return failures


def run_examples(ms: MappingSet) -> list[ExampleResult]:
    """Run every example of every rule file (with the file's ``example_people`` when it has them)."""
    results = []
    for loaded in ms.rule_files:
        people = loaded.spec.example_people
        scoped = ms.with_directory(example_directory(people)) if people else ms
        for index, example in enumerate(loaded.spec.examples):
            label = f"{loaded.path.stem}.{index}"
            results.append(ExampleResult(str(loaded.path), example.name, run_example(scoped, example, label=label)))
    return results


__all__ = ["CheckReport", "ExampleResult", "check_mappings", "rule_problems", "run_example", "run_examples"]
