"""What every declarative connector does around a cursor: where a read starts, and each item's key and cursor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

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


def lower_bound(
    cursor: str | None, *, start: str, parse_cursor: Callable[[Any], datetime | None], lookback: timedelta
) -> datetime:
    """Where a read starts: the saved cursor minus the look-back (inclusive), or the configured start."""
    if cursor is None:
        first = parse_cursor(start)
        if first is None:
            raise ValueError(f"cursor start {start!r} is empty")
        return first
    return datetime.fromisoformat(cursor) - lookback
