"""Deterministic data of the e-office stand-in: who works where, what documents look like, how they flow.

Every record is a pure function of ``(seed, kind, position)`` through :class:`Rng`, so the base data set
is reproducible and the synthetic bulk records can be regenerated from their index alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from gateway.standins import seed as seed_data
from gateway.standins._eoffice_model import (
    CHUYEN_XU_LY,
    GIA_HAN,
    HOAN_THANH,
    PHAN_CONG,
    TIEP_NHAN,
    TRA_LAI,
    XU_LY,
    IncomingDoc,
    LogEvent,
    OutgoingDoc,
    Rng,
    Task,
    add_work_seconds,
    add_workdays,
    is_workday,
    mix,
)
from gateway.standins._eoffice_text import (
    ASSIGN_NOTES,
    INCOMING_TYPES,
    ISSUERS,
    OUTGOING_TYPES,
    RETURN_NOTES,
    SUBJECTS,
    TASK_NAMES,
    TOPICS,
    URGENCY_WEIGHTS,
)
from gateway.types import VN_TZ

Step = tuple[str, str, str | None, int, str | None, int]
"""(action, actor, receiver, seconds of work since the previous step, note, days): ``days`` is the
deadline in working days after receipt on PHAN_CONG, the extension in working days on GIA_HAN."""

Advance = Callable[[datetime, int], datetime]

KIND_INCOMING, KIND_OUTGOING, KIND_TASK, KIND_BULK, KIND_ADVANCE = 1, 2, 3, 4, 5


@dataclass(frozen=True, slots=True)
class UnitStaff:
    code: str
    name: str
    symbol: str
    head: str  # ioffice ids from here on
    deputy: str
    staff: tuple[str, ...]
    in_charge: str  # the deputy director in charge of the unit


@dataclass(frozen=True, slots=True)
class AgencyStaff:
    code: str
    symbol: str
    organ_id: str
    head: str
    deputies: tuple[str, ...]
    clerks: tuple[str, ...]
    units: tuple[UnitStaff, ...]


def weighted(rng: Rng, table: tuple[tuple[str, int], ...]) -> str:
    roll = rng.below(sum(w for _, w in table))
    for value, weight in table:
        if roll < weight:
            return value
        roll -= weight
    return table[-1][0]


def agency_staff() -> tuple[AgencyStaff, ...]:
    people = seed_data.people()
    by_id = {p.person_id: p for p in people}
    result = []
    for ag in seed_data.agencies():
        members = [p for p in people if p.agency == ag.code]
        head = next(p for p in members if p.reports_to is None)
        deputies = tuple(p.ioffice_id for p in members if p.reports_to == head.person_id)
        clerks = tuple(p.ioffice_id for p in members if p.job_position == "Văn thư")
        unit_rows = []
        for unit in seed_data.units_of(ag.code):
            if unit.is_leadership:
                continue
            in_unit = [p for p in members if p.unit == unit.code]
            unit_head = next(p for p in in_unit if p.is_leader and by_id[p.reports_to or ""].unit != unit.code)
            deputy = next(p for p in in_unit if p.is_leader and p is not unit_head)
            staff = tuple(p.ioffice_id for p in in_unit if not p.is_leader and p.job_position != "Văn thư")
            in_charge = by_id[unit_head.reports_to or ""].ioffice_id
            unit_rows.append(
                UnitStaff(unit.code, unit.name, unit.symbol, unit_head.ioffice_id, deputy.ioffice_id, staff, in_charge)
            )
        result.append(AgencyStaff(ag.code, ag.symbol, ag.organ_id, head.ioffice_id, deputies, clerks, tuple(unit_rows)))
    return tuple(result)


def _work(rng: Rng, low_minutes: int, high_minutes: int) -> int:
    return rng.between(low_minutes, high_minutes) * 60 + rng.below(60)


def plan_incoming(rng: Rng, ctx: AgencyStaff) -> tuple[UnitStaff, list[str], list[Step]]:
    """The whole life of one incoming document, as steps of office time (truncated later by the clock)."""
    unit = rng.choice(ctx.units)
    leader = unit.in_charge if rng.chance(0.65) else ctx.head
    handler = rng.choice(unit.staff)
    steps: list[Step] = [(TIEP_NHAN, rng.choice(ctx.clerks), leader, 0, None, 0)]
    for_info = rng.chance(0.2)
    due_days = 0 if for_info or rng.chance(0.1) else rng.choice((3, 5, 5, 7, 7, 10, 15))
    via_head = rng.chance(0.6)
    note = "Để biết" if for_info else rng.choice(ASSIGN_NOTES)
    steps.append((PHAN_CONG, leader, unit.head if via_head else handler, _work(rng, 20, 900), note, due_days))
    if via_head:
        steps.append((CHUYEN_XU_LY, unit.head, handler, _work(rng, 10, 600), "Chuyển chuyên viên xử lý", 0))
    others = [s for s in unit.staff if s != handler]
    co_handlers = [rng.choice(others) for _ in range(rng.below(3))] if others else []
    co_handlers = sorted(set(co_handlers))
    if for_info:
        steps.append((HOAN_THANH, handler, None, _work(rng, 10, 600), "Đã nghiên cứu, nắm nội dung", 0))
        return unit, co_handlers, steps
    work = _work(rng, 120, 1800)
    if rng.chance(0.15):  # a slow one: stuck for days, usually overdue
        work += rng.between(3, 12) * 570 * 60
    steps.append((XU_LY, handler, unit.head, work, "Trình dự thảo văn bản trả lời", 0))
    if due_days and rng.chance(0.12):
        steps.append(
            (
                GIA_HAN,
                leader,
                handler,
                _work(rng, 30, 300),
                "Gia hạn theo đề nghị của phòng chủ trì",
                rng.choice((3, 5, 7)),
            )
        )
    roll = rng.below(100)
    for _ in range(2 if roll < 7 else 1 if roll < 25 else 0):
        steps.append((TRA_LAI, unit.head, handler, _work(rng, 60, 900), rng.choice(RETURN_NOTES), 0))
        steps.append((XU_LY, handler, unit.head, _work(rng, 60, 1200), "Trình lại dự thảo đã chỉnh sửa", 0))
    steps.append((HOAN_THANH, handler, None, _work(rng, 30, 600), "Đã phát hành văn bản trả lời", 0))
    return unit, co_handlers, steps


def plan_outgoing(rng: Rng, unit: UnitStaff) -> tuple[str, str, list[Step]]:
    drafter = rng.choice(unit.staff)
    signer = unit.in_charge
    steps: list[Step] = []
    if rng.chance(0.6):
        steps.append((PHAN_CONG, signer, drafter, 0, "Giao soạn thảo", rng.choice((2, 3, 5, 7, 10))))
    work = _work(rng, 60, 1500) if steps else 0
    if steps and rng.chance(0.12):  # slow drafting, usually overdue
        work += rng.between(3, 10) * 570 * 60
    steps.append((XU_LY, drafter, unit.head, work, "Trình dự thảo", 0))
    roll = rng.below(100)
    for _ in range(2 if roll < 8 else 1 if roll < 28 else 0):
        steps.append((TRA_LAI, unit.head, drafter, _work(rng, 60, 900), rng.choice(RETURN_NOTES), 0))
        steps.append((XU_LY, drafter, unit.head, _work(rng, 60, 1200), "Trình lại dự thảo", 0))
    steps.append((CHUYEN_XU_LY, unit.head, signer, _work(rng, 30, 600), "Trình ký", 0))
    if rng.chance(0.08):
        steps.append((TRA_LAI, signer, drafter, _work(rng, 60, 600), rng.choice(RETURN_NOTES), 0))
        steps.append((XU_LY, drafter, unit.head, _work(rng, 60, 900), "Trình lại dự thảo", 0))
        steps.append((CHUYEN_XU_LY, unit.head, signer, _work(rng, 30, 300), "Trình ký", 0))
    steps.append((HOAN_THANH, signer, None, _work(rng, 30, 900), "Ký ban hành", 0))
    return weighted(rng, OUTGOING_TYPES), drafter, steps


def materialize(steps: list[Step], start: datetime, advance: Advance) -> list[LogEvent]:
    events = []
    moment = start
    due: date | None = None
    for action, actor, receiver, gap, note, days in steps:
        moment = advance(moment, gap) if gap else moment
        event_due = None
        if action == PHAN_CONG and days:
            due = event_due = add_workdays(start.date(), days)
        elif action == GIA_HAN and due is not None:
            due = event_due = add_workdays(due, days)
        events.append(LogEvent(action, actor, receiver, moment, event_due, note))
    return events


def calendar_time(moment: datetime, seconds: int) -> datetime:
    """Bulk records run on calendar time: three seconds of wall time per second of office work."""
    return moment + timedelta(seconds=3 * seconds)


def type_label(rng: Rng, name: str) -> str:
    """Usually the decree's name; sometimes a legacy abbreviation, as old systems store it."""
    if rng.chance(0.08):
        legacy = seed_data.LEGACY_ABBREVIATIONS.get(name) or seed_data.document_type(name).abbreviation
        return legacy or name
    return name


