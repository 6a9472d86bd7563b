"""Scoring policy as configuration: everything DOMAIN.md §2 leaves to the province.

``mappings/policy.yaml`` holds a ``default`` policy and per-agency overrides (deep-merged over the default)::

    default:
      scoring_period: month              # month | quarter
      credit_date: {completed: [done_at, due_at, received_at], open: [due_at, received_at]}
      delay: {count: missed_deadline, days_per_delay: 5}   # | extension | days_late
      on_time_against: final            # original | final deadline
      late_products: deduct             # deduct (stay in timeliness, 25% per delay) | exclude
      returns_are_failed_reviews: true
      returns_roles: [drafter, lead]
      unplanned: {attribute: unplanned, assigned: true}
    agencies:
      XA_COCSAN: {scoring_period: quarter}

``mappings/exemptions.yaml`` lists objective-cause exemptions as data: which item and person, the cause, who
confirmed it and when. A fact they match carries ``exempt=True`` and the exemption in its lineage.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import ConfigError
from gateway.types import Role
from gateway.yamlconf import Marks, load_yaml, where

DateField = Literal["done_at", "due_at", "received_at", "assigned_at"]


class DelayCount(StrEnum):
    MISSED_DEADLINE = "missed_deadline"  # each deadline in force that passed before the work was done
    EXTENSION = "extension"  # each extension of the deadline, plus a final late finish
    DAYS_LATE = "days_late"  # one per started block of days_per_delay days late


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreditDate(_Strict):
    """Which date puts a fact in a month: the first of these the item (or participant) has."""

    completed: Annotated[tuple[DateField, ...], Field(min_length=1)] = ("done_at", "due_at", "received_at")
    open: Annotated[tuple[DateField, ...], Field(min_length=1)] = ("due_at", "assigned_at", "received_at")


class DelayPolicy(_Strict):
    count: DelayCount = DelayCount.MISSED_DEADLINE
    days_per_delay: Annotated[int, Field(ge=1)] = 5


class UnplannedPolicy(_Strict):
    """Unplanned work (việc đột xuất): flagged by a work-item attribute; counted as assigned or as a bonus."""

    attribute: str = "unplanned"
    assigned: bool = True


class ScoringPolicy(_Strict):
    scoring_period: Literal["month", "quarter"] = "month"
    credit_date: CreditDate = CreditDate()
    delay: DelayPolicy = DelayPolicy()
    on_time_against: Literal["original", "final"] = "final"
    late_products: Literal["deduct", "exclude"] = "deduct"
    returns_are_failed_reviews: bool = True
    returns_roles: tuple[Role, ...] = (Role.DRAFTER, Role.LEAD)
    returns_attribute: Annotated[str, Field(description="attribute counting returns when events lack them")] = (
        "returns"
    )
    failed_reviews_attribute: str = "failed_reviews"
    unplanned: UnplannedPolicy = UnplannedPolicy()

    def summary(self) -> dict[str, Any]:
        """The parts of the policy a scoring front end needs next to each fact (kept in its lineage)."""
        return {"scoring_period": self.scoring_period, "late_products": self.late_products,
                "delay": self.delay.count.value, "on_time_against": self.on_time_against}  # fmt: skip


class PolicyFile(_Strict):
    default: ScoringPolicy = ScoringPolicy()
    agencies: dict[str, dict[str, Any]] = {}


class Exemption(_Strict):
    item_key: Annotated[str, Field(min_length=1)]
    person_id: Annotated[str, Field(min_length=1)]
    role: Role | None = None
    cause: Annotated[str, Field(min_length=1, description="Nguyên nhân khách quan")]
    confirmed_by: Annotated[str, Field(min_length=1, description="Người xác nhận (person id or name, title)")]
    confirmed_at: date
    reference: Annotated[str | None, Field(description="Văn bản xác nhận, e.g. '45/BB-SKHCN'")] = None
    applies_to: tuple[Literal["quality", "timeliness"], ...] = ("quality", "timeliness")


class ExemptionsFile(_Strict):
    exemptions: tuple[Exemption, ...] = ()


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _problems(path: Path, marks: Marks, err: ValidationError, *prefixes: tuple[str | int, ...]) -> list[str]:
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        full = next((p + loc for p in prefixes if p + loc[:1] in marks), prefixes[-1] + loc)
        msg = "unknown key (check its spelling)" if e["type"] == "extra_forbidden" else e["msg"]
        out.append(f"{where(path, marks, full)}: {'.'.join(map(str, full))}: {msg}")
    return out


def load_policies(path: Path) -> tuple[ScoringPolicy, dict[str, ScoringPolicy], list[str]]:
    """The default policy, each agency's merged policy, and every problem found."""
    if not path.exists():
        return ScoringPolicy(), {}, []
    try:
        data, marks = load_yaml(path)
    except ConfigError as exc:
        return ScoringPolicy(), {}, [str(exc)]
    data = data or {}
    try:
        spec = PolicyFile.model_validate(data)
    except ValidationError as err:
        return ScoringPolicy(), {}, _problems(path, marks, err, ())
    problems: list[str] = []
    base = spec.default.model_dump(mode="json")
    agencies: dict[str, ScoringPolicy] = {}
    for agency, override in spec.agencies.items():
        try:
            agencies[agency] = ScoringPolicy.model_validate(_merge(base, override))
        except ValidationError as err:
            problems.extend(_problems(path, marks, err, ("agencies", agency), ("default",)))
    return spec.default, agencies, problems


def load_exemptions(path: Path) -> tuple[dict[tuple[str, str], tuple[Exemption, ...]], list[str]]:
    if not path.exists():
        return {}, []
    try:
        data, marks = load_yaml(path)
        spec = ExemptionsFile.model_validate(data or {})
    except ConfigError as exc:
        return {}, [str(exc)]
    except ValidationError as err:
        return {}, _problems(path, marks, err, ())
    table: dict[tuple[str, str], tuple[Exemption, ...]] = {}
    for exemption in spec.exemptions:
        key = (exemption.item_key, exemption.person_id)
        table[key] = (*table.get(key, ()), exemption)
    return table, []


__all__ = ["DelayCount", "Exemption", "ScoringPolicy", "load_exemptions", "load_policies"]
