"""Synthetic bulk records of the e-office stand-in: millions of incoming documents, none held in memory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from gateway.standins._eoffice_data import (
    KIND_BULK,
    AgencyStaff,
    calendar_time,
    incoming_doc,
    materialize,
    plan_incoming,
)
from gateway.standins._eoffice_model import Rng, mix, render_incoming, render_log, summarize
from gateway.types import VN_TZ

BULK_ID_BASE = 100_000_000
"""Bulk record ids start here; base and newly added records stay far below."""
BULK_TEMPLATES_PER_AGENCY = 512
_BULK_REFERENCE = datetime(2025, 1, 1, tzinfo=VN_TZ)
_GOLDEN = 0x9E3779B97F4A7C15
_TWO = tuple(f"{n:02d}" for n in range(60))


@dataclass(slots=True)
class _Template:
    """One generated document, rendered once; bulk records are templates shifted in time."""

    row: dict[str, Any]
    symbol_tail: str  # "/QĐ-UBND" in "156/QĐ-UBND"
    received_back: int  # seconds from receipt to the last event
    issued_days: int  # ngayBanHanh = receipt date - issued_days
    due_days: int | None  # hanXuLy = receipt date + due_days
    log: list[dict[str, Any]]
    log_back: list[int]  # per event: seconds before the last event
    log_due_days: list[int | None]


class BulkIncoming:
    """``count`` synthetic incoming documents over ``span_days`` (a year) before ``window_end``, made on demand.

    Record ``i`` has id ``BULK_ID_BASE + i``, agency ``ctxs[i % len(ctxs)]`` and update time
    ``window_start + floor(i * span / count)`` minutes, so the order (update time, id) is the index order,
    runs of equal update times occur when ``count`` exceeds the minutes in the window, and every lookup
    (lower bound, page offset, agency filter) is arithmetic. A record is one of a few hundred generated
    templates per agency (picked by a hash of ``i``) shifted to its update time: memory stays flat
    whatever ``count`` is, and rendering is a dict copy plus a few date strings.
    """

    __slots__ = ("_days", "_start_local", "_templates", "count", "ctxs", "seed", "span_minutes", "window_end")

    def __init__(self, seed: int, count: int, window_end: datetime, ctxs: tuple[AgencyStaff, ...], *,
                 span_days: int = 365) -> None:  # fmt: skip
        self.seed = seed
        self.count = count
        self.window_end = window_end.astimezone(VN_TZ)
        self.ctxs = ctxs
        self.span_minutes = span_days * 24 * 60
        self._templates: list[list[_Template]] | None = None
        start = self.window_start
        self._start_local = start.date().toordinal() * 86400 + start.hour * 3600 + start.minute * 60 + start.second
        self._days: dict[int, str] = {}

    @property
    def window_start(self) -> datetime:
        return self.window_end - timedelta(minutes=self.span_minutes)

    def updated_at(self, index: int) -> datetime:
        return self.window_start + timedelta(minutes=index * self.span_minutes // self.count)

    def first_index(self, since: datetime | None) -> int:
        """The smallest index whose update time is >= ``since``."""
        if since is None or since <= self.window_start:
            return 0
        seconds = int((since - self.window_start).total_seconds())
        minutes = -(-seconds // 60)
        return min(self.count, -(-minutes * self.count // self.span_minutes))

    def window(self, since: datetime | None, agency_index: int | None) -> tuple[int, int, int]:
        """``(first, step, total)``: the filtered records are indices ``first + k * step``, k < total."""
        first = self.first_index(since)
        if agency_index is None:
            return first, 1, self.count - first
        n = len(self.ctxs)
        first_j = -(-(first - agency_index) // n)
        last_j = -(-(self.count - agency_index) // n)  # exclusive
        return first_j * n + agency_index, n, max(0, last_j - first_j)

    def index_of(self, doc_id: int) -> int | None:
        index = doc_id - BULK_ID_BASE
        return index if 0 <= index < self.count else None

    def _template(self, index: int) -> _Template:
        if self._templates is None:
            self._templates = [
                [self._build_template(a, t) for t in range(BULK_TEMPLATES_PER_AGENCY)] for a in range(len(self.ctxs))
            ]
        pick = (((index * _GOLDEN) & 0xFFFFFFFFFFFFFFFF) >> 40) % BULK_TEMPLATES_PER_AGENCY
        return self._templates[index % len(self.ctxs)][pick]

    def _build_template(self, agency_index: int, number: int) -> _Template:
        rng = Rng(mix(self.seed, KIND_BULK, agency_index, number))
        ctx = self.ctxs[agency_index]
        unit, co, steps = plan_incoming(rng, ctx)
        total = 3 * sum(step[3] for step in steps)
        events = materialize(steps, _BULK_REFERENCE - timedelta(seconds=total), calendar_time)
        doc = incoming_doc(rng, ctx, unit, co, events, doc_id=0, so_den=0)
        received = doc.received_at.date()
        summary = summarize(events)
        return _Template(
            row=render_incoming(doc, with_log=False),
            symbol_tail=doc.symbol[doc.symbol.index("/") :],
            received_back=int((_BULK_REFERENCE - doc.received_at).total_seconds()),
            issued_days=(received - doc.issued_on).days,
            due_days=(summary.due - received).days if summary.due else None,
            log=render_log(events),
            log_back=[int((_BULK_REFERENCE - e.at).total_seconds()) for e in events],
            log_due_days=[(e.due - received).days if e.due else None for e in events],
        )

    # Rendering works on "local seconds" (proleptic ordinal day * 86400 + seconds of the Vietnam day):
    # integer arithmetic and cached day strings are several times faster than datetime + strftime.

    def _local_end(self, index: int) -> int:
        return self._start_local + (index * self.span_minutes // self.count) * 60

    def _day(self, ordinal: int) -> str:
        text = self._days.get(ordinal)
        if text is None:
            day = date.fromordinal(ordinal)
            text = self._days[ordinal] = f"{day.day:02d}/{day.month:02d}/{day.year:04d}"
        return text

    def _moment(self, local: int) -> str:
        ordinal, rest = divmod(local, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{self._day(ordinal)} {_TWO[hours]}:{_TWO[minutes]}:{_TWO[seconds]}"

    def row(self, index: int, with_log: bool) -> dict[str, Any]:
        tpl = self._template(index)
        end = self._local_end(index)
        received = end - tpl.received_back
        day = received // 86400
        end_text = self._moment(end)
        row = tpl.row.copy()
        row["id"] = BULK_ID_BASE + index
        row["soDen"] = index // len(self.ctxs) + 1
        row["soKyHieu"] = f"{1 + ((index * _GOLDEN) >> 20) % 3200}{tpl.symbol_tail}"
        row["ngayDen"] = self._moment(received)
        row["ngayBanHanh"] = self._day(day - tpl.issued_days)
        row["hanXuLy"] = None if tpl.due_days is None else self._day(day + tpl.due_days)
        row["ngayHoanThanh"] = end_text
        row["ngayCapNhat"] = end_text
        if with_log:
            row["nhatKy"] = self._log(tpl, end, day)
        return row

    def log(self, index: int) -> list[dict[str, Any]]:
        tpl = self._template(index)
        end = self._local_end(index)
        return self._log(tpl, end, (end - tpl.received_back) // 86400)

    def _log(self, tpl: _Template, end: int, day: int) -> list[dict[str, Any]]:
        out = []
        for entry, back, due_days in zip(tpl.log, tpl.log_back, tpl.log_due_days, strict=True):
            item = entry.copy()
            item["thoiGian"] = self._moment(end - back)
            item["hanXuLy"] = None if due_days is None else self._day(day + due_days)
            out.append(item)
        return out
