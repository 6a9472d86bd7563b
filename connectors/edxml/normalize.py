"""edXML packets -> canonical work items: one received document with its status history.

A record (see :class:`EdxmlNormalizeConfig`) holds a parsed document packet and the status packets the
receiving organ sent about it. The work item is keyed like the e-office keys the same document
(``doc:{agency}:in:{issuer}:{number_symbol}`` by default), so both systems meet in one work item and one fact
per person and role. Status codes become events and participants (``StaffInfo.Staff`` is the actor, resolved
in the ``edxml`` id system): 03 register (clerk), 04 assign (directing leader), 05 process and 06 finish
(lead); 13/15/16 are the take-back dialogue, and a document whose business type is *revoke* (1), or whose
take-back was accepted (15), is ``revoked=True`` so its facts are retracted.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.declarative.fieldmap import path_getter
from connectors.edxml._dates import parse_edxml_date
from connectors.edxml.packets import STATUS_CODES
from gateway.errors import NormalizeError
from gateway.types import Event, EventKind, ItemKind, Participant, Role, SourceRecord, WorkItem

__all__ = ["DEFAULT_STATUS_MAP", "EdxmlNormalizeConfig", "StatusRule", "compile_edxml_normalizer"]


class StatusRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event: EventKind
    role: Role | None = None


DEFAULT_STATUS_MAP: dict[str, StatusRule] = {
    "01": StatusRule(event=EventKind.OTHER),
    "02": StatusRule(event=EventKind.OTHER),
    "03": StatusRule(event=EventKind.REGISTER, role=Role.CLERK),
    "04": StatusRule(event=EventKind.ASSIGN, role=Role.DIRECTING_LEADER),
    "05": StatusRule(event=EventKind.PROCESS, role=Role.LEAD),
    "06": StatusRule(event=EventKind.FINISH, role=Role.LEAD),
    "13": StatusRule(event=EventKind.OTHER),
    "15": StatusRule(event=EventKind.REVOKE),
    "16": StatusRule(event=EventKind.OTHER),
}


class EdxmlNormalizeConfig(BaseModel):
    """How a record carrying edXML packets becomes a work item (the ``edxml:`` block of a stream)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal[ItemKind.INCOMING_DOCUMENT] = ItemKind.INCOMING_DOCUMENT
    document: str = "document"  # path of the parsed document packet in the record
    statuses: str | None = "statuses"  # path of the list of parsed status packets
    receiver: str | None = None  # path of the receiving OrganId; default: the status senders, then To[0]
    key: str = "doc:{agency}:in:{issuer}:{number_symbol}"
    agencies: dict[str, str] = Field(min_length=1)  # receiving OrganId -> gateway agency code
    status_map: dict[str, StatusRule] = Field(default_factory=lambda: dict(DEFAULT_STATUS_MAP))
    due_end_of_day: bool = True


_KEY_FIELDS = frozenset({"agency", "issuer", "number_symbol", "document_id", "receiver"})


def compile_edxml_normalizer(cfg: EdxmlNormalizeConfig, *, id_system: str) -> Callable[[SourceRecord], WorkItem]:
    fields = {name for _, name, _, _ in string.Formatter().parse(cfg.key) if name}
    unknown = sorted(fields - _KEY_FIELDS)
    if unknown:
        raise ValueError(f"edxml key template uses unknown fields {unknown}; use {sorted(_KEY_FIELDS)}")
    doc_at = path_getter(cfg.document)
    statuses_at = path_getter(cfg.statuses) if cfg.statuses else None
    receiver_at = path_getter(cfg.receiver) if cfg.receiver else None
    table = {**DEFAULT_STATUS_MAP, **cfg.status_map}

    def normalize(record: SourceRecord) -> WorkItem:
        payload = record.payload
        try:
            doc = doc_at(payload)
            if not isinstance(doc, Mapping) or doc.get("kind") != "document":
                raise NormalizeError(f"record has no edXML document packet at {cfg.document!r}")
            statuses = [s for s in (statuses_at(payload) if statuses_at else None) or () if isinstance(s, Mapping)]
            receiver = _receiver(doc, statuses, receiver_at(payload) if receiver_at else None)
            agency = cfg.agencies.get(receiver)
            if agency is None:
                raise NormalizeError(
                    f"receiving organ {receiver!r} is not in the source's agencies map; add it to 'agencies'"
                )
            values = {
                "agency": agency,
                "receiver": receiver,
                "issuer": (doc.get("from") or {}).get("OrganId"),
                "number_symbol": doc.get("number_symbol"),
                "document_id": doc.get("document_id"),
            }
            empty = sorted(name for name in fields if not values.get(name))
            if empty:
                raise NormalizeError(f"edXML document lacks {', '.join(empty)} for the work-item key")
            return _item(record, cfg, table, doc, statuses, values, id_system)
        except NormalizeError as exc:
            exc.source, exc.stream, exc.record_key = record.source, record.stream, record.key
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise NormalizeError(
                f"cannot normalize edXML record: {exc}", source=record.source, stream=record.stream,
                record_key=record.key,
            ) from exc  # fmt: skip

    return normalize


