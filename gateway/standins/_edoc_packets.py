"""edXML packets as the stand-in hub writes them (QCVN 102:2016, with the quirks real hubs have).

String templates, not a DOM: the hub renders thousands of packets a second in bulk mode. Every text value is
XML-escaped. Quirks kept on purpose, because the client must survive them: ``Bussiness`` spelling, empty
elements, a vendor attribute here and there, and ``dd/MM/yyyy`` timestamps from some vendors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from xml.sax.saxutils import escape

from gateway.types import VN_TZ

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"


@dataclass(slots=True)
class HubStatus:
    code: str
    at: datetime
    staff: str | None = None
    department: str | None = None
    description: str | None = None


@dataclass(slots=True)
class HubDocument:
    """One document as received by one organ (``receiver``); the hub's pending key is (receiver, document_id)."""

    receiver: str
    receiver_name: str
    issuer_id: str
    issuer_name: str
    number: str
    notation: str
    promulgated: date
    type_name: str
    subject: str
    due: date | None
    priority: str
    signer: str
    updated_at: datetime
    business: int = 0  # 0 new, 1 revoke, 2 update, 3 replace
    day_first_dates: bool = False  # this receiver's vendor writes dd/MM/yyyy
    statuses: list[HubStatus] = field(default_factory=list)

    @property
    def number_symbol(self) -> str:
        return f"{self.number}/{self.notation}"

    @property
    def document_id(self) -> str:
        return f"{self.issuer_id},{self.promulgated:%Y/%m/%d},{self.number_symbol}"


def fmt_moment(moment: datetime, *, day_first: bool = False) -> str:
    m = moment.astimezone(VN_TZ)
    if day_first:
        return f"{m.day:02d}/{m.month:02d}/{m.year:04d} {m.hour:02d}:{m.minute:02d}:{m.second:02d}"
    return f"{m.year:04d}/{m.month:02d}/{m.day:02d} {m.hour:02d}:{m.minute:02d}:{m.second:02d}"


def fmt_day(day: date) -> str:
    return f"{day.year:04d}/{day.month:02d}/{day.day:02d}"


def _e(text: str | None) -> str:
    return escape(text) if text else ""


def _organ(tag: str, organ_id: str, name: str) -> str:
    return (
        f"<edXML:{tag}><edXML:OrganId>{_e(organ_id)}</edXML:OrganId><edXML:OrganizationInCharge/>"
        f"<edXML:OrganName>{_e(name)}</edXML:OrganName><edXML:OrganAdd/><edXML:Email/>"
        f"<edXML:Telephone/><edXML:Fax/><edXML:Website/></edXML:{tag}>"
    )