def subject(rng: Rng, type_name: str) -> str:
    return rng.choice(SUBJECTS.get(type_name, ("V/v {t}",))).format(t=rng.choice(TOPICS))


def incoming_doc(
    rng: Rng,
    ctx: AgencyStaff,
    unit: UnitStaff,
    co_handlers: list[str],
    events: list[LogEvent],
    *,
    doc_id: int,
    so_den: int,
    type_name: str | None = None,
    title: str | None = None,
) -> IncomingDoc:
    issuer = rng.choice(ISSUERS)
    if issuer.organ_id == ctx.organ_id:
        issuer = ISSUERS[0]
    name = type_name or weighted(rng, INCOMING_TYPES)
    abbr = seed_data.document_type(name).abbreviation
    number = rng.between(1, 3200)
    if abbr is None:
        symbol = f"{number}/{issuer.symbol}-{rng.choice(issuer.unit_symbols)}"
    else:
        symbol = f"{number}/{abbr}-{issuer.symbol}"
    received = events[0].at
    issued = received.date() - timedelta(days=rng.below(4))
    return IncomingDoc(
        id=doc_id,
        agency=ctx.code,
        unit=unit.code,
        so_den=so_den,
        received_at=received,
        symbol=symbol,
        issued_on=issued,
        issuer_name=issuer.name,
        issuer_id=issuer.organ_id,
        type_label=type_label(rng, name),
        subject=title or subject(rng, name),
        urgency=weighted(rng, URGENCY_WEIGHTS),
        co_handlers=co_handlers,
        events=events,
    )


