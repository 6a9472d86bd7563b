"""The national exchange axis stand-in (Trục liên thông văn bản quốc gia, "VXP"): plain REST, signed headers.

Every call is ``GET`` or ``POST`` ``/<method>``:

- ``getReceivedEdocList`` (header ``messagetype``: ``edoc`` or ``status``): the messages addressed to the caller's
  organ that it has not acknowledged as ``done`` or ``fail``, oldest first, as ``{docId, serviceType, messageType,
  created_time, updated_time, from, to, status, status_desc}``;
- ``getEdoc`` (header ``docId``): ``data`` = base64 of the edXML packet;
- ``updateStatus`` (headers ``docId``, ``status`` = ``processing`` | ``done`` | ``fail``): the transport
  acknowledgement; idempotent.

Authentication (see ``docs/connectors.md``): the client's headers travel as ``XroadVnpt-<name>``; the server reads
``XroadVnpt-sign-header-key`` (the signed names, ``;``-joined), ``XroadVnpt-sign-header`` (their JSON) and
``XroadVnpt-hash-header`` (hex HMAC-SHA256 of that JSON under the system's secret), checks that the JSON is
exactly the signed headers as sent, that the call's own headers and ``systemid``/``timestamp`` are among them,
that the timestamp is fresh and that the HMAC matches. Anything else is HTTP 401 with
``{"status": "FAIL", "ErrorCode": "401", "ErrorDesc": ...}``.

The documents are those central ministries send the province's agencies straight over the axis (not through the
provincial hub): the same agencies (``OrganId``), the same people (status packets name the seed's
``edxml_staff``), the same packet writer as the eDoc hub stand-in (:mod:`gateway.standins._edoc_packets`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import threading
import time as walltime
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.standins import seed as seed_data
from gateway.standins._edoc_packets import DESCRIPTIONS, HubDocument, HubStatus, document_packet, status_packet
from gateway.types import VN_TZ

__all__ = ["PROVINCE_SYSTEM", "SANDBOX_SECRET", "Message", "VxpState", "create_vxp_app"]

PROVINCE_SYSTEM = "000.00.00.H37"  # the province's system id on the axis; its inbox holds its agencies' messages
SANDBOX_SECRET = "vxp-sandbox-secret"  # noqa: S105 - the documented credential of a loopback stand-in
PREFIX = "XroadVnpt-"
_ISSUERS = (("000.00.00.G22", "Bộ Khoa học và Công nghệ", "BKHCN"), ("000.00.00.G12", "Bộ Nội vụ", "BNV"),
            ("000.00.00.G06", "Bộ Tài chính", "BTC"))  # fmt: skip
_REQUIRED = {"getReceivedEdocList": ("messagetype",), "getEdoc": ("docId",), "updateStatus": ("docId", "status")}


@dataclass(slots=True)
class Message:
    doc_id: str
    message_type: str  # edoc | status
    created: datetime
    sender: str
    packet: str
    status: str = "pending"  # pending | processing | done | fail
    updated: datetime | None = None

    def row(self, receiver: str) -> dict[str, Any]:
        return {
            "docId": self.doc_id, "serviceType": "eDoc", "messageType": self.message_type,
            "created_time": _fmt(self.created), "updated_time": _fmt(self.updated or self.created),
            "from": self.sender, "to": receiver, "status": self.status, "status_desc": self.status,
        }  # fmt: skip


def _fmt(moment: datetime) -> str:
    return moment.astimezone(VN_TZ).strftime("%Y-%m-%d %H:%M:%S")


class VxpState:
    """The axis' inbox for the province's system, signed-header secrets, clock and fault hooks; thread-safe."""

    def __init__(
        self,
        *,
        seed: int = 335,
        start: date = date(2026, 9, 1),
        days: int = 61,
        future_days: int = 30,
        systems: dict[str, str] | None = None,
        max_skew: float = 300.0,
    ) -> None:
        self.systems = dict(systems or {PROVINCE_SYSTEM: SANDBOX_SECRET})
        self.max_skew = max_skew
        self._lock = threading.RLock()
        self._clock = datetime.combine(start + timedelta(days=days), time(8, 0), VN_TZ)
        self._rng = random.Random(seed)
        self._messages: list[Message] = []
        self._by_id: dict[str, Message] = {}
        self._failures: list[int] = []
        self._withheld: dict[str, int] = {}
        self.refused = 0  # calls refused for a bad signature
        people = seed_data.people()
        codes = [a.code for a in seed_data.agencies()]
        self._staff = {c: [p for p in people if p.agency == c and not p.is_leader] for c in codes}
        self._leaders = {c: [p for p in people if p.agency == c and p.is_leader] for c in codes}
        self._units = {u.code: u.name for u in seed_data.units()}
        self._count = 0
        for offset in range(days + future_days):
            day = start + timedelta(days=offset)
            if day.weekday() < 5:
                for agency in seed_data.agencies():
                    self._generate(agency.code, datetime.combine(day, time(9, 0), VN_TZ))

    # -- generation -------------------------------------------------------------------------------------------

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _generate(self, agency: str, sent: datetime) -> None:
        rng = self._rng
        doc = self._document(agency, sent + timedelta(minutes=rng.randint(0, 300)))
        clerk, staff = rng.choice(self._staff[agency]), rng.choice(self._staff[agency])
        leader = rng.choice(self._leaders[agency])
        at = doc.updated_at + timedelta(minutes=rng.randint(5, 60))
        plan = [("03", clerk, at), ("04", leader, at + timedelta(hours=2)), ("05", staff, at + timedelta(hours=6))]
        if rng.random() < 0.8:
            plan.append(("06", staff, at + timedelta(days=rng.randint(1, 7))))
        for code, person, moment in plan:
            self._status(doc, code, person, moment)

    def _document(self, agency: str, at: datetime, number: str | None = None) -> HubDocument:
        self._count += 1
        ag = seed_data.agency(agency)
        issuer_id, issuer_name, symbol = _ISSUERS[self._count % len(_ISSUERS)]
        doc = HubDocument(
            receiver=ag.organ_id, receiver_name=ag.name, issuer_id=issuer_id, issuer_name=issuer_name,
            number=number or str(self._count), notation=f"{symbol}-VP", promulgated=at.date(), type_name="Công văn",
            subject=f"V/v triển khai nhiệm vụ số {self._count}", due=(at + timedelta(days=10)).date(), priority="0",
            signer="Thứ trưởng", updated_at=at,
        )  # fmt: skip
        self._add(Message(self._new_id(), "edoc", at, issuer_id, document_packet(doc)))
        return doc

    def _status(self, doc: HubDocument, code: str, person: Any, at: datetime) -> None:
        status = HubStatus(code, at, person.edxml_staff, self._units.get(person.unit), DESCRIPTIONS[code])
        doc.statuses.append(status)
        self._add(Message(self._new_id(), "status", at, doc.receiver, status_packet(doc, status)))

    def _add(self, message: Message) -> None:
        self._messages.append(message)
        self._by_id[message.doc_id] = message

    # -- clock, mutations, faults ------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self._clock

    def advance(self, days: float = 1.0) -> datetime:
        with self._lock:
            self._clock += timedelta(days=days)
            return self._clock

    def add_documents(self, agency: str, count: int) -> list[str]:
        """``count`` documents arriving now, all with the same ``created_time``; returns their docIds."""
        with self._lock:
            before = len(self._messages)
            for _ in range(count):
                self._document(agency, self._clock)
            return [m.doc_id for m in self._messages[before:]]

    def add_status(self, agency: str, code: str, person_id: str) -> str:
        """A status packet about a new document of ``agency``, reported now by ``person_id``; returns its docId."""
        with self._lock:
            doc = self._document(agency, self._clock - timedelta(hours=1))
            person = next(p for p in seed_data.people() if p.person_id == person_id)
            self._status(doc, code, person, self._clock)
            return self._messages[-1].doc_id

    def add_raw(self, message_type: str, packet: str) -> str:
        """A message with an arbitrary packet now (tests: hostile or broken packets)."""
        with self._lock:
            message = Message(self._new_id(), message_type, self._clock, "000.00.00.G22", packet)
            self._add(message)
            return message.doc_id

    def expire(self, doc_id: str) -> None:
        """The axis drops a message (its retention ended, an operator purged it): from now on it is not listed,
        fetched or acknowledged (``getEdoc`` and ``updateStatus`` answer 404)."""
        with self._lock:
            found = self._by_id.pop(doc_id)
            self._messages.remove(found)

    def withhold(self, doc_id: str, *, http_status: int = 200) -> None:
        """The axis keeps listing a message but can no longer deliver it (its stored packet is damaged):
        ``getEdoc`` answers ``FAIL`` with ErrorCode 410, for good, under ``http_status`` (the axis's own answer
        comes with 200; another status is what a proxy or gateway in front of it would send)."""
        with self._lock:
            self._withheld[doc_id] = http_status

    def withheld(self, doc_id: str) -> int | None:
        """The HTTP status ``getEdoc`` of ``doc_id`` answers with, when it is withheld."""
        with self._lock:
            return self._withheld.get(doc_id)

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * n)

    def consume_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    # -- reads ---------------------------------------------------------------------------------------------------

    def pending(self, message_type: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = [m for m in self._messages if m.message_type == message_type and m.created <= self._clock
                    and m.status in ("pending", "processing")]  # fmt: skip
            rows.sort(key=lambda m: (m.created, m.doc_id))
            return [m.row(PROVINCE_SYSTEM) for m in rows]

    def message(self, doc_id: str) -> Message | None:
        with self._lock:
            found = self._by_id.get(doc_id)
            return found if found is not None and found.created <= self._clock else None

    def acknowledge(self, doc_id: str, status: str) -> bool:
        with self._lock:
            found = self.message(doc_id)
            if found is None:
                return False
            if found.status not in ("done", "fail"):  # a final acknowledgement is never undone
                found.status, found.updated = status, self._clock
            return True

    def ids(self, message_type: str) -> set[str]:
        """Every message of ``message_type`` that has arrived, acknowledged or not."""
        with self._lock:
            return {m.doc_id for m in self._messages if m.message_type == message_type and m.created <= self._clock}

    def statuses(self) -> dict[str, str]:
        with self._lock:
            return {m.doc_id: m.status for m in self._messages if m.created <= self._clock}

    # -- signatures ------------------------------------------------------------------------------------------------

    def verify(self, headers: Any, method: str) -> tuple[str | None, dict[str, str]]:
        """(refusal reason or None, the call's own headers by their unprefixed names)."""
        names = [n for n in (headers.get(f"{PREFIX}sign-header-key") or "").split(";") if n]
        signed_json = headers.get(f"{PREFIX}sign-header")
        digest = headers.get(f"{PREFIX}hash-header") or ""
        if not names or signed_json is None:
            return "missing XroadVnpt-sign-header-key / XroadVnpt-sign-header", {}
        try:
            signed = orjson.loads(signed_json)
        except orjson.JSONDecodeError:
            return "XroadVnpt-sign-header is not JSON", {}
        if not isinstance(signed, dict) or sorted(signed) != sorted(names):
            return "XroadVnpt-sign-header does not hold exactly the signed header names", {}
        for name in names:
            if headers.get(name) != signed[name]:
                return f"header {name} differs from its signed value", {}
        values = {name[len(PREFIX) :]: str(signed[name]) for name in names if name.startswith(PREFIX)}
        missing = [n for n in ("systemid", "timestamp", *_REQUIRED.get(method, ())) if n not in values]
        if missing:
            return f"unsigned or missing headers: {', '.join(missing)}", {}
        secret = self.systems.get(values["systemid"])
        if secret is None:
            return f"unknown systemid {values['systemid']}", {}
        expected = hmac.new(secret.encode(), signed_json.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, digest.lower()):
            return "XroadVnpt-hash-header does not match", {}
        try:
            skew = abs(walltime.time() - int(values["timestamp"]) / 1000)
        except ValueError:
            return "timestamp is not epoch milliseconds", {}
        if skew > self.max_skew:
            return f"timestamp is {skew:.0f}s away from the server's time", {}
        return None, values


def _answer(data: Any = None, *, status: int = 200, code: str = "0", desc: str = "") -> Response:
    """The axis's envelope; ``status`` FAIL for any error, which it also reports under HTTP 200 (code not 0)."""
    body = {"status": "OK" if status == 200 and code == "0" else "FAIL", "ErrorCode": code, "ErrorDesc": desc,
            "data": data}  # fmt: skip
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_vxp_app(state: VxpState) -> Starlette:
    async def endpoint(request: Request) -> Response:
        method = request.path_params["method"]
        failure = state.consume_failure()
        if failure is not None:
            return _answer(status=failure, code=str(failure), desc="Trục đang bận, vui lòng thử lại")
        reason, values = state.verify(request.headers, method)
        if reason is not None:
            state.refused += 1  # the event loop is one thread
            return _answer(status=401, code="401", desc=f"Xác thực thất bại: {reason}")
        if method == "getReceivedEdocList":
            if values["messagetype"] not in ("edoc", "status"):
                return _answer(status=400, code="400", desc="messagetype is edoc or status")
            return _answer(state.pending(values["messagetype"]))
        if method == "getEdoc":
            found = state.message(values["docId"])
            if found is None:
                return _answer(status=404, code="404", desc=f"docId {values['docId']} not found")
            withheld = state.withheld(found.doc_id)
            if withheld is not None:
                return _answer(status=withheld, code="410", desc="Gói tin đã bị hỏng, không thể cung cấp")
            return _answer(base64.b64encode(found.packet.encode()).decode())
        if method == "updateStatus":
            if values["status"] not in ("processing", "done", "fail"):
                return _answer(status=400, code="400", desc="status is processing, done or fail")
            if not state.acknowledge(values["docId"], values["status"]):
                return _answer(status=404, code="404", desc=f"docId {values['docId']} not found")
            return _answer(None)
        return _answer(status=404, code="404", desc=f"unknown method {method}")

    return Starlette(routes=[Route("/{method}", endpoint, methods=["GET", "POST"])])
