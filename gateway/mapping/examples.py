"""Examples inside rule files: an input work item and the facts it must produce.

``kpigw mappings test`` and the test suite run them. A file may carry ``example_people`` (same fields as the
people directory, with each system's ids) so its examples do not depend on the province's HR export.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.types import VN_TZ, Event, EventKind, ItemKind, Participant, Role, WorkItem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _aware(value: datetime | None) -> datetime | None:
    # Sources send naive local times; so may example authors. Vietnam time is the gateway's convention.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=VN_TZ)


class ExamplePerson(_Strict):
    person_id: str
    full_name: str = ""
    agency: str = ""
    unit: str | None = None
    job_position: str | None = None
    is_leader: bool = False
    reports_to: str | None = None
    ids: dict[str, str | list[str]] = {}


class ExampleParticipant(_Strict):
    user_id: str
    role: Role
    assigned_at: datetime | None = None
    due_at: datetime | None = None
    done_at: datetime | None = None


class ExampleEvent(_Strict):
    kind: EventKind
    at: datetime
    actor: str | None = None
    target: str | None = None
    due_at: datetime | None = None
    note: str | None = None


class ExampleItem(_Strict):
    kind: ItemKind
    agency: str
    key: str | None = None
    source: str = "example"
    stream: str = "documents"
    record_key: str | None = None
    id_system: str = "ioffice"
    unit: str | None = None
    title: str | None = None
    doc_type: str | None = None
    number_symbol: str | None = None
    status: str | None = None
    received_at: datetime | None = None
    due_at: datetime | None = None
    done_at: datetime | None = None
    revoked: bool = False
    participants: tuple[ExampleParticipant, ...] = ()
    events: tuple[ExampleEvent, ...] = ()
    attributes: dict[str, Any] = {}

    def to_work_item(self, default_key: str) -> WorkItem:
        key = self.key or default_key
        return WorkItem(
            key=key, kind=self.kind, source=self.source, stream=self.stream, record_key=self.record_key or key,
            agency=self.agency, id_system=self.id_system, unit=self.unit, title=self.title, doc_type=self.doc_type,
            number_symbol=self.number_symbol, status=self.status, received_at=_aware(self.received_at),
            due_at=_aware(self.due_at), done_at=_aware(self.done_at), revoked=self.revoked,
            participants=tuple(
                Participant(p.user_id, p.role, _aware(p.assigned_at), _aware(p.due_at), _aware(p.done_at))
                for p in self.participants
            ),
            events=tuple(Event(e.kind, _aware(e.at) or e.at, e.actor, e.target, _aware(e.due_at), e.note)
                         for e in self.events),
            attributes=dict(self.attributes),
        )  # fmt: skip


class ExpectedFact(_Strict):
    """The fields given are compared; the ones left out are not."""

    person_id: str
    role: Role
    product_code: str | None = None
    units: Decimal | None = None
    quantity: Decimal | None = None
    period: Annotated[str | None, Field(pattern=r"^\d{4}-\d{2}$")] = None
    assigned: bool | None = None
    completed: bool | None = None
    on_time: bool | None = None
    delays: int | None = None
    failed_reviews: int | None = None
    exempt: bool | None = None
    unit: str | None = None

    @field_validator("period", mode="before")
    @classmethod
    def _period_text(cls, value: Any) -> Any:
        return value if value is None else str(value)


class Expectation(_Strict):
    rule: str | None = None
    unmatched: bool = False
    facts: tuple[ExpectedFact, ...] = ()
    problems: tuple[str, ...] = ()


class Example(_Strict):
    name: str
    item: ExampleItem
    expect: Expectation


__all__ = ["Example", "ExampleItem", "ExamplePerson", "Expectation", "ExpectedFact"]