def office_moment(rng: Rng, day: date) -> datetime:
    return datetime.combine(day, time(7, 30), VN_TZ) + timedelta(seconds=rng.below(9 * 3600))


_PER_DAY = {  # agency code -> (incoming, outgoing, tasks) ranges per working day
    "SKHCN": ((8, 14), (3, 6), (2, 4)),
    "VPUBND": ((14, 24), (5, 9), (2, 5)),
    "XA_COCSAN": ((4, 8), (2, 4), (1, 3)),
}
FIRST_SO_DEN = {"SKHCN": 2101, "VPUBND": 5301, "XA_COCSAN": 801}
FIRST_NUMBER = {"SKHCN": 1451, "VPUBND": 3201, "XA_COCSAN": 621}


@dataclass(slots=True)
class BaseData:
    incoming: list[IncomingDoc]
    outgoing: list[OutgoingDoc]
    tasks: list[Task]
    next_so_den: dict[str, int]
    next_number: dict[str, int]
    next_id: int


def outgoing_symbol(ctx: AgencyStaff, doc: OutgoingDoc, number: int) -> str:
    unit_symbol = next(u.symbol for u in ctx.units if u.code == doc.unit)
    if doc.type_abbr is None:
        return f"{number}/{ctx.symbol}-{unit_symbol}"
    return f"{number}/{doc.type_abbr}-{ctx.symbol}"


