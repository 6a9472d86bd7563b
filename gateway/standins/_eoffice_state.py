"""State of the e-office stand-in: deterministic data, a simulated clock, mutations, tokens, fault hooks.

Served over HTTP by :func:`gateway.standins.eoffice.create_eoffice_app`; import both from there.
"""

from __future__ import annotations

import bisect
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from time import monotonic
from typing import Any

import orjson

from gateway.standins import seed as seed_data
from gateway.standins._eoffice_bulk import BulkIncoming
from gateway.standins._eoffice_data import (
    KIND_ADVANCE,
    AgencyStaff,
    agency_staff,
    generate_base,
    incoming_doc,
    materialize,
    new_outgoing,
    new_task,
    outgoing_symbol,
    plan_incoming,
)
from gateway.standins._eoffice_model import (
    CHUYEN_XU_LY,
    GIA_HAN,
    HOAN_THANH,
    PHAN_CONG,
    TRA_LAI,
    XU_LY,
    IncomingDoc,
    LogEvent,
    OutgoingDoc,
    Rng,
    Task,
    add_work_seconds,
    add_workdays,
    mix,
    render_incoming,
    render_log,
    render_outgoing,
    render_task,
    summarize,
)
from gateway.types import VN_TZ

INCOMING = "van-ban-den"
OUTGOING = "van-ban-di"
TASKS = "cong-viec"
KINDS = (INCOMING, OUTGOING, TASKS)
MAX_PAGE_REC = 1000
TOKEN_HEADER = "X-Authentication-Token"  # noqa: S105 (a header name)
SANDBOX_USERNAME = "kpigw"
SANDBOX_PASSWORD = "sandbox-secret"  # noqa: S105 (documented sandbox credential of a loopback stand-in)
_NEEDS_DRAFT = (PHAN_CONG, TRA_LAI, GIA_HAN)


@dataclass(frozen=True, slots=True)
class AdvanceResult:
    """What one ``advance`` changed; every change carries ``ngayCapNhat`` = ``clock``."""

    clock: datetime
    added: tuple[int, ...]
    completed: tuple[int, ...]
    extended: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    page_no: int
    page_rec: int
    items_json: bytes  # a JSON array


