"""``/v1/admin`` operations: pause, resume and trigger sources; view and reset cursors (Kafka Connect offsets
style); list, inspect, replay and discard quarantine entries. Province-wide admins only (payloads hold every
agency's records); every change is audited with the caller's client id. Thin routes over :mod:`gateway.ops`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gateway.api.deps import AdminDep, ConnDep, RuntimeDep
from gateway.api.problems import ApiError, problem_responses
from gateway.api.schemas import Text
from gateway.ops import Conflict, Invalid, NotFound, control, cursors, quarantine
from gateway.runtime import Runtime
from gateway.security import Forbidden, Principal

router = APIRouter(prefix="/v1/admin", tags=["operations"],
                   responses=problem_responses(401, 403, 404, 409, 422, 429))  # fmt: skip
SourceName = Annotated[str, Path(max_length=64)]
EntryId = Annotated[int, Path(ge=1, le=2**62)]  # a row id: anything else is a 422, never a database error


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PauseIn(_Body):
    reason: Text | None = Field(default=None, max_length=500)


class CursorResetIn(_Body):
    to: AwareDatetime | None = Field(description="the new cursor; null: back to each stream's configured start")
    streams: list[Text] = Field(default_factory=list, max_length=50, description="empty: every stream")


class ReplayIn(_Body):
    ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(default_factory=list, max_length=10_000)
    source: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                               description="every open entry of this source")  # fmt: skip


class DiscardIn(_Body):
    reason: Text = Field(min_length=1, max_length=2000)


def _operator(caller: Principal) -> str:
    if not caller.scope.everything:
        raise Forbidden("operations are for province-wide admins")
    return caller.client_id


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except NotFound as exc:
        raise ApiError(404, "Not found", str(exc)) from exc
    except Conflict as exc:
        raise ApiError(409, "Conflict", str(exc)) from exc
    except Invalid as exc:
        raise ApiError(422, "Invalid request", str(exc)) from exc


def _source_status(rt: Runtime, name: str, conn: Any) -> dict[str, Any]:
    state = control.read_controls(conn).get(name) or control.ControlState(name)
    local = rt.scheduler.status().get(name) if rt.scheduler else None
    return {**state.as_dict(), "scheduler_here": local}


@router.get("/sources/{name}/control", summary="A source's pause state, pending trigger and local scheduler")
def get_control(rt: RuntimeDep, conn: ConnDep, caller: AdminDep, name: SourceName) -> dict[str, Any]:
    _operator(caller)
    with _translated():
        if name not in rt.sources:
            raise NotFound(f"no source named {name!r}")
        return _source_status(rt, name, conn)


@router.post("/sources/{name}/pause", summary="Pause a source on every replica (a running sync stops)")
def pause_source(rt: RuntimeDep, caller: AdminDep, name: SourceName, body: PauseIn | None = None) -> dict[str, Any]:
    actor = _operator(caller)
    with _translated(), rt.db.begin() as conn:
        return control.pause(conn, source=name, sources=rt.sources, actor=actor, now=datetime.now(UTC),
                             reason=body.reason if body else None).as_dict()  # fmt: skip


@router.post("/sources/{name}/resume", summary="Resume a paused source")
def resume_source(rt: RuntimeDep, caller: AdminDep, name: SourceName) -> dict[str, Any]:
    actor = _operator(caller)
    with _translated(), rt.db.begin() as conn:
        return control.resume(conn, source=name, sources=rt.sources, actor=actor, now=datetime.now(UTC)).as_dict()


@router.post("/sources/{name}/trigger", status_code=202,
             summary="Run a source now, on whichever replica takes its lease")  # fmt: skip
def trigger_source(rt: RuntimeDep, caller: AdminDep, name: SourceName) -> dict[str, Any]:
    actor = _operator(caller)
    with _translated(), rt.db.begin() as conn:
        return control.request_run(conn, source=name, sources=rt.sources, actor=actor,
                                   now=datetime.now(UTC)).as_dict()  # fmt: skip


@router.get("/sources/{name}/cursors", summary="Committed cursors (live and backfill) of a source")
def get_cursors(rt: RuntimeDep, conn: ConnDep, caller: AdminDep, name: SourceName) -> dict[str, Any]:
    _operator(caller)
    with _translated():
        return {"source": name, "cursors": cursors.show(conn, source=name, sources=rt.sources)}


def _streams(rt: Runtime, name: str) -> list[str]:
    if name not in rt.sources:
        return []
    connector = rt.connector(name)
    try:
        return list(connector.streams())
    finally:
        connector.close()


@router.patch("/sources/{name}/cursors", summary="Move cursors to a time (or to the start); pause the source first")
def reset_cursors(rt: RuntimeDep, caller: AdminDep, name: SourceName, body: CursorResetIn) -> dict[str, Any]:
    actor = _operator(caller)
    known = _streams(rt, name)
    with _translated(), rt.db.begin() as conn:
        changes = cursors.reset(conn, source=name, streams=body.streams, known_streams=known, to=body.to,
                                actor=actor, now=datetime.now(UTC), sources=rt.sources)  # fmt: skip
    return {"source": name, "changes": changes}


@router.get("/quarantine", summary="Quarantine entries in id order (no payloads)")
def list_quarantine(
    conn: ConnDep, caller: AdminDep,
    source: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["open", "replayed", "discarded", "resolved", "all"] = "open",
    stage: Literal["fetch", "normalize", "map"] | None = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:  # fmt: skip
    _operator(caller)
    items = quarantine.list_entries(conn, source=source, status=None if status == "all" else status, stage=stage,
                                    after=after, limit=limit + 1)  # fmt: skip
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_after": items[-1]["id"] if more and items else None}


@router.get("/quarantine/{entry_id}", summary="One entry with its payload and reason")
def get_quarantine(conn: ConnDep, caller: AdminDep, entry_id: EntryId) -> dict[str, Any]:
    _operator(caller)
    with _translated():
        return quarantine.get_entry(conn, entry_id)


def _replay(rt: Runtime, actor: str, ids: list[int], source: str | None) -> dict[str, Any]:
    with _translated():
        report = quarantine.replay(rt.db, ids=ids, source=source, actor=actor, now=datetime.now(UTC),
                                   connector_for=rt.connector, valuer=rt.mappings.current)  # fmt: skip
    return report.as_dict()


@router.post("/quarantine/replay", summary="Replay entries (by id, or every open one of a source)")
def replay_many(rt: RuntimeDep, caller: AdminDep, body: ReplayIn) -> dict[str, Any]:
    return _replay(rt, _operator(caller), body.ids, body.source)


@router.post("/quarantine/{entry_id}/replay", summary="Re-normalize and re-value one entry with the current mappings")
def replay_one(rt: RuntimeDep, caller: AdminDep, entry_id: EntryId) -> dict[str, Any]:
    return _replay(rt, _operator(caller), [entry_id], None)


@router.post("/quarantine/{entry_id}/discard", summary="Close an entry for good, with a reason")
def discard_entry(rt: RuntimeDep, caller: AdminDep, entry_id: EntryId, body: DiscardIn) -> dict[str, Any]:
    actor = _operator(caller)
    with _translated(), rt.db.begin() as conn:
        return quarantine.discard(conn, entry_id=entry_id, reason=body.reason, actor=actor, now=datetime.now(UTC))