def generate_base(seed: int, start: date, days: int, clock: datetime, ctxs: tuple[AgencyStaff, ...]) -> BaseData:
    incoming: list[IncomingDoc] = []
    outgoing: list[OutgoingDoc] = []
    tasks: list[Task] = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        if not is_workday(day):
            continue
        for a, ctx in enumerate(ctxs):
            counts = Rng(mix(seed, 0, day.toordinal(), a))
            (in_lo, in_hi), (out_lo, out_hi), (task_lo, task_hi) = _PER_DAY.get(ctx.code, ((4, 8), (2, 4), (1, 3)))
            for k in range(counts.between(in_lo, in_hi)):
                rng = Rng(mix(seed, KIND_INCOMING, day.toordinal(), a, k))
                unit, co, steps = plan_incoming(rng, ctx)
                events = [e for e in materialize(steps, office_moment(rng, day), add_work_seconds) if e.at <= clock]
                incoming.append(incoming_doc(rng, ctx, unit, co, events, doc_id=0, so_den=0))
            for k in range(counts.between(out_lo, out_hi)):
                rng = Rng(mix(seed, KIND_OUTGOING, day.toordinal(), a, k))
                outgoing.append(new_outgoing(rng, ctx, office_moment(rng, day), clock, doc_id=0))
            for k in range(counts.between(task_lo, task_hi)):
                rng = Rng(mix(seed, KIND_TASK, day.toordinal(), a, k))
                tasks.append(new_task(rng, ctx, office_moment(rng, day), clock, task_id=0))
    next_id = 1
    next_so_den = dict(FIRST_SO_DEN)
    incoming.sort(key=lambda d: d.received_at)
    for doc in incoming:
        doc.id, next_id = next_id, next_id + 1
        doc.so_den = next_so_den.setdefault(doc.agency, 1)
        next_so_den[doc.agency] += 1
    outgoing.sort(key=lambda d: d.events[0].at)
    for out in outgoing:
        out.id, next_id = next_id, next_id + 1
    next_number = dict(FIRST_NUMBER)
    by_code = {c.code: c for c in ctxs}
    issued = [d for d in outgoing if d.events[-1].action == HOAN_THANH]
    for out in sorted(issued, key=lambda d: (d.events[-1].at, d.id)):
        out.number = next_number.setdefault(out.agency, 1)
        out.symbol = outgoing_symbol(by_code[out.agency], out, out.number)
        next_number[out.agency] += 1
    tasks.sort(key=lambda t: t.assigned_at)
    for task in tasks:
        task.id, next_id = next_id, next_id + 1
    return BaseData(incoming, outgoing, tasks, next_so_den, next_number, next_id)


def new_outgoing(rng: Rng, ctx: AgencyStaff, at: datetime, clock: datetime, *, doc_id: int) -> OutgoingDoc:
    unit = rng.choice(ctx.units)
    type_name, drafter, steps = plan_outgoing(rng, unit)
    events = [e for e in materialize(steps, at, add_work_seconds) if e.at <= clock]
    return OutgoingDoc(
        id=doc_id,
        agency=ctx.code,
        unit=unit.code,
        type_name=type_name,
        type_abbr=seed_data.document_type(type_name).abbreviation,
        type_label=type_label(rng, type_name),
        subject=subject(rng, type_name),
        drafter=drafter,
        approver=unit.head,
        signer=unit.in_charge,
        events=events,
    )


def new_task(rng: Rng, ctx: AgencyStaff, at: datetime, clock: datetime, *, task_id: int) -> Task:
    unit = rng.choice(ctx.units)
    assigner = rng.choice((unit.head, unit.deputy, unit.in_charge))
    assignee = rng.choice(unit.staff)
    due_days = rng.choice((3, 5, 7, 10, 15, 20))
    due = None if rng.chance(0.1) else add_workdays(at.date(), due_days)
    started = add_work_seconds(at, _work(rng, 30, 900))
    finished = add_work_seconds(started, _work(rng, 300, due_days * 570 * 11 // 10))
    if rng.chance(0.15):
        finished = add_work_seconds(finished, rng.between(3, 10) * 570 * 60)
    task = Task(
        id=task_id,
        agency=ctx.code,
        unit=unit.code,
        name=rng.choice(TASK_NAMES).format(t=rng.choice(TOPICS)),
        assigner=assigner,
        assignee=assignee,
        assigned_at=at,
        due=due,
        updated_at=at,
    )
    if due is not None and rng.chance(0.1):
        extended_at = started + (finished - started) / 2
        if extended_at <= clock:
            task.due = add_workdays(due, 5)
            task.updated_at = extended_at.replace(microsecond=0)
    if finished <= clock:
        task.progress, task.finished_at, task.updated_at = 100, finished, finished
    elif started <= clock:
        task.progress = 10 * rng.between(1, 9)
        task.updated_at = max(task.updated_at, started)
    return task
