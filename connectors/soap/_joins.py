"""Joins: per page, batched calls that attach related items (a document packet, its status packets) to records.

One call per ``batch`` distinct keys instead of one per record: a hub's ``GetDocument``/``GetTraces`` that
take a repeated ``DocumentId`` turn a page of 500 records into three round trips. A Fault classified
``quarantine`` quarantines the records of that batch; a record missing its required item is quarantined too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from connectors.declarative.fieldmap import path_getter
from connectors.soap._envelope import FaultQuarantine
from connectors.soap.config import JoinConfig
from gateway.connector import RecordProblem
from gateway.types import SourceRecord

if TYPE_CHECKING:
    from connectors.soap.connector import SoapConnector


def _norm(value: Any) -> str | None:
    return None if value in (None, "") else str(value).strip()


def attach_joins(
    connector: SoapConnector, joins: Sequence[JoinConfig], records: list[SourceRecord], problems: list[RecordProblem]
) -> list[SourceRecord]:
    current = records
    for join in joins:
        current = _attach(connector, join, current, problems)
    return current


def _attach(
    connector: SoapConnector, join: JoinConfig, records: list[SourceRecord], problems: list[RecordProblem]
) -> list[SourceRecord]:
    from_of = path_getter(join.from_)
    record_paths = [path_getter(p) for p in join.match]
    item_paths = [path_getter(p) for p in join.match.values()]
    values = list(dict.fromkeys(v for v in (_norm(from_of(r.payload)) for r in records) if v is not None))
    found: dict[tuple[str | None, ...], list[Mapping[str, Any]]] = {}
    refused: dict[str, str] = {}
    for start in range(0, len(values), join.batch):
        chunk = values[start : start + join.batch]
        try:
            reply = connector.call(join.operation, {**join.args, join.arg: chunk}, name=join.name)
        except FaultQuarantine as exc:
            refused.update(dict.fromkeys(chunk, str(exc)))
            continue
        items, item_problems = connector.items(reply, join.records, join.payload)
        for problem in item_problems:
            problems.append(
                RecordProblem(key=f"{join.name}{problem.key}", payload=problem.payload, reason=problem.reason)
            )
        for item in items:
            found.setdefault(tuple(_norm(get(item)) for get in item_paths), []).append(item)
    out: list[SourceRecord] = []
    for record in records:
        payload = record.payload
        origin = _norm(from_of(payload))
        if origin in refused:
            problems.append(RecordProblem(record.key, payload, f"{join.name}: {refused[origin]}", "FaultQuarantine"))
            continue
        matched = found.get(tuple(_norm(get(payload)) for get in record_paths), [])
        if join.many:
            attached: Any = list(matched)
        elif matched:
            attached = matched[-1]
        elif join.required:
            problems.append(RecordProblem(record.key, payload, f"{join.name}: the source returned no matching item"))
            continue
        else:
            attached = None
        out.append(
            SourceRecord(
                record.source, record.stream, record.key, {**payload, join.name: attached}, record.cursor_value
            )
        )
    return out