def _receiver(doc: Mapping[str, Any], statuses: list[Mapping[str, Any]], explicit: Any) -> str:
    if explicit:
        return str(explicit)
    for status in statuses:
        organ = (status.get("from") or {}).get("OrganId")
        if organ:
            return str(organ)
    to = doc.get("to") or []
    if to and to[0].get("OrganId"):
        return str(to[0]["OrganId"])
    raise NormalizeError("cannot tell the receiving organ: no receiver field, no status sender, no To")


def _item(
    record: SourceRecord,
    cfg: EdxmlNormalizeConfig,
    table: Mapping[str, StatusRule],
    doc: Mapping[str, Any],
    statuses: list[Mapping[str, Any]],
    values: Mapping[str, Any],
    id_system: str,
) -> WorkItem:
    due = parse_edxml_date(doc.get("due_date"), end_of_day=cfg.due_end_of_day)
    timeline: list[tuple[datetime, str, Mapping[str, Any]]] = []
    for status in statuses:
        at = parse_edxml_date(status.get("timestamp"))
        if at is None:
            raise NormalizeError(f"status {status.get('status_code')} without a timestamp")
        timeline.append((at, str(status.get("status_code")), status))
    timeline.sort(key=lambda t: (t[0], t[1]))
    events: list[Event] = []
    people: dict[tuple[str, Role], Participant] = {}
    received = finished = None
    take_back_accepted = False
    last_code: str | None = None
    for at, code, status in timeline:
        rule = table.get(code)
        if rule is None:
            raise NormalizeError(f"status code {code} has no mapping; add it to 'status_map'")
        staff = ((status.get("staff") or {}).get("Staff") or "").strip() or None
        events.append(
            Event(kind=rule.event, at=at, actor=staff, note=status.get("description") or status.get("status"))
        )
        if code in ("01", "03") and received is None:
            received = at
        if code == "06":
            finished = at
        take_back_accepted = take_back_accepted or code == "15"
        last_code = code
        if rule.role is not None and staff is not None and (staff, rule.role) not in people:
            people[(staff, rule.role)] = Participant(user_id=staff, role=rule.role, assigned_at=at, display_name=staff)
    priority = doc.get("priority")
    return WorkItem(
        key=cfg.key.format_map(values),
        kind=cfg.kind,
        source=record.source,
        stream=record.stream,
        record_key=record.key,
        agency=str(values["agency"]),
        id_system=id_system,
        title=doc.get("subject"),
        doc_type=doc.get("type_name") or None,
        number_symbol=doc.get("number_symbol"),
        status=_status_name(last_code),
        received_at=received,
        due_at=due,
        done_at=finished,
        revoked=doc.get("business") == "revoke" or take_back_accepted,
        participants=tuple(people.values()),
        events=tuple(events),
        attributes={
            "issuer": (doc.get("from") or {}).get("OrganName"),
            "issuer_organ_id": values.get("issuer"),
            "document_id": doc.get("document_id"),
            "business": doc.get("business"),
            "priority": priority,
            "promulgation_date": doc.get("promulgation_date"),
        },
    )


def _status_name(code: str | None) -> str | None:
    return STATUS_CODES.get(code) if code else None