def document_packet(doc: HubDocument) -> str:
    due = f"<edXML:DueDate>{fmt_day(doc.due)}</edXML:DueDate>" if doc.due else "<edXML:DueDate/>"
    sent = datetime.combine(doc.promulgated, datetime.min.time(), VN_TZ)
    return (
        f'<edXML:edXMLEnvelope xmlns:edXML="{NS}"><edXML:edXMLHeader><edXML:MessageHeader>'
        f"{_organ('From', doc.issuer_id, doc.issuer_name)}{_organ('To', doc.receiver, doc.receiver_name)}"
        f"<edXML:DocumentId>{_e(doc.document_id)}</edXML:DocumentId>"
        f"<edXML:Code><edXML:CodeNumber>{_e(doc.number)}</edXML:CodeNumber>"
        f"<edXML:CodeNotation>{_e(doc.notation)}</edXML:CodeNotation></edXML:Code>"
        f"<edXML:PromulgationInfo><edXML:Place>Lào Cai</edXML:Place>"
        f"<edXML:PromulgationDate>{fmt_day(doc.promulgated)}</edXML:PromulgationDate></edXML:PromulgationInfo>"
        f'<edXML:DocumentType vendor:code="x" xmlns:vendor="urn:vendor"><edXML:Type>1</edXML:Type>'
        f"<edXML:TypeDetail>0</edXML:TypeDetail><edXML:TypeName>{_e(doc.type_name)}</edXML:TypeName>"
        f"</edXML:DocumentType><edXML:Subject>{_e(doc.subject)}</edXML:Subject><edXML:Content/>"
        f"<edXML:SignerInfo><edXML:Competence/><edXML:Position/><edXML:FullName>{_e(doc.signer)}</edXML:FullName>"
        f"</edXML:SignerInfo>{due}<edXML:ToPlaces><edXML:Place>{_e(doc.receiver_name)}</edXML:Place></edXML:ToPlaces>"
        f"<edXML:OtherInfo><edXML:Priority>{_e(doc.priority)}</edXML:Priority><edXML:SphereOfPromulgation/>"
        f"<edXML:TyperNotation/><edXML:PromulgationAmount>1</edXML:PromulgationAmount><edXML:PageAmount>1"
        f"</edXML:PageAmount><edXML:Appendixes/></edXML:OtherInfo><edXML:SteeringType>0</edXML:SteeringType>"
        f"</edXML:MessageHeader><edXML:TraceHeaderList><edXML:TraceHeader><edXML:OrganId>{_e(doc.issuer_id)}"
        f"</edXML:OrganId><edXML:Timestamp>{fmt_moment(sent)}</edXML:Timestamp></edXML:TraceHeader>"
        f"<edXML:Bussiness><edXML:BussinessDocType>{doc.business}</edXML:BussinessDocType>"
        f"<edXML:BussinessDocReason/><edXML:BussinessDocumentInfo/><edXML:ReplacementInfoList/></edXML:Bussiness>"
        f"</edXML:TraceHeaderList></edXML:edXMLHeader><edXML:edXMLBody><edXML:edXMLManifest>"
        f"<edXML:Reference><edXML:AttachmentName>{_e(doc.number)}.pdf</edXML:AttachmentName>"
        f"<edXML:ContentType>application/pdf</edXML:ContentType></edXML:Reference></edXML:edXMLManifest>"
        f"</edXML:edXMLBody></edXML:edXMLEnvelope>"
    )


def status_packet(doc: HubDocument, status: HubStatus) -> str:
    return (
        f'<edXML:edXMLEnvelope xmlns:edXML="{NS}"><edXML:edXMLHeader><edXML:MessageHeader>'
        f"{_organ('From', doc.receiver, doc.receiver_name)}"
        f"<edXML:ResponseFor><edXML:OrganId>{_e(doc.issuer_id)}</edXML:OrganId>"
        f"<edXML:Code>{_e(doc.number_symbol)}</edXML:Code>"
        f"<edXML:PromulgationDate>{fmt_day(doc.promulgated)}</edXML:PromulgationDate>"
        f"<edXML:DocumentId>{_e(doc.document_id)}</edXML:DocumentId></edXML:ResponseFor>"
        f"<edXML:StaffInfo><edXML:Department>{_e(status.department)}</edXML:Department>"
        f"<edXML:Staff>{_e(status.staff)}</edXML:Staff><edXML:Email/><edXML:Mobile/></edXML:StaffInfo>"
        f"<edXML:StatusCode>{status.code}</edXML:StatusCode>"
        f"<edXML:Description>{_e(status.description)}</edXML:Description>"
        f"<edXML:Timestamp>{fmt_moment(status.at, day_first=doc.day_first_dates)}</edXML:Timestamp>"
        f"</edXML:MessageHeader><edXML:TraceHeaderList><edXML:TraceHeader><edXML:OrganId>{_e(doc.receiver)}"
        f"</edXML:OrganId><edXML:Timestamp>{fmt_moment(status.at)}</edXML:Timestamp></edXML:TraceHeader>"
        f"</edXML:TraceHeaderList></edXML:edXMLHeader><edXML:edXMLBody/></edXML:edXMLEnvelope>"
    )


DESCRIPTIONS = {
    "01": "Đã đến",
    "02": "Từ chối tiếp nhận",
    "03": "Đã tiếp nhận, vào sổ văn bản đến",
    "04": "Lãnh đạo đã phân công xử lý",
    "05": "Đang xử lý",
    "06": "Đã hoàn thành",
    "13": "Đề nghị lấy lại văn bản",
    "15": "Đồng ý lấy lại / cập nhật",
    "16": "Từ chối lấy lại / cập nhật",
}
