"""The eDoc hub stand-in's data: the e-office's incoming documents as they travelled over the hub, plus bulk.

Seeded from :class:`~gateway.standins.eoffice.EOfficeState` (the same seed gives the same documents), so one
document can be followed across both stand-ins: the same issuer ``OrganId`` and number-symbol, the same
receiving agency, and status packets whose ``StaffInfo.Staff`` is the ``edxml_staff`` name of the very person
the e-office names by ``ioffice_id`` (03 clerk at registration, 04 the assigning leader, 05 and 06 the lead
handler), at the same times. ``bulk_records=N`` adds N synthetic documents, generated lazily from their index.
"""

from __future__ import annotations

import bisect
import threading
from datetime import date, datetime, time, timedelta
from typing import Any

from gateway.standins import seed as seed_data
from gateway.standins._edoc_packets import DESCRIPTIONS, HubDocument, HubStatus, document_packet, status_packet
from gateway.types import VN_TZ

PROVINCE_ORGAN = "000.00.00.H37"  # UBND tỉnh Lào Cai: the provincial account sees every receiving organ
SANDBOX_TOKEN = "edoc-hub-sandbox-token"  # noqa: S105 - the documented credential of a loopback stand-in
_EOFFICE_TO_STATUS = {"TIEP_NHAN": ("01", "03"), "PHAN_CONG": ("04",), "XU_LY": ("05",), "HOAN_THANH": ("06",)}
_BULK_ISSUERS = (("000.00.00.G22", "Bộ Khoa học và Công nghệ", "BKHCN"), ("000.00.03.H37", "Sở Nội vụ", "SNV"))


def _parse_vn(text: str) -> datetime:
    fmt = "%d/%m/%Y %H:%M:%S" if " " in text else "%d/%m/%Y"
    return datetime.strptime(text, fmt).replace(tzinfo=VN_TZ)


def _split_symbol(symbol: str) -> tuple[str, str]:
    number, _, notation = symbol.partition("/")
    return number, notation or number


class BulkDocuments:
    """N synthetic received documents, one second apart from ``start``; each a pure function of its index."""

    def __init__(self, count: int, start: datetime) -> None:
        self.count, self.start = count, start
        ags = seed_data.agencies()
        people = seed_data.people()
        self._agencies = [(a.organ_id, a.name) for a in ags]
        self._staff = [[(p.edxml_staff, p.unit) for p in people if p.agency == a.code and not p.is_leader] for a in ags]
        self._leaders = [[(p.edxml_staff, p.unit) for p in people if p.agency == a.code and p.is_leader] for a in ags]
        self._by_id: dict[str, int] = {}

    def updated_at(self, index: int) -> datetime:
        return self.start + timedelta(seconds=index)

    def first_index(self, since: datetime | None) -> int:
        if since is None or since <= self.start:
            return 0
        return min(self.count, int((since - self.start).total_seconds() + 0.999999))

    def document(self, index: int) -> HubDocument:
        a = index % len(self._agencies)
        organ, name = self._agencies[a]
        issuer_id, issuer_name, issuer_symbol = _BULK_ISSUERS[index % len(_BULK_ISSUERS)]
        updated = self.updated_at(index)
        staff, unit = self._staff[a][index % len(self._staff[a])]
        leader, _ = self._leaders[a][index % len(self._leaders[a])]
        clerk, _ = self._staff[a][(index + 1) % len(self._staff[a])]
        received = updated - timedelta(hours=30)
        doc = HubDocument(
            receiver=organ, receiver_name=name, issuer_id=issuer_id, issuer_name=issuer_name,
            number=str(index + 1), notation=f"{issuer_symbol}-BULK", promulgated=(received - timedelta(days=1)).date(),
            type_name="Công văn", subject=f"V/v văn bản tổng hợp số {index + 1}",
            due=(updated + timedelta(days=5)).date(), priority="0", signer="Lãnh đạo", updated_at=updated,
        )  # fmt: skip
        moments = [received, received, received + timedelta(hours=2), received + timedelta(hours=6), updated]
        for code, at, who in zip(
            ("01", "03", "04", "05", "06"), moments, (None, clerk, leader, staff, staff), strict=True
        ):
            doc.statuses.append(HubStatus(code, at, who, unit if who else None, DESCRIPTIONS[code]))
        return doc

    def index_of(self, document_id: str) -> int | None:
        _, _, symbol = document_id.rpartition(",")
        number, _, notation = symbol.partition("/")
        if not notation.endswith("-BULK") or not number.isdigit():
            return None
        index = int(number) - 1
        return index if 0 <= index < self.count else None


