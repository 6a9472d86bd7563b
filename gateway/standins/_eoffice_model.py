"""Records of the e-office stand-in, their derived fields, and their wire rendering (iOffice-shaped JSON).

A document's summary fields (assigning leader, lead handler, deadline, finish time, status, number of
returns, last update) are always *derived from its activity log*, so the list rows and the ``nhat-ky``
endpoint can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar

from gateway.types import VN_TZ

# Activity-log actions (``hanhDong``).
TIEP_NHAN = "TIEP_NHAN"  # clerk registers the incoming document
PHAN_CONG = "PHAN_CONG"  # leader assigns (sets the deadline)
CHUYEN_XU_LY = "CHUYEN_XU_LY"  # forwarded to another handler / submitted for signature
XU_LY = "XU_LY"  # processed: a draft submitted for review
TRA_LAI = "TRA_LAI"  # returned for rework (a failed review)
HOAN_THANH = "HOAN_THANH"  # finished
GIA_HAN = "GIA_HAN"  # deadline moved (carries the new deadline)

# Status values (``trangThai``).
CHO_XU_LY = "CHO_XU_LY"
DANG_XU_LY = "DANG_XU_LY"
DA_HOAN_THANH = "DA_HOAN_THANH"

T = TypeVar("T")
_MASK64 = (1 << 64) - 1
_OFFICE_OPEN = time(7, 30)
_OFFICE_CLOSE = time(17, 0)
_HOLIDAYS = frozenset({(1, 1), (4, 30), (5, 1), (9, 2)})  # month, day; enough for a stand-in


class Rng:
    """SplitMix64: tiny, fast, and identical on every Python version; one instance per record."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK64

    def next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def between(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``."""
        return low + self.next() % (high - low + 1)

    def chance(self, p: float) -> bool:
        return self.next() < int(p * 18446744073709551616.0)

    def choice(self, items: Sequence[T]) -> T:
        return items[self.next() % len(items)]


def mix(*parts: int) -> int:
    """A well-spread 64-bit seed from a few integers (pure; no ``hash()`` randomization)."""
    acc = 0x2545F4914F6CDD1D
    for part in parts:
        acc = Rng(acc ^ (part & _MASK64)).next()
    return acc


@dataclass(slots=True)
class LogEvent:
    action: str
    actor: str  # ioffice user id
    receiver: str | None
    at: datetime
    due: date | None = None  # set on PHAN_CONG (first deadline) and GIA_HAN (new deadline)
    note: str | None = None


@dataclass(slots=True)
class Summary:
    assigner: str | None
    lead: str | None
    due: date | None
    finished_at: datetime | None
    status: str
    returns: int
    updated_at: datetime


def summarize(events: list[LogEvent]) -> Summary:
    assigner: str | None = None
    lead: str | None = None
    due: date | None = None
    finished_at: datetime | None = None
    returns = 0
    processed = False
    for ev in events:
        action = ev.action
        if action == PHAN_CONG:
            if assigner is None:
                assigner = ev.actor
            lead = ev.receiver
        elif action == CHUYEN_XU_LY:
            if not processed:  # forwarding down to the handler; after processing it is "submit to sign"
                lead = ev.receiver
        elif action == XU_LY:
            processed = True
            if lead is None:
                lead = ev.actor
        elif action == TRA_LAI:
            returns += 1
        elif action == HOAN_THANH:
            finished_at = ev.at
        if ev.due is not None:
            due = ev.due
    if finished_at is not None:
        status = DA_HOAN_THANH
    elif processed:
        status = DANG_XU_LY
    else:
        status = CHO_XU_LY
    return Summary(assigner, lead, due, finished_at, status, returns, events[-1].at)


@dataclass(slots=True)
class IncomingDoc:
    id: int
    agency: str
    unit: str
    so_den: int
    received_at: datetime
    symbol: str  # the issuer's number-symbol
    issued_on: date
    issuer_name: str
    issuer_id: str
    type_label: str
    subject: str
    urgency: str
    co_handlers: list[str]
    events: list[LogEvent]


@dataclass(slots=True)
class OutgoingDoc:
    id: int
    agency: str
    unit: str
    type_name: str
    type_abbr: str | None
    type_label: str
    subject: str
    drafter: str
    approver: str
    signer: str
    events: list[LogEvent]
    number: int | None = None  # assigned when issued (HOAN_THANH)
    symbol: str | None = None


@dataclass(slots=True)
class Task:
    id: int
    agency: str
    unit: str
    name: str
    assigner: str
    assignee: str
    assigned_at: datetime
    due: date | None
    updated_at: datetime
    progress: int = 0
    finished_at: datetime | None = None

    @property
    def status(self) -> str:
        if self.finished_at is not None:
            return DA_HOAN_THANH
        return DANG_XU_LY if self.progress > 0 else CHO_XU_LY


def fmt_dt(moment: datetime) -> str:
    m = moment.astimezone(VN_TZ) if moment.tzinfo is not VN_TZ else moment
    return f"{m.day:02d}/{m.month:02d}/{m.year:04d} {m.hour:02d}:{m.minute:02d}:{m.second:02d}"


def fmt_d(day: date | None) -> str | None:
    if day is None:
        return None
    return f"{day.day:02d}/{day.month:02d}/{day.year:04d}"


def parse_dt(text: str) -> datetime:
    """``dd/MM/yyyy HH:mm:ss`` or ``dd/MM/yyyy`` (start of day), Vietnam time."""
    text = text.strip()
    fmt = "%d/%m/%Y %H:%M:%S" if " " in text else "%d/%m/%Y"
    return datetime.strptime(text, fmt).replace(tzinfo=VN_TZ)


def is_workday(day: date) -> bool:
    return day.weekday() < 5 and (day.month, day.day) not in _HOLIDAYS


def add_workdays(day: date, n: int) -> date:
    while n > 0:
        day += timedelta(days=1)
        if is_workday(day):
            n -= 1
    return day


def _open_at(day: date, moment: datetime) -> datetime:
    return datetime.combine(day, _OFFICE_OPEN, VN_TZ).replace(second=moment.second)


def snap_to_office(moment: datetime) -> datetime:
    """The first office-hours instant at or after ``moment`` (07:30-17:00 on working days)."""
    day = moment.date()
    if is_workday(day) and _OFFICE_OPEN <= moment.time() < _OFFICE_CLOSE:
        return moment
    if is_workday(day) and moment.time() < _OFFICE_OPEN:
        return _open_at(day, moment)
    day = add_workdays(day, 1)
    return _open_at(day, moment)


def add_work_seconds(moment: datetime, seconds: int) -> datetime:
    """Move ``seconds`` of office time forward, skipping nights, weekends and holidays."""
    moment = snap_to_office(moment)
    while True:
        close = datetime.combine(moment.date(), _OFFICE_CLOSE, VN_TZ)
        room = int((close - moment).total_seconds())
        if seconds < room:
            return moment + timedelta(seconds=seconds)
        seconds -= room
        moment = _open_at(add_workdays(moment.date(), 1), moment)


def render_log(events: list[LogEvent]) -> list[dict[str, Any]]:
    return [
        {
            "hanhDong": ev.action,
            "nguoiThucHien": ev.actor,
            "nguoiNhan": ev.receiver,
            "thoiGian": fmt_dt(ev.at),
            "hanXuLy": fmt_d(ev.due),
            "ghiChu": ev.note,
        }
        for ev in events
    ]


def render_incoming(doc: IncomingDoc, with_log: bool) -> dict[str, Any]:
    s = summarize(doc.events)
    row: dict[str, Any] = {
        "id": doc.id,
        "soDen": doc.so_den,
        "ngayDen": fmt_dt(doc.received_at),
        "soKyHieu": doc.symbol,
        "ngayBanHanh": fmt_d(doc.issued_on),
        "coQuanBanHanh": doc.issuer_name,
        "maDinhDanhCoQuanBanHanh": doc.issuer_id,
        "loaiVanBan": doc.type_label,
        "trichYeu": doc.subject,
        "doKhan": doc.urgency,
        "maDonVi": doc.agency,
        "maPhongBan": doc.unit,
        "lanhDaoPhanCong": s.assigner,
        "nguoiChuTri": s.lead,
        "nguoiPhoiHop": doc.co_handlers,
        "hanXuLy": fmt_d(s.due),
        "ngayHoanThanh": fmt_dt(s.finished_at) if s.finished_at else None,
        "trangThai": s.status,
        "soLanTraLai": s.returns,
        "ngayCapNhat": fmt_dt(s.updated_at),
    }
    if with_log:
        row["nhatKy"] = render_log(doc.events)
    return row


def render_outgoing(doc: OutgoingDoc, with_log: bool) -> dict[str, Any]:
    s = summarize(doc.events)
    row: dict[str, Any] = {
        "id": doc.id,
        "soKyHieu": doc.symbol,
        "ngayBanHanh": fmt_d(s.finished_at.date()) if s.finished_at else None,
        "loaiVanBan": doc.type_label,
        "trichYeu": doc.subject,
        "maDonVi": doc.agency,
        "maPhongBan": doc.unit,
        "nguoiSoanThao": doc.drafter,
        "nguoiDuyet": doc.approver,
        "nguoiKy": doc.signer,
        "hanXuLy": fmt_d(s.due),
        "ngayHoanThanh": fmt_dt(s.finished_at) if s.finished_at else None,
        "trangThai": s.status,
        "soLanTraLai": s.returns,
        "ngayCapNhat": fmt_dt(s.updated_at),
    }
    if with_log:
        row["nhatKy"] = render_log(doc.events)
    return row


def render_task(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "tenCongViec": task.name,
        "maDonVi": task.agency,
        "maPhongBan": task.unit,
        "nguoiGiao": task.assigner,
        "nguoiThucHien": task.assignee,
        "ngayGiao": fmt_dt(task.assigned_at),
        "hanHoanThanh": fmt_d(task.due),
        "ngayHoanThanh": fmt_dt(task.finished_at) if task.finished_at else None,
        "trangThai": task.status,
        "tienDo": task.progress,
        "ngayCapNhat": fmt_dt(task.updated_at),
    }
