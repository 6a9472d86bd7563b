"""edXML dates as the real files write them: ``yyyy/MM/dd`` and ``dd/MM/yyyy``, with or without a time.

Separators ``/``, ``-`` or ``.``; an optional ``HH:mm[:ss]``; ISO 8601 (``2026-09-01T08:00:00+07:00``) too.
Naive values are Vietnam time. The year's position decides the order, so the two orders never collide.
"""

from __future__ import annotations

import re
from datetime import datetime, time

from gateway.types import VN_TZ

_DATE = re.compile(
    r"^\s*(?:(?P<y1>\d{4})[/.-](?P<m1>\d{1,2})[/.-](?P<d1>\d{1,2})|(?P<d2>\d{1,2})[/.-](?P<m2>\d{1,2})[/.-](?P<y2>\d{4}))"
    r"(?:[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.\d+)?)?)?\s*$"
)


def parse_edxml_date(text: str | None, *, end_of_day: bool = False) -> datetime | None:
    """Parse one edXML date; ``None`` for empty; ``ValueError`` for a value that is not a date."""
    if text is None:
        return None
    value = text.strip()
    if not value:
        return None
    match = _DATE.match(value)
    if match is None:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an edXML date: {value!r}") from None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=VN_TZ)
    g = match.groupdict()
    year, month, day = (int(g["y1"]), int(g["m1"]), int(g["d1"])) if g["y1"] else (
        int(g["y2"]), int(g["m2"]), int(g["d2"]))  # fmt: skip
    if g["H"] is None:
        clock = time(23, 59, 59) if end_of_day else time(0, 0)
        return datetime.combine(datetime(year, month, day).date(), clock, VN_TZ)  # noqa: DTZ001 - date only
    return datetime(year, month, day, int(g["H"]), int(g["M"]), int(g["S"] or 0), tzinfo=VN_TZ)


def format_edxml_date(moment: datetime, *, with_time: bool = True) -> str:
    """The QCVN 102 form: ``yyyy/MM/dd HH:mm:ss`` (Vietnam time)."""
    local = moment.astimezone(VN_TZ)
    return local.strftime("%Y/%m/%d %H:%M:%S" if with_time else "%Y/%m/%d")
