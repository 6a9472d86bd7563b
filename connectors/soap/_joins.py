"""Joins: per page, batched calls that attach related items (a document packet, its status packets) to records.

One call per ``batch`` distinct keys instead of one per record: a hub's ``GetDocument``/``GetTraces`` that
take a repeated ``DocumentId`` turn a page of 500 records into three round trips. A Fault classified
``quarantine`` quarantines the records of that batch; a record missing its required item is quarantined too.

With a stream's ``join_concurrency`` above 1 the page's join calls are pipelined: every call of every join
whose ``from`` does not read an earlier join's result is started at once on the connector's small pool (at
most that many in flight, on the client's keep-alive connections), and each reply is decoded on the thread that
fetched it, so one call's decoding overlaps another's wait for the source. Results are still consumed in the
order of the sequential code (join by join, batch by batch), so records, their items and their problems come out
identical. A call that fails (after its retries) fails the page before it is yielded: nothing of the page is
committed, and calls not yet started are cancelled.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any

from connectors.declarative.fieldmap import path_getter
from connectors.soap._envelope import FaultQuarantine
from connectors.soap.config import JoinConfig
from gateway.connector import RecordProblem
from gateway.types import SourceRecord

if TYPE_CHECKING:
    from connectors.soap.connector import SoapConnector

# One batch's outcome: its decoded items and problems, or the Fault that quarantines its records.
_Outcome = tuple[list[dict[str, Any]], list[RecordProblem]] | FaultQuarantine
_Batches = list[tuple[list[str], Callable[[], _Outcome]]]


def _norm(value: Any) -> str | None:
    return None if value in (None, "") else str(value).strip()


def attach_joins(
    connector: SoapConnector,
    joins: Sequence[JoinConfig],
    records: list[SourceRecord],
    problems: list[RecordProblem],
    *,
    pool: Executor | None = None,
) -> list[SourceRecord]:
    """Attach every join's items to ``records``; ``pool`` (or ``None``: one call after another) runs the calls."""
    started: list[Future[_Outcome]] = []

    def run(task: Callable[[], _Outcome]) -> Callable[[], _Outcome]:
        if pool is None:
            return task  # called when its result is due: exactly the sequential order of calls
        context = contextvars.copy_context()  # the call logs with the run's correlation id
        future = pool.submit(context.run, task)
        started.append(future)
        return future.result

    try:
        early = (
            {i: _start(connector, join, records, run) for i, join in enumerate(joins) if _independent(joins, i)}
            if pool is not None
            else {}  # one after another: each join asks only for the records the joins above it kept
        )
        current = records
        for i, join in enumerate(joins):
            batches = early[i] if i in early else _start(connector, join, current, run)
            current = _attach(join, current, batches, problems)
        return current
    finally:
        for future in started:  # only left over when a call failed: calls not yet sent are never sent
            future.cancel()


def _independent(joins: Sequence[JoinConfig], index: int) -> bool:
    """Whether a join's calls can start before the joins above it are attached (its ``from`` reads none of them)."""
    root = joins[index].from_.split(".", 1)[0]
    return all(earlier.name != root for earlier in joins[:index])


def _start(
    connector: SoapConnector,
    join: JoinConfig,
    records: Sequence[SourceRecord],
    run: Callable[[Callable[[], _Outcome]], Callable[[], _Outcome]],
) -> _Batches:
    from_of = path_getter(join.from_)
    values = list(dict.fromkeys(v for v in (_norm(from_of(r.payload)) for r in records) if v is not None))
    chunks = [values[start : start + join.batch] for start in range(0, len(values), join.batch)]
    return [(chunk, run(_fetcher(connector, join, chunk))) for chunk in chunks]


def _fetcher(connector: SoapConnector, join: JoinConfig, chunk: list[str]) -> Callable[[], _Outcome]:
    def fetch() -> _Outcome:
        try:
            reply = connector.call(join.operation, {**join.args, join.arg: chunk}, name=join.name)
        except FaultQuarantine as exc:
            return exc
        return connector.items(reply, join.records, join.payload)

    return fetch


def _attach(
    join: JoinConfig, records: list[SourceRecord], batches: _Batches, problems: list[RecordProblem]
) -> list[SourceRecord]:
    from_of = path_getter(join.from_)
    record_paths = [path_getter(p) for p in join.match]
    item_paths = [path_getter(p) for p in join.match.values()]
    found: dict[tuple[str | None, ...], list[Mapping[str, Any]]] = {}
    refused: dict[str, str] = {}
    for chunk, result in batches:
        outcome = result()
        if isinstance(outcome, FaultQuarantine):
            refused.update(dict.fromkeys(chunk, str(outcome)))
            continue
        items, item_problems = outcome
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
