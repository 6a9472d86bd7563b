"""Rules: which work item is which catalog product, who is credited in which role, and how many.

A rule file (``mappings/rules/*.yaml``) belongs to one agency or to all (``agency: "*"``). For an agency, its
own rules plus the common rules it does not override (same ``id``) or ``disable`` are tried by descending
``priority`` (ties: the agency's rules first, then file order); the first whose ``match`` and CEL ``when``
hold decides. A rule either names a ``product`` (credited to the listed ``roles`` with their ``share``) or
``skip``s the item on purpose (matched, no product). An item no rule matches is *unmatched*: reported in the
coverage report, not an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.mapping._cel import Expression, ExpressionError
from gateway.mapping.doctypes import canonical_doc_type
from gateway.mapping.examples import Example, ExamplePerson
from gateway.types import ItemKind, Role
from gateway.yamlconf import Marks, validation_problems, where

RuleId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """Structured pre-conditions, checked before ``when`` (fast, and what overlap analysis reasons about)."""

    kind: Annotated[tuple[ItemKind, ...], Field(min_length=1)]
    doc_type: tuple[str, ...] | None = None
    source: tuple[str, ...] | None = None
    stream: tuple[str, ...] | None = None
    id_system: tuple[str, ...] | None = None

    @field_validator("kind", "doc_type", "source", "stream", "id_system", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RoleCredit(_Strict):
    share: Annotated[Decimal, Field(gt=0, le=10)] = Decimal(1)
    product: Annotated[str | None, Field(description="a different product for this role")] = None
    split: Annotated[bool, Field(description="divide the share among everyone holding the role")] = False
    from_reports_to: Annotated[
        bool, Field(description="directing_leader only: without one named, credit the lead's reporting leader")
    ] = False


class RuleSpec(_Strict):
    id: RuleId
    description: str | None = None
    priority: int = 0
    match: Match
    when: Annotated[str | None, Field(description="CEL condition over the work item's variables")] = None
    product: str | None = None
    quantity: Annotated[Decimal | str, Field(description="a number, or a CEL expression")] = Decimal(1)
    roles: dict[Role, RoleCredit] = {}
    skip: Annotated[str | None, Field(description="matched on purpose without a product; the reason")] = None

    @field_validator("roles", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: ({"share": v} if isinstance(v, int | float | str) else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _product_or_skip(self) -> RuleSpec:
        if (self.product is None) == (self.skip is None):
            raise ValueError("give exactly one of product (with roles) or skip (with its reason)")
        if self.product is not None and not self.roles:
            raise ValueError("a product rule needs roles to credit")
        for role, credit in self.roles.items():
            if credit.from_reports_to and role is not Role.DIRECTING_LEADER:
                raise ValueError(f"from_reports_to applies to directing_leader, not {role.value}")
        return self


class RuleFile(_Strict):
    agency: Annotated[str, Field(pattern=r"^([A-Z0-9_]+|\*)$")]
    description: str | None = None
    disable: tuple[RuleId, ...] = ()
    rules: tuple[RuleSpec, ...] = ()
    example_people: tuple[ExamplePerson, ...] = ()
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True, slots=True)
class CompiledRole:
    role: Role
    share: Decimal
    product: str | None
    split: bool
    from_reports_to: bool


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    file: str
    line: int
    agency: str
    priority: int
    order: int
    kinds: frozenset[ItemKind]
    doc_types: frozenset[str] | None
    sources: frozenset[str] | None
    streams: frozenset[str] | None
    id_systems: frozenset[str] | None
    condition: Expression | None
    product: str | None
    quantity: Decimal | Expression
    roles: tuple[CompiledRole, ...]
    skip: str | None
    spec: RuleSpec

    def products(self) -> set[str]:
        found = {r.product for r in self.roles if r.product}
        return found | ({self.product} if self.product else set())


@dataclass(frozen=True, slots=True)
class LoadedRuleFile:
    path: Path
    spec: RuleFile
    rules: tuple[CompiledRule, ...]
    marks: Marks


def _frozen(values: tuple[str, ...] | None, *, doc: bool = False) -> frozenset[str] | None:
    if values is None:
        return None
    return frozenset((canonical_doc_type(v) or "") if doc else v for v in values)


def _quantity(given: Decimal | str, compiled: Expression | None) -> Decimal | Expression:
    if isinstance(given, str):
        return compiled if compiled is not None else Decimal(0)  # Decimal(0): only when the load fails anyway
    return given


def _expressions(rule: RuleSpec, loc: tuple[str | int, ...], path: Path, marks: Marks
                 ) -> tuple[Expression | None, Expression | None, list[str]]:  # fmt: skip
    problems: list[str] = []
    condition = quantity = None
    dotted = ".".join(map(str, loc))
    if rule.when is not None:
        try:
            condition = Expression(rule.when)
        except ExpressionError as exc:
            problems.append(f"{where(path, marks, (*loc, 'when'))}: {dotted}.when: {exc}")
    if isinstance(rule.quantity, str):
        try:
            quantity = Expression(rule.quantity)
        except ExpressionError as exc:
            problems.append(f"{where(path, marks, (*loc, 'quantity'))}: {dotted}.quantity: {exc}")
    elif rule.quantity < 0:
        problems.append(f"{where(path, marks, (*loc, 'quantity'))}: {dotted}.quantity: must be >= 0")
    return condition, quantity, problems


def _rules_that_validate(data: Any, path: Path, marks: Marks) -> list[str]:
    """When the file as a whole fails, still compile the rules that validate, to report every problem."""
    problems: list[str] = []
    rules = data.get("rules") if isinstance(data, dict) else None
    for index, raw in enumerate(rules if isinstance(rules, list) else []):
        try:
            rule = RuleSpec.model_validate(raw)
        except ValidationError:
            continue  # already reported by the file's validation
        problems.extend(_expressions(rule, ("rules", index), path, marks)[2])
    return problems


def parse_rule_file(data: Any, *, path: Path, marks: Marks, label: str, order: int
                    ) -> tuple[LoadedRuleFile | None, list[str]]:  # fmt: skip
    """Validate and compile one rule file; ``label`` is how lineage names the file (relative path)."""
    try:
        spec = RuleFile.model_validate(data)
    except ValidationError as err:
        return None, validation_problems(path, marks, err) + _rules_that_validate(data, path, marks)
    problems: list[str] = []
    compiled: list[CompiledRule] = []
    seen: set[str] = set()
    for index, rule in enumerate(spec.rules):
        loc: tuple[str | int, ...] = ("rules", index)
        line = marks.get(loc, (0, 0))[0]
        if rule.id in seen:
            problems.append(f"{where(path, marks, (*loc, 'id'))}: rules.{index}.id: {rule.id!r} is defined twice")
        seen.add(rule.id)
        condition, quantity, found = _expressions(rule, loc, path, marks)
        problems.extend(found)
        compiled.append(CompiledRule(
            id=rule.id, file=label, line=line, agency=spec.agency, priority=rule.priority, order=order * 10_000 + index,
            kinds=frozenset(rule.match.kind), doc_types=_frozen(rule.match.doc_type, doc=True),
            sources=_frozen(rule.match.source), streams=_frozen(rule.match.stream),
            id_systems=_frozen(rule.match.id_system), condition=condition,
            product=rule.product, quantity=_quantity(rule.quantity, quantity),
            roles=tuple(CompiledRole(role, c.share, c.product, c.split, c.from_reports_to)
                        for role, c in rule.roles.items()),
            skip=rule.skip, spec=rule,
        ))  # fmt: skip
    if spec.agency == "*" and spec.disable:
        problems.append(f"{where(path, marks, ('disable',))}: disable: only an agency's file may disable rules")
    return LoadedRuleFile(path, spec, tuple(compiled), marks), problems


def rules_for(agency: str, files: tuple[LoadedRuleFile, ...]) -> tuple[CompiledRule, ...]:
    """The agency's effective rules in evaluation order."""
    own = [r for f in files if f.spec.agency == agency for r in f.rules]
    disabled = {d for f in files if f.spec.agency == agency for d in f.spec.disable}
    own_ids = {r.id for r in own}
    common = [r for f in files if f.spec.agency == "*" for r in f.rules
              if r.id not in own_ids and r.id not in disabled]  # fmt: skip
    ranked = [(r, 0) for r in own] + [(r, 1) for r in common]
    ranked.sort(key=lambda pair: (-pair[0].priority, pair[1], pair[0].order))
    return tuple(r for r, _ in ranked)


__all__ = ["CompiledRule", "LoadedRuleFile", "RuleFile", "RuleSpec", "parse_rule_file", "rules_for"]
