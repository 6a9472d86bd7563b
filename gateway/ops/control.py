"""Pause, resume and trigger sources through the store, so every replica sees the same state.

A paused source is skipped by every scheduler and its running sync stops after the page in flight. A manual
trigger is a timestamp: the replica holding the source's lease runs it at its next tick, whichever replica
received the request.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from gateway.ops._errors import NotFound
from gateway.ops.audit import record_action
from gateway.store._upsert import upsert
from gateway.store.models import SourceControl

CONTROL = SourceControl.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ControlState:
    source: str
    paused: bool = False
    reason: str | None = None
    updated_by: str | None = None
    updated_at: datetime | None = None
    trigger_requested_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        iso = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in self.__dict__.items()}
        return iso


def read_controls(conn: Connection) -> dict[str, ControlState]:
    """Every source's stored control state (sources never paused or triggered have no row)."""
    return {r.source: ControlState(r.source, bool(r.paused), r.reason, r.updated_by, r.updated_at,
                                   r.trigger_requested_at)
            for r in conn.execute(select(CONTROL))}  # fmt: skip


def _known(source: str, sources: Collection[str]) -> None:
    if source not in sources:
        raise NotFound(f"no source named {source!r}; configured: {', '.join(sorted(sources)) or 'none'}")


def _write(conn: Connection, source: str, values: dict[str, Any]) -> ControlState:
    row = {"source": source, "paused": False, **values}  # a first write inserts the defaults for the rest
    upsert(conn, CONTROL, [row], conflict=("source",), update=tuple(values))
    return read_controls(conn)[source]


def pause(conn: Connection, *, source: str, sources: Collection[str], actor: str, now: datetime,
          reason: str | None = None) -> ControlState:  # fmt: skip
    _known(source, sources)
    state = _write(conn, source, {"paused": True, "reason": reason, "updated_by": actor, "updated_at": now})
    record_action(conn, actor=actor, action="pause_source", detail={"source": source, "reason": reason}, now=now)
    return state


def resume(conn: Connection, *, source: str, sources: Collection[str], actor: str, now: datetime) -> ControlState:
    _known(source, sources)
    state = _write(conn, source, {"paused": False, "reason": None, "updated_by": actor, "updated_at": now})
    record_action(conn, actor=actor, action="resume_source", detail={"source": source}, now=now)
    return state


def request_run(conn: Connection, *, source: str, sources: Collection[str], actor: str,
                now: datetime) -> ControlState:  # fmt: skip
    """Ask the replica holding ``source``'s lease to run it now (at its next tick)."""
    _known(source, sources)
    state = _write(conn, source, {"trigger_requested_at": now, "updated_by": actor, "updated_at": now})
    record_action(conn, actor=actor, action="trigger_source", detail={"source": source}, now=now)
    return state
