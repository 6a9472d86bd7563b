"""The audit trail of operator actions: one ``audit_log`` row per action, in the action's own transaction."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from gateway.store.models import AuditLog

AUDIT = AuditLog.__table__  # type: ignore[attr-defined]


def record_action(conn: Connection, *, actor: str, action: str, detail: Mapping[str, Any],
                  now: datetime | None = None) -> None:  # fmt: skip
    """Append ``action`` by ``actor``; commits (or not) with the caller's transaction."""
    blob = orjson.dumps(dict(detail), option=orjson.OPT_SORT_KEYS, default=str).decode()
    conn.execute(AUDIT.insert(), {"at": now or datetime.now(UTC), "actor": actor, "action": action, "detail": blob})


def cli_actor() -> str:
    """Who runs a CLI command: ``cli:<os user>@<host>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (containers)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"