class EdocHubState:
    """Documents, status packets, clock, credentials and fault hooks of one stand-in eDoc hub; thread-safe."""

    def __init__(
        self,
        *,
        seed: int = 335,
        start: date = date(2026, 9, 1),
        days: int = 61,
        bulk_records: int = 0,
        eoffice: Any = None,
        tokens: dict[str, str] | None = None,
        payload_mode: str = "escaped",
    ) -> None:
        if payload_mode not in ("escaped", "element"):
            raise ValueError("payload_mode is 'escaped' (a string element, the default) or 'element'")
        self.payload_mode = payload_mode
        self.tokens = dict(tokens or {PROVINCE_ORGAN: SANDBOX_TOKEN})
        self._lock = threading.RLock()
        self._docs: dict[tuple[str, str], HubDocument] = {}
        self._order: list[tuple[datetime, str, str]] | None = None
        self._faults: list[str] = []
        self._people = {p.ioffice_id: p for p in seed_data.people()}
        self._units = {u.code: u.name for u in seed_data.units()}
        self._agencies = {a.code: a for a in seed_data.agencies()}
        if eoffice is None and days > 0:
            from gateway.standins.eoffice import EOfficeState

            eoffice = EOfficeState(seed=seed, start=start, days=days)
        self._clock = eoffice.now if eoffice is not None else datetime.combine(start, time(8, 0), VN_TZ)
        if eoffice is not None:
            self._load_eoffice(eoffice)
        window = datetime.combine(start, time(0, 0), VN_TZ) - timedelta(seconds=bulk_records)
        self.bulk = BulkDocuments(bulk_records, window) if bulk_records > 0 else None

    # -- seeding from the e-office ------------------------------------------------------------------------

    def _load_eoffice(self, eoffice: Any) -> None:
        page_no = 1
        while True:
            rows = eoffice.rows("van-ban-den", page_no=page_no, page_rec=1000, with_log=True)
            for row in rows:
                self._add_row(row)
            if len(rows) < 1000:
                return
            page_no += 1

    def _staff(self, ioffice_id: str | None) -> tuple[str | None, str | None]:
        person = self._people.get(ioffice_id or "")
        return (person.edxml_staff, self._units.get(person.unit)) if person else (None, None)

    def _add_row(self, row: dict[str, Any]) -> None:
        agency = self._agencies[row["maDonVi"]]
        number, notation = _split_symbol(row["soKyHieu"])
        doc = HubDocument(
            receiver=agency.organ_id, receiver_name=agency.name, issuer_id=row["maDinhDanhCoQuanBanHanh"],
            issuer_name=row["coQuanBanHanh"], number=number, notation=notation,
            promulgated=_parse_vn(row["ngayBanHanh"]).date(), type_name=row["loaiVanBan"], subject=row["trichYeu"],
            due=_parse_vn(row["hanXuLy"]).date() if row.get("hanXuLy") else None,
            priority={"thường": "0", "khẩn": "1", "thượng khẩn": "2", "hỏa tốc": "3"}.get(row.get("doKhan") or "", "0"),
            signer="", updated_at=_parse_vn(row["ngayCapNhat"]), day_first_dates=agency.code == "XA_COCSAN",
        )  # fmt: skip
        seen: set[str] = set()
        for entry in row.get("nhatKy") or ():
            for code in _EOFFICE_TO_STATUS.get(entry["hanhDong"], ()):
                if code in seen:
                    continue
                seen.add(code)
                staff, unit = (None, None) if code == "01" else self._staff(entry["nguoiThucHien"])
                doc.statuses.append(HubStatus(code, _parse_vn(entry["thoiGian"]), staff, unit, DESCRIPTIONS[code]))
        self._docs[(doc.receiver, doc.document_id)] = doc

    # -- clock and mutations --------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self._clock

    def advance(self, seconds: float = 3600.0) -> datetime:
        with self._lock:
            self._clock += timedelta(seconds=seconds)
            return self._clock

    def documents_of(self, agency: str) -> list[HubDocument]:
        organ = self._agencies[agency].organ_id
        with self._lock:
            return [d for (receiver, _), d in self._docs.items() if receiver == organ]

    def find(self, number_symbol: str, agency: str | None = None) -> HubDocument:
        with self._lock:
            for doc in self._docs.values():
                if doc.number_symbol == number_symbol and (agency is None or doc.receiver == self._organ(agency)):
                    return doc
        raise KeyError(number_symbol)

    def _organ(self, agency: str) -> str:
        return self._agencies[agency].organ_id

    def add_document(
        self, agency: str, *, number: str, notation: str, issuer_id: str = "000.00.00.G22",
        issuer_name: str = "Bộ Khoa học và Công nghệ", subject: str = "V/v văn bản mới", due: date | None = None,
        type_name: str = "Công văn", clerk: str | None = None,
    ) -> HubDocument:  # fmt: skip
        """A document arriving now (status 01, and 03 registered by ``clerk``, a person_id, when given)."""
        ag = self._agencies[agency]
        with self._lock:
            doc = HubDocument(
                receiver=ag.organ_id, receiver_name=ag.name, issuer_id=issuer_id, issuer_name=issuer_name,
                number=number, notation=notation, promulgated=self._clock.date(), type_name=type_name,
                subject=subject, due=due, priority="0", signer="", updated_at=self._clock,
            )  # fmt: skip
            self._docs[(doc.receiver, doc.document_id)] = doc
            doc.statuses.append(HubStatus("01", self._clock, None, None, DESCRIPTIONS["01"]))
            if clerk is not None:
                self._append(doc, "03", clerk)
            self._order = None
            return doc

    def add_status(self, doc: HubDocument, code: str, person_id: str | None) -> None:
        """The receiving organ reports a status now, by ``person_id`` (a seed person)."""
        with self._lock:
            self._append(doc, code, person_id)
            self._order = None

    def _append(self, doc: HubDocument, code: str, person_id: str | None) -> None:
        person = next((p for p in seed_data.people() if p.person_id == person_id), None)
        staff = person.edxml_staff if person else None
        unit = self._units.get(person.unit) if person else None
        doc.statuses.append(HubStatus(code, self._clock, staff, unit, DESCRIPTIONS.get(code)))
        doc.updated_at = self._clock

    def revoke(self, doc: HubDocument) -> None:
        """The sender revokes the document (a new packet with BussinessDocType 1) now."""
        with self._lock:
            doc.business = 1
            doc.updated_at = self._clock
            self._order = None

    def fail_next(self, *kinds: str) -> None:
        """Queue failures for the next calls: ``fault_server``, ``fault_client``, ``fault_auth``, ``http503``,
        ``truncate``, ``wrong_namespace``."""
        with self._lock:
            self._faults.extend(kinds)

    def next_failure(self) -> str | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    # -- reads ------------------------------------------------------------------------------------------------

    def authorized(self, organ_id: str, token: str) -> bool:
        expected = self.tokens.get(organ_id)
        return expected is not None and secrets_equal(expected, token)

    def _visible(self, organ_id: str, receiver: str) -> bool:
        return organ_id in (PROVINCE_ORGAN, receiver)

    def _ordered(self) -> list[tuple[datetime, str, str]]:
        if self._order is None:
            self._order = sorted((d.updated_at, d.receiver, d.document_id) for d in self._docs.values())
        return self._order

    def pending(self, organ_id: str, since: datetime | None, page: int, size: int) -> list[tuple[str, str, datetime]]:
        """(DocumentId, receiver, UpdatedAt) changed at or after ``since``, ascending; bulk records first."""
        out: list[tuple[str, str, datetime]] = []
        skip = (max(page, 1) - 1) * size
        if self.bulk is not None:
            first = self.bulk.first_index(since)
            for index in range(first + skip, min(self.bulk.count, first + skip + size)):
                doc = self.bulk.document(index)
                if self._visible(organ_id, doc.receiver):
                    out.append((doc.document_id, doc.receiver, doc.updated_at))
            skip = max(0, skip - (self.bulk.count - first))
        with self._lock:
            order = self._ordered()
            low = bisect.bisect_left(order, (since, "", "")) if since is not None else 0
            for updated, receiver, document_id in order[low:]:
                if len(out) >= size:
                    break
                if not self._visible(organ_id, receiver):
                    continue
                if skip:
                    skip -= 1
                    continue
                out.append((document_id, receiver, updated))
        return out

    def _matching(self, organ_id: str, document_ids: list[str]) -> list[HubDocument]:
        found: list[HubDocument] = []
        wanted = set(document_ids)
        if self.bulk is not None:
            for document_id in document_ids:
                index = self.bulk.index_of(document_id)
                if index is not None:
                    found.append(self.bulk.document(index))
        with self._lock:
            found.extend(d for (_, doc_id), d in self._docs.items() if doc_id in wanted)
        return [d for d in found if self._visible(organ_id, d.receiver)]

    def document_packets(self, organ_id: str, document_ids: list[str]) -> list[str]:
        return [document_packet(d) for d in self._matching(organ_id, document_ids)]

    def status_packets(
        self, organ_id: str, document_ids: list[str], since: datetime | None, page: int, size: int
    ) -> list[str]:
        if document_ids:
            docs = self._matching(organ_id, document_ids)
            return [status_packet(d, s) for d in docs for s in d.statuses]
        with self._lock:
            every = sorted(
                ((s.at, d.document_id, s.code, d) for d in self._docs.values() for s in d.statuses
                 if self._visible(organ_id, d.receiver) and (since is None or s.at >= since)),
                key=lambda t: t[:3],
            )  # fmt: skip
        start = (max(page, 1) - 1) * size
        return [status_packet(d, next(s for s in d.statuses if s.code == code and s.at == at))
                for at, _, code, d in every[start : start + size]]  # fmt: skip


def secrets_equal(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())
