"""The LGSP one-stop stand-in's data: administrative-procedure dossiers and their per-step traces, with a clock.

Each dossier is generated with its whole planned timeline (received, forwarded, appraised, maybe a supplementary
request that moves the due date, approved, result returned, or refused); what the API shows is the part of the
plan at or before the stand-in's clock, so moving the clock (``advance``) makes new dossiers arrive, open ones
progress, deadlines move and late completions appear. Explicit mutations (``request_supplement``, ``finish``,
``return_dossier``, ``touch``) act at the current clock. The handlers are the seed's people, named by their
``onestop_user``, in the same agencies as the e-office and the eDoc hub.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from gateway.standins import seed as seed_data
from gateway.types import VN_TZ

SANDBOX_CLIENT_ID = "kpigw"
SANDBOX_CLIENT_SECRET = "lgsp-sandbox-secret"  # noqa: S105 - the documented credential of a loopback stand-in
DATE_FORMAT = "%d/%m/%Y %H:%M:%S"

# (procedure code, name, days allowed, inter-agency) per agency; names match the mapping rules' texts
PROCEDURES: dict[str, tuple[tuple[str, str, int, bool], ...]] = {
    "XA_COCSAN": (
        ("1.001193", "Đăng ký khai sinh", 1, False),
        ("1.000656", "Đăng ký khai tử", 1, False),
        ("1.000894", "Đăng ký kết hôn", 3, False),
        ("2.000815", "Chứng thực bản sao từ bản chính giấy tờ, văn bản", 1, False),
        ("2.000884", "Chứng thực chữ ký trong các giấy tờ, văn bản", 1, False),
        ("1.004873", "Cấp Giấy xác nhận tình trạng hôn nhân", 3, False),
        ("1.004884", "Cấp bản sao trích lục hộ tịch", 1, False),
        ("1.003003", "Đăng ký đất đai, tài sản gắn liền với đất lần đầu", 20, True),
    ),
    "SKHCN": (
        ("1.004521", "Cấp giấy phép tiến hành công việc bức xạ - sử dụng thiết bị X-quang chẩn đoán y tế", 10, False),
        ("1.002412", "Đăng ký kết quả thực hiện nhiệm vụ khoa học và công nghệ", 7, False),
        ("1.003617", "Hỗ trợ xác lập quyền sở hữu công nghiệp", 15, False),
        ("1.004389", "Thẩm định công nghệ dự án đầu tư", 15, True),
    ),
    "VPUBND": (
        ("2.001790", "Cung cấp thông tin theo yêu cầu của công dân", 10, False),
        ("1.009994", "Chấp thuận chủ trương đầu tư (liên thông)", 20, True),
    ),
}
PER_DAY = {"XA_COCSAN": 4, "SKHCN": 2, "VPUBND": 1}
# who works the one-stop desk and who appraises, per agency (unit codes of the seed)
DESK_UNITS = {"XA_COCSAN": ("XA_COCSAN-HCC",), "SKHCN": ("SKHCN-VP",), "VPUBND": ("VPUBND-HCTC",)}
EXPERT_UNITS = {
    "XA_COCSAN": ("XA_COCSAN-VP", "XA_COCSAN-KT"),
    "SKHCN": ("SKHCN-QLKH", "SKHCN-QLCN"),
    "VPUBND": ("VPUBND-KT", "VPUBND-TH"),
}
STATUS_NAMES = {
    "MOI_TIEP_NHAN": "Mới tiếp nhận",
    "DANG_XU_LY": "Đang xử lý",
    "CHO_BO_SUNG": "Chờ bổ sung hồ sơ",
    "CHO_TRA_KET_QUA": "Chờ trả kết quả",
    "DA_TRA_KET_QUA": "Đã trả kết quả",
    "TRA_LAI": "Trả lại, không giải quyết",
}
_APPLICANTS = "Nguyễn Văn Hùng|Trần Thị Mai|Lò Văn Sáng|Giàng A Chính|Vàng Thị Dở|Phạm Minh Đức|Hoàng Thị Lan"


@dataclass(slots=True)
class Trace:
    at: datetime
    user: str  # onestop_user of a seed person
    position: str
    status: str  # TIEP_NHAN, CHUYEN_XU_LY, THAM_DINH, YEU_CAU_BO_SUNG, PHE_DUYET, TRA_KET_QUA, TU_CHOI
    comment: str
    moves_due_days: int = 0  # a supplementary request stops the clock: the due date moves


@dataclass(slots=True)
class Dossier:
    id: int
    code: str
    agency: str
    procedure_code: str
    procedure_name: str
    interagency: bool
    applicant: str
    received: datetime
    due: datetime
    plan: list[Trace] = field(default_factory=list)
    touched: datetime | None = None

    def view(self, now: datetime) -> dict[str, Any]:
        """What the API shows at ``now``."""
        seen = [t for t in self.plan if t.at <= now]
        due = self.due + timedelta(days=sum(t.moves_due_days for t in seen))
        last = seen[-1].status if seen else "TIEP_NHAN"
        finished = next((t.at for t in seen if t.status in ("TRA_KET_QUA", "TU_CHOI")), None)
        status = {
            "TIEP_NHAN": "MOI_TIEP_NHAN", "YEU_CAU_BO_SUNG": "CHO_BO_SUNG", "PHE_DUYET": "CHO_TRA_KET_QUA",
            "TRA_KET_QUA": "DA_TRA_KET_QUA", "TU_CHOI": "TRA_LAI",
        }.get(last, "DANG_XU_LY")  # fmt: skip
        updated = max([self.received, *(t.at for t in seen), *([self.touched] if self.touched else [])])
        organ = seed_data.agency(self.agency)
        return {
            "Id": self.id,
            "DocCode": self.code,
            "DocTypeCode": self.procedure_code,
            "DocTypeName": self.procedure_name,
            "ProcessingOrganId": organ.organ_id,
            "ProcessingOrganName": organ.name,
            "ApplicantName": self.applicant,
            "DateReceived": fmt(self.received),
            "DateAppointed": fmt(due),
            "FinishedDate": fmt(finished) if finished else None,
            "IsReturned": last == "TU_CHOI",
            "IsInterAgency": self.interagency,
            "Status": status,
            "StatusName": STATUS_NAMES[status],
            "SupplementCount": sum(1 for t in seen if t.status == "YEU_CAU_BO_SUNG"),
            "HandlerUserNames": list(dict.fromkeys(t.user for t in seen)),
            "UpdatedDate": fmt(updated),
        }

    def traces(self, now: datetime) -> list[dict[str, Any]]:
        return [
            {"DocumentId": self.code, "StepNo": n, "UserName": t.user, "UserPosition": t.position,
             "DateCreated": fmt(t.at), "Status": t.status, "Comment": t.comment}
            for n, t in enumerate((t for t in self.plan if t.at <= now), start=1)
        ]  # fmt: skip


def fmt(moment: datetime) -> str:
    return moment.astimezone(VN_TZ).strftime(DATE_FORMAT)


def parse(text: str) -> datetime:
    return datetime.strptime(text, DATE_FORMAT).replace(tzinfo=VN_TZ)


class LgspState:
    """Dossiers, clock, OAuth2 clients and fault hooks of one stand-in LGSP; thread-safe."""

    def __init__(
        self,
        *,
        seed: int = 335,
        start: date = date(2026, 9, 1),
        days: int = 61,
        future_days: int = 30,
        clients: dict[str, str] | None = None,
        token_ttl: float = 300.0,
    ) -> None:
        self.clients = dict(clients or {SANDBOX_CLIENT_ID: SANDBOX_CLIENT_SECRET})
        self.token_ttl = token_ttl
        self._lock = threading.RLock()
        self._clock = datetime.combine(start + timedelta(days=days), time(8, 0), VN_TZ)
        self._tokens: dict[str, datetime] = {}
        self._failures: list[tuple[int, int | None]] = []
        self.token_requests = 0
        self._dossiers: list[Dossier] = []
        self._generate(random.Random(seed), start, days + future_days)

    # -- generation -------------------------------------------------------------------------------------------

    def _generate(self, rng: random.Random, start: date, days: int) -> None:
        people = seed_data.people()
        staff = {
            code: [p for p in people if p.unit in units and not p.is_leader]
            for code, units in {**{f"desk:{a}": u for a, u in DESK_UNITS.items()},
                                **{f"expert:{a}": u for a, u in EXPERT_UNITS.items()}}.items()
        }  # fmt: skip
        leaders = {a: [p for p in people if p.agency == a and p.is_leader] for a in PER_DAY}
        applicants = _APPLICANTS.split("|")
        for offset in range(days):
            day = start + timedelta(days=offset)
            if day.weekday() >= 5:
                continue
            for agency, count in PER_DAY.items():
                organ = seed_data.agency(agency).organ_id
                for k in range(count):
                    code, name, allowed, inter = rng.choice(PROCEDURES[agency])
                    received = datetime.combine(day, time(7, 30), VN_TZ) + timedelta(minutes=rng.randint(0, 480))
                    number = len(self._dossiers) + 1
                    dossier = Dossier(
                        id=number, code=f"{organ}-{day:%y%m%d}-{k + 1:04d}", agency=agency, procedure_code=code,
                        procedure_name=name, interagency=inter, applicant=rng.choice(applicants), received=received,
                        due=datetime.combine(received.date() + timedelta(days=allowed), time(17, 0), VN_TZ),
                    )  # fmt: skip
                    desk = rng.choice(staff[f"desk:{agency}"])
                    expert = rng.choice(staff[f"expert:{agency}"])
                    leader = rng.choice(leaders[agency])
                    self._plan(rng, dossier, desk, expert, leader, allowed)
                    self._dossiers.append(dossier)

    def _plan(self, rng: random.Random, d: Dossier, desk: Any, expert: Any, leader: Any, allowed: int) -> None:
        at = d.received
        d.plan.append(Trace(at, desk.onestop_user, desk.job_position, "TIEP_NHAN", "Tiếp nhận hồ sơ"))
        at += timedelta(minutes=rng.randint(10, 90))
        d.plan.append(Trace(at, desk.onestop_user, desk.job_position, "CHUYEN_XU_LY", "Chuyển bộ phận chuyên môn"))
        span = timedelta(hours=max(2, allowed * 8))
        at += span * rng.uniform(0.1, 0.5)
        if rng.random() < 0.15:
            at += timedelta(hours=1)
            extra = rng.randint(2, 5)
            d.plan.append(Trace(at, expert.onestop_user, expert.job_position, "YEU_CAU_BO_SUNG",
                                "Đề nghị công dân bổ sung giấy tờ", moves_due_days=extra))  # fmt: skip
            at += timedelta(days=rng.randint(1, extra))
        d.plan.append(Trace(at, expert.onestop_user, expert.job_position, "THAM_DINH", "Thẩm định hồ sơ"))
        if rng.random() < 0.05:
            at += timedelta(hours=2)
            d.plan.append(Trace(at, leader.onestop_user, leader.job_position, "TU_CHOI", "Không đủ điều kiện"))
            return
        late = rng.random() < 0.12
        at += span * (rng.uniform(0.6, 1.6) if late else rng.uniform(0.1, 0.4))
        d.plan.append(Trace(at, leader.onestop_user, leader.job_position, "PHE_DUYET", "Phê duyệt kết quả"))
        at += timedelta(minutes=rng.randint(30, 240))
        d.plan.append(Trace(at, desk.onestop_user, desk.job_position, "TRA_KET_QUA", "Trả kết quả cho công dân"))

    # -- clock, credentials, faults --------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self._clock

    def advance(self, days: float = 1.0) -> datetime:
        with self._lock:
            self._clock += timedelta(days=days)
            return self._clock

    def issue_token(self, client_id: str, client_secret: str) -> str | None:
        import hmac
        import secrets

        with self._lock:
            self.token_requests += 1
            expected = self.clients.get(client_id)
            if expected is None or not hmac.compare_digest(expected.encode(), client_secret.encode()):
                return None
            token = secrets.token_urlsafe(24)
            self._tokens[token] = datetime.now(VN_TZ) + timedelta(seconds=self.token_ttl)
            return token

    def token_valid(self, token: str | None) -> bool:
        with self._lock:
            expires = self._tokens.get(token or "")
            return expires is not None and expires > datetime.now(VN_TZ)

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def fail_next(self, n: int = 1, status: int = 503, retry_after: int | None = None) -> None:
        with self._lock:
            self._failures.extend([(status, retry_after)] * n)

    def consume_failure(self) -> tuple[int, int | None] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    # -- reads -------------------------------------------------------------------------------------------------

    def visible(self) -> list[Dossier]:
        with self._lock:
            return [d for d in self._dossiers if d.received <= self._clock]

    def find(self, code: str) -> Dossier:
        for d in self.visible():
            if d.code == code:
                return d
        raise KeyError(code)

    def page(
        self, *, page: int, size: int, since: datetime | None, organ: str | None = None, traces: bool = False
    ) -> tuple[int, list[dict[str, Any]]]:
        """Dossiers updated at or after ``since``, ascending by (UpdatedDate, Id), one page of them."""
        with self._lock:
            now = self._clock
            rows = []
            for d in self.visible():
                view = d.view(now)
                if organ and view["ProcessingOrganId"] != organ:
                    continue
                if since is None or parse(view["UpdatedDate"]) >= since:
                    rows.append((parse(view["UpdatedDate"]), d.id, view, d))
        rows.sort(key=lambda r: (r[0], r[1]))
        chosen = rows[(page - 1) * size : page * size]
        if traces:
            for _, _, view, d in chosen:
                view["Traces"] = d.traces(now)
        return len(rows), [view for _, _, view, _ in chosen]

    def statistics(self, organ: str, month: str) -> dict[str, Any]:
        """Monthly figures: received, solved on time / late, returned, pending at the end of the month."""
        received = on_time = late = returned = 0
        for d in self.visible():
            view = d.view(self._clock)
            if view["ProcessingOrganId"] != organ or d.received.strftime("%Y-%m") != month:
                continue
            received += 1
            if view["IsReturned"]:
                returned += 1
            elif view["FinishedDate"]:
                on_time += parse(view["FinishedDate"]) <= parse(view["DateAppointed"])
                late += parse(view["FinishedDate"]) > parse(view["DateAppointed"])
        pending = received - on_time - late - returned
        return {"OrganId": organ, "Month": month, "Received": received, "SolvedOnTime": on_time,
                "SolvedLate": late, "Returned": returned, "Pending": pending}  # fmt: skip

    # -- mutations at the current clock -----------------------------------------------------------------------

    def _now_trace(self, d: Dossier, status: str, comment: str, user: str | None = None, days: int = 0) -> None:
        last = next((t for t in reversed(d.plan) if t.at <= self._clock), d.plan[0])
        d.plan = [t for t in d.plan if t.at <= self._clock]  # the rest of the old plan no longer happens
        d.plan.append(Trace(self._clock, user or last.user, last.position, status, comment, moves_due_days=days))

    def request_supplement(self, code: str, days: int) -> None:
        """The handler asks the citizen for more papers now: the due date moves ``days`` later."""
        with self._lock:
            self._now_trace(self.find(code), "YEU_CAU_BO_SUNG", "Đề nghị bổ sung hồ sơ", days=days)

    def stall(self, code: str) -> None:
        """The dossier stops moving: what its plan would still have done does not happen (until ``finish``)."""
        with self._lock:
            d = self.find(code)
            d.plan = [t for t in d.plan if t.at <= self._clock]

    def finish(self, code: str) -> None:
        """The result is returned to the citizen now (late, if the due date has passed)."""
        with self._lock:
            self._now_trace(self.find(code), "TRA_KET_QUA", "Trả kết quả cho công dân")

    def return_dossier(self, code: str) -> None:
        with self._lock:
            self._now_trace(self.find(code), "TU_CHOI", "Trả lại hồ sơ, không giải quyết")

    def touch(self, codes: list[str]) -> None:
        """Mark dossiers updated now (all with the same UpdatedDate: a run of equal cursor values)."""
        with self._lock:
            for code in codes:
                self.find(code).touched = self._clock

    def open_codes(self) -> list[str]:
        now = self._clock
        return [d.code for d in self.visible() if d.view(now)["FinishedDate"] is None]
