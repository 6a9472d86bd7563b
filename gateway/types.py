"""Canonical types that flow through the gateway.

The pipeline is ``SourceRecord`` (what a connector read, unchanged) -> ``WorkItem`` (the normalized
document, task, dossier or step, with its participants and events) -> ``Fact`` (one person's credit for
one product instance, valued in standard units).

These are plain frozen dataclasses: cheap to build on the hot path, hashable where they are keys, and free
of any store or API concern. Connectors import them through :mod:`gateway.core`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

VN_TZ = timezone(timedelta(hours=7), "Asia/Ho_Chi_Minh")
"""Vietnam has no daylight saving time; a fixed offset avoids a tzdata dependency."""

UNIT_SCALE = 10_000
"""Standard units are stored as integers of 1/10,000 unit: exact sums, no float equality."""


class ItemKind(enum.StrEnum):
    INCOMING_DOCUMENT = "incoming_document"
    OUTGOING_DOCUMENT = "outgoing_document"
    TASK = "task"
    DOSSIER = "dossier"
    STEP = "step"


class Role(enum.StrEnum):
    """The part a person played in a work item; a fact is keyed by it."""

    LEAD = "lead"  # chủ trì
    CO_HANDLER = "co_handler"  # phối hợp
    DRAFTER = "drafter"  # người soạn thảo
    APPROVER = "approver"  # người duyệt / ký
    DIRECTING_LEADER = "directing_leader"  # lãnh đạo chỉ đạo
    CLERK = "clerk"  # văn thư
    HANDLER = "handler"  # one-stop step handler


class EventKind(enum.StrEnum):
    REGISTER = "register"
    ASSIGN = "assign"
    FORWARD = "forward"
    PROCESS = "process"
    RETURN = "return"  # trả lại: a draft sent back, a failed review signal
    FINISH = "finish"
    DEADLINE_CHANGE = "deadline_change"
    REVOKE = "revoke"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record as a connector read it: the payload is kept unchanged for the raw archive."""

    source: str
    stream: str
    key: str
    payload: Mapping[str, Any]
    cursor_value: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Records cross to the page-preparing worker processes by the hundred thousand: positional arguments
        # pickle and load in C, where a slots dataclass's default state goes through dataclasses.fields().
        return SourceRecord, (self.source, self.stream, self.key, self.payload, self.cursor_value)


@dataclass(frozen=True, slots=True)
class Participant:
    """A person's involvement as the source names them (``user_id`` is the source system's own id)."""

    user_id: str
    role: Role
    assigned_at: datetime | None = None
    due_at: datetime | None = None
    done_at: datetime | None = None
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    at: datetime
    actor: str | None = None
    target: str | None = None
    due_at: datetime | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A normalized unit of work.

    ``key`` is canonical: for documents it is built from the issuing organ and number-symbol when known, so
    the same document read from two systems is one work item and yields one fact per person and role.
    """

    key: str
    kind: ItemKind
    source: str
    stream: str
    record_key: str
    agency: str
    id_system: str  # the directory namespace the participants' user ids belong to ("ioffice", "onestop", ...)
    unit: str | None = None
    title: str | None = None
    doc_type: str | None = None
    number_symbol: str | None = None
    status: str | None = None
    received_at: datetime | None = None
    due_at: datetime | None = None
    done_at: datetime | None = None
    revoked: bool = False
    participants: tuple[Participant, ...] = ()
    events: tuple[Event, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fact:
    """One person's credit for one product instance in one period.

    Identity is natural: ``(item_key, person_id, role)``. ``units`` is ``coefficient * quantity`` in standard
    units. ``lineage`` says which raw record, rule, catalog version and person resolution produced it.
    """

    item_key: str
    person_id: str
    role: Role
    agency: str
    unit: str | None
    period: str  # YYYY-MM, the month the product is credited to
    product_code: str
    catalog_version: str
    rule_id: str
    units: Decimal
    quantity: Decimal
    assigned: bool
    completed: bool
    due_at: datetime | None
    done_at: datetime | None
    on_time: bool | None
    delays: int
    failed_reviews: int
    exempt: bool
    source: str
    stream: str
    record_key: str
    lineage: Mapping[str, Any] = field(default_factory=dict)

    @property
    def natural_key(self) -> str:
        return f"{self.item_key}|{self.person_id}|{self.role.value}"


def period_of(moment: datetime) -> str:
    """The month (YYYY-MM) a moment falls in, in Vietnam time."""
    return moment.astimezone(VN_TZ).strftime("%Y-%m")


def to_scaled(units: Decimal) -> int:
    return int((units * UNIT_SCALE).to_integral_value())


def from_scaled(scaled: int) -> Decimal:
    return (Decimal(scaled) / UNIT_SCALE).quantize(Decimal("0.0001"))


def scaled_text(scaled: int) -> str:
    """``str(from_scaled(scaled))`` without Decimal arithmetic (the change feed renders two per fact)."""
    sign = "-" if scaled < 0 else ""
    whole, fraction = divmod(abs(scaled), 10_000)
    return f"{sign}{whole}.{fraction:04d}"
