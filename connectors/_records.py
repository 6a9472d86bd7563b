"""What every declarative connector does around a cursor: where a read starts, and each item's key and cursor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from gateway.connector import RecordProblem


def key_and_cursor(
    item: Mapping[str, Any],
    *,
    index: int,
    key_of: Callable[[Any], Any],
    key_name: str,
    cursor_of: Callable[[Any], Any] | None,
    parse_cursor: Callable[[Any], datetime | None] | None,
) -> tuple[str, datetime | None] | RecordProblem:
    """The item's key and cursor instant, or the problem that keeps it from being a record (never raised)."""
    key = key_of(item)
    if key is None or key == "":
        return RecordProblem(key=f"#{index}", payload=item, reason=f"record has no key field {key_name!r}")
    moment = None
    if cursor_of is not None and parse_cursor is not None:
        try:
            moment = parse_cursor(cursor_of(item))
        except (ValueError, TypeError) as exc:
            return RecordProblem(key=str(key), payload=item, reason=f"bad cursor value: {exc}")
    return str(key), moment


class CursorStream(Protocol):
    """What :func:`lower_bound` reads of a connector's compiled stream."""

    @property
    def cfg(self) -> Any: ...  # its ``cursor`` (or None) has a ``start``

    @property
    def parse_cursor(self) -> Callable[[Any], datetime | None] | None: ...

    @property
    def lookback(self) -> timedelta | None: ...


def lower_bound(stream: CursorStream, cursor: str | None) -> datetime | None:
    """Where a read starts: the saved cursor minus the look-back (inclusive), or the configured start;
    None for a stream without a cursor."""
    cur = stream.cfg.cursor
    if cur is None or stream.parse_cursor is None or stream.lookback is None:
        return None
    if cursor is None:
        first = stream.parse_cursor(cur.start)
        if first is None:
            raise ValueError(f"cursor start {cur.start!r} is empty")
        return first
    return datetime.fromisoformat(cursor) - stream.lookback