class EOfficeState:
    """Data, clock, credentials and sandbox hooks of one stand-in e-office; thread-safe."""

    def __init__(
        self,
        *,
        seed: int = 335,
        start: date = date(2026, 9, 1),
        days: int = 61,
        bulk_records: int = 0,
        bulk_span_days: int = 365,
        username: str = SANDBOX_USERNAME,
        password: str = SANDBOX_PASSWORD,
        token_ttl: float = 300.0,
    ) -> None:
        self.seed = seed
        self.start = start
        self.username = username
        self.password = password
        self.token_ttl = token_ttl
        self._lock = threading.RLock()
        self._clock = datetime.combine(start + timedelta(days=days), time(8, 0), VN_TZ)
        self._ctxs: tuple[AgencyStaff, ...] = agency_staff()
        base = generate_base(seed, start, days, self._clock, self._ctxs)
        self._incoming: dict[int, IncomingDoc] = {d.id: d for d in base.incoming}
        self._outgoing: dict[int, OutgoingDoc] = {d.id: d for d in base.outgoing}
        self._tasks: dict[int, Task] = {t.id: t for t in base.tasks}
        self._next_id = base.next_id
        self._next_so_den = base.next_so_den
        self._next_number = base.next_number
        self.bulk = (
            BulkIncoming(
                seed, bulk_records, datetime.combine(start, time(0, 0), VN_TZ), self._ctxs, span_days=bulk_span_days
            )
            if bulk_records > 0
            else None
        )
        self._version = 0
        self._order: dict[tuple[str, str | None], tuple[int, list[tuple[datetime, int]]]] = {}
        self._rendered: dict[tuple[int, bool], bytes] = {}
        self._tokens: dict[str, float] = {}
        self._failures: list[tuple[int, int | None]] = []
        self._malformed = 0

    # ----------------------------------------------------------------- clock and identity

    @property
    def now(self) -> datetime:
        return self._clock

    @property
    def agencies(self) -> tuple[str, ...]:
        return tuple(ctx.code for ctx in self._ctxs)

    def ids(self, kind: str) -> list[int]:
        """Ids of the stored (non-bulk) records of one kind, ascending."""
        with self._lock:
            return sorted(self._store(kind))

    # ----------------------------------------------------------------- authentication

    def login(self, username: str, password: str) -> str | None:
        ok_user = hmac.compare_digest(username.encode(), self.username.encode())
        ok_pass = hmac.compare_digest(password.encode(), self.password.encode())
        if not (ok_user and ok_pass):
            return None
        token = secrets.token_urlsafe(24)
        with self._lock:
            now = monotonic()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.token_ttl
        return token

    def token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and expiry > monotonic()

    def expire_tokens(self) -> None:
        """Revoke every issued token (clients must log in again)."""
        with self._lock:
            self._tokens.clear()

    # ----------------------------------------------------------------- sandbox fault hooks

    def fail_next(self, n: int = 1, status: int = 503, retry_after: int | None = None) -> None:
        """Make the next ``n`` API requests (login included) fail with ``status`` (and ``Retry-After``)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * n)

    def malformed_next_page(self) -> None:
        """Make the next list request answer HTTP 200 with a truncated, syntactically broken JSON body."""
        with self._lock:
            self._malformed += 1

    def consume_failure(self) -> tuple[int, int | None] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def consume_malformed(self) -> bool:
        with self._lock:
            if self._malformed:
                self._malformed -= 1
                return True
            return False

    # ----------------------------------------------------------------- reads

    def page(
        self,
        kind: str,
        *,
        page_no: int = 1,
        page_rec: int = 100,
        since: datetime | None = None,
        agency: str | None = None,
        with_log: bool = False,
    ) -> Page:
        """One page ordered by (update time, id), update time >= ``since`` (inclusive)."""
        page_rec = max(1, min(page_rec, MAX_PAGE_REC))
        offset = (page_no - 1) * page_rec
        parts: list[bytes] = []
        bulk_total = 0
        if kind == INCOMING and self.bulk is not None:
            agency_index = self.agencies.index(agency) if agency in self.agencies else None
            if agency is None or agency_index is not None:
                first, step, bulk_total = self.bulk.window(since, agency_index)
                if offset < bulk_total:
                    count = min(page_rec, bulk_total - offset)
                    start = first + offset * step
                    rows = [self.bulk.row(start + k * step, with_log) for k in range(count)]
                    parts.append(orjson.dumps(rows)[1:-1])
        taken = min(page_rec, max(0, bulk_total - offset))
        with self._lock:
            keys = self._ordered(kind, agency)
            low = bisect.bisect_left(keys, (since, 0)) if since is not None else 0
            base_total = len(keys) - low
            begin = low + max(0, offset - bulk_total)
            for _, doc_id in keys[begin : begin + page_rec - taken]:
                parts.append(self._row_json(kind, doc_id, with_log))
        return Page(bulk_total + base_total, page_no, page_rec, b"[" + b",".join(parts) + b"]")

    def rows(self, kind: str, **filters: Any) -> list[dict[str, Any]]:
        """``page()`` decoded: handy in tests and notebooks."""
        result: list[dict[str, Any]] = orjson.loads(self.page(kind, **filters).items_json)
        return result

    def detail(self, kind: str, doc_id: int) -> dict[str, Any] | None:
        """One record (documents with their ``nhatKy``), or None."""
        if kind == INCOMING and self.bulk is not None:
            index = self.bulk.index_of(doc_id)
            if index is not None:
                return self.bulk.row(index, with_log=True)
        with self._lock:
            if doc_id not in self._store(kind):
                return None
            return dict(orjson.loads(self._row_json(kind, doc_id, with_log=True)))

    def activity_log(self, kind: str, doc_id: int) -> list[dict[str, Any]] | None:
        if kind == INCOMING and self.bulk is not None:
            index = self.bulk.index_of(doc_id)
            if index is not None:
                return self.bulk.log(index)
        with self._lock:
            store = self._incoming if kind == INCOMING else self._outgoing if kind == OUTGOING else None
            doc = store.get(doc_id) if store is not None else None
            return render_log(doc.events) if doc is not None else None

    def _store(self, kind: str) -> dict[int, Any]:
        if kind == INCOMING:
            return self._incoming
        if kind == OUTGOING:
            return self._outgoing
        if kind == TASKS:
            return self._tasks
        raise ValueError(f"unknown kind {kind!r}")

    def _ordered(self, kind: str, agency: str | None) -> list[tuple[datetime, int]]:
        cached = self._order.get((kind, agency))
        if cached is not None and cached[0] == self._version:
            return cached[1]
        keys: list[tuple[datetime, int]] = []
        for record in self._store(kind).values():
            if agency is None or record.agency == agency:
                updated = record.updated_at if isinstance(record, Task) else record.events[-1].at
                keys.append((updated, record.id))
        keys.sort()
        self._order[(kind, agency)] = (self._version, keys)
        return keys

    def _row_json(self, kind: str, doc_id: int, with_log: bool) -> bytes:
        key = (doc_id, with_log and kind != TASKS)
        cached = self._rendered.get(key)
        if cached is None:
            record = self._store(kind)[doc_id]
            if kind == INCOMING:
                row = render_incoming(record, key[1])
            elif kind == OUTGOING:
                row = render_outgoing(record, key[1])
            else:
                row = render_task(record)
            cached = self._rendered[key] = orjson.dumps(row)
        return cached

    def _touched(self, doc_id: int) -> None:
        self._version += 1
        self._rendered.pop((doc_id, False), None)
        self._rendered.pop((doc_id, True), None)

    # ----------------------------------------------------------------- mutations (all at the clock time)

    def advance(self, days: int = 1) -> AdvanceResult:
        """Move the clock by whole days; each day deterministically adds documents and tasks, completes
        some open ones late and moves some deadlines. Every change is stamped with the new clock."""
        added: list[int] = []
        completed: list[int] = []
        extended: list[int] = []
        with self._lock:
            for _ in range(days):
                self._clock += timedelta(days=1)
                rng = Rng(mix(self.seed, KIND_ADVANCE, self._clock.date().toordinal()))
                before = self._next_id
                for ctx in self._ctxs:
                    for _ in range(rng.between(1, 3)):
                        added.append(self._add_incoming(ctx, rng.next(), assign=rng.chance(0.6)))
                    added.append(self._add_outgoing(ctx, rng.next()))
                    added.append(self._add_task(ctx, rng.next()))
                today = self._clock.date()
                open_in = [d for d in self._incoming.values() if d.id < before and not _finished(d.events)]
                late_first = sorted(open_in, key=lambda d: (not _overdue(d.events, today), d.id))
                for doc in late_first[:2]:
                    self.complete_late(doc.id)
                    completed.append(doc.id)
                dated = [d for d in open_in if summarize(d.events).due is not None and d.id not in completed]
                if dated:
                    doc = dated[rng.below(len(dated))]
                    due = summarize(doc.events).due or today
                    self.move_deadline(doc.id, add_workdays(max(due, today), 5))
                    extended.append(doc.id)
                open_out = [d for d in self._outgoing.values() if d.id < before and not _finished(d.events)]
                if open_out:
                    doc_out = open_out[rng.below(len(open_out))]
                    self.complete_late(doc_out.id)
                    completed.append(doc_out.id)
                open_tasks = [t for t in self._tasks.values() if t.id < before and t.finished_at is None]
                if open_tasks:
                    task = open_tasks[rng.below(len(open_tasks))]
                    self.complete_late(task.id)
                    completed.append(task.id)
                    rest = [t for t in open_tasks if t is not task and t.due is not None]
                    if rest:
                        task = rest[rng.below(len(rest))]
                        self.move_deadline(task.id, add_workdays(max(task.due or today, today), 5))
                        extended.append(task.id)
            return AdvanceResult(self._clock, tuple(added), tuple(completed), tuple(extended))

    def add_incoming(
        self,
        agency: str = "SKHCN",
        *,
        doc_type: str | None = None,
        subject: str | None = None,
        due: date | None = None,
        assign: bool = True,
    ) -> int:
        """Register a new incoming document at the clock time (and assign it, with ``due``); its id."""
        if doc_type is not None:
            seed_data.document_type(doc_type)  # KeyError on an unknown type
        with self._lock:
            ctx = self._ctx(agency)
            return self._add_incoming(ctx, self._next_id, assign=assign, doc_type=doc_type, subject=subject, due=due)

    def complete_late(self, doc_id: int) -> None:
        """Finish an open document or task at the clock time (a late completion of an old record)."""
        with self._lock:
            now = self._clock
            if doc_id in self._tasks:
                task = self._tasks[doc_id]
                if task.finished_at is not None:
                    raise ValueError(f"task {doc_id} is already finished")
                task.finished_at, task.progress, task.updated_at = now, 100, now
            elif doc_id in self._incoming:
                doc = self._incoming[doc_id]
                if _finished(doc.events):
                    raise ValueError(f"document {doc_id} is already finished")
                s = summarize(doc.events)
                ctx = self._ctx(doc.agency)
                unit = next(u for u in ctx.units if u.code == doc.unit)
                lead = s.lead
                if lead is None:
                    lead = unit.staff[doc_id % len(unit.staff)]
                    doc.events.append(LogEvent(PHAN_CONG, unit.in_charge, lead, now, None, "Giao xử lý"))
                if doc.events[-1].action in _NEEDS_DRAFT or not any(e.action == XU_LY for e in doc.events):
                    doc.events.append(LogEvent(XU_LY, lead, unit.head, now, None, "Trình dự thảo văn bản trả lời"))
                doc.events.append(LogEvent(HOAN_THANH, lead, None, now, None, "Đã phát hành văn bản trả lời"))
            elif doc_id in self._outgoing:
                out = self._outgoing[doc_id]
                if _finished(out.events):
                    raise ValueError(f"document {doc_id} is already finished")
                if out.events[-1].action in _NEEDS_DRAFT or not any(e.action == XU_LY for e in out.events):
                    out.events.append(LogEvent(XU_LY, out.drafter, out.approver, now, None, "Trình dự thảo"))
                if out.events[-1].action != CHUYEN_XU_LY:
                    out.events.append(LogEvent(CHUYEN_XU_LY, out.approver, out.signer, now, None, "Trình ký"))
                out.events.append(LogEvent(HOAN_THANH, out.signer, None, now, None, "Ký ban hành"))
                out.number = self._next_number[out.agency]
                self._next_number[out.agency] += 1
                out.symbol = outgoing_symbol(self._ctx(out.agency), out, out.number)
            else:
                raise KeyError(doc_id)
            self._touched(doc_id)

    def move_deadline(self, doc_id: int, new_due: date) -> None:
        """Extend (or move) the deadline of an open document or task at the clock time."""
        with self._lock:
            now = self._clock
            if doc_id in self._tasks:
                task = self._tasks[doc_id]
                task.due, task.updated_at = new_due, now
            else:
                doc: IncomingDoc | OutgoingDoc | None = self._incoming.get(doc_id) or self._outgoing.get(doc_id)
                if doc is None:
                    raise KeyError(doc_id)
                if _finished(doc.events):
                    raise ValueError(f"document {doc_id} is already finished")
                s = summarize(doc.events)
                unit = next(u for u in self._ctx(doc.agency).units if u.code == doc.unit)
                actor = s.assigner or unit.in_charge
                doc.events.append(LogEvent(GIA_HAN, actor, s.lead, now, new_due, "Gia hạn xử lý"))
            self._touched(doc_id)

    def _ctx(self, agency: str) -> AgencyStaff:
        for ctx in self._ctxs:
            if ctx.code == agency:
                return ctx
        raise KeyError(agency)

    def _new_id(self) -> int:
        doc_id, self._next_id = self._next_id, self._next_id + 1
        return doc_id

    def _add_incoming(
        self,
        ctx: AgencyStaff,
        salt: int,
        *,
        assign: bool,
        doc_type: str | None = None,
        subject: str | None = None,
        due: date | None = None,
    ) -> int:
        rng = Rng(mix(self.seed, KIND_ADVANCE, salt))
        unit, co_handlers, steps = plan_incoming(rng, ctx)
        head = [(action, actor, receiver, 0, note, days) for action, actor, receiver, _, note, days in steps[:2]]
        events = materialize(head if assign else head[:1], self._clock, add_work_seconds)
        if assign and due is not None:
            events[1].due = due
        doc_id = self._new_id()
        so_den = self._next_so_den.setdefault(ctx.code, 1)
        self._next_so_den[ctx.code] += 1
        doc = incoming_doc(
            rng, ctx, unit, co_handlers, events, doc_id=doc_id, so_den=so_den, type_name=doc_type, title=subject
        )
        self._incoming[doc_id] = doc
        self._touched(doc_id)
        return doc_id

    def _add_outgoing(self, ctx: AgencyStaff, salt: int) -> int:
        doc_id = self._new_id()
        rng = Rng(mix(self.seed, KIND_ADVANCE, salt))
        self._outgoing[doc_id] = new_outgoing(rng, ctx, self._clock, self._clock, doc_id=doc_id)
        self._touched(doc_id)
        return doc_id

    def _add_task(self, ctx: AgencyStaff, salt: int) -> int:
        task_id = self._new_id()
        rng = Rng(mix(self.seed, KIND_ADVANCE, salt))
        self._tasks[task_id] = new_task(rng, ctx, self._clock, self._clock, task_id=task_id)
        self._touched(task_id)
        return task_id


def _finished(events: list[LogEvent]) -> bool:
    return events[-1].action == HOAN_THANH


def _overdue(events: list[LogEvent], today: date) -> bool:
    due = summarize(events).due
    return due is not None and due < today
