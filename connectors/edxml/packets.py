"""QCVN 102:2016 packets (edXML) read into plain, JSON-ready dicts: leniently, then validated strictly.

Lenient about what real hubs send: both spellings ``Bussiness``/``Business``, extra attributes, unknown or
empty elements, children without the ``edXML:`` prefix, dates in either order (kept as text here; see
:mod:`connectors.edxml._dates`). Strict about what matters: the root must be ``edXMLEnvelope`` in the QCVN
namespace, a document needs its ``DocumentId`` or ``Code``, a status its ``ResponseFor``, ``StatusCode`` and
``Timestamp``; otherwise :class:`EdxmlError`. Attachments are summarised (name, size), never carried.
"""

from __future__ import annotations

from typing import Any

from connectors.xmlsafe import DEFAULT_LIMITS, XmlLimits, parse_xml

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
_Q = "{" + NS + "}"

BUSINESS_DOC_TYPES = {"0": "new", "1": "revoke", "2": "update", "3": "replace"}
STATUS_CODES = {
    "01": "arrived",
    "02": "refused",
    "03": "registered",
    "04": "assigned",
    "05": "processing",
    "06": "completed",
    "13": "take_back_requested",
    "15": "take_back_accepted",
    "16": "take_back_refused",
}

__all__ = ["BUSINESS_DOC_TYPES", "NS", "STATUS_CODES", "EdxmlError", "parse_packet", "read_packet"]


class EdxmlError(ValueError):
    """The packet is not a usable edXML document or status packet."""


_QL = len(_Q)
_REPEATED = frozenset({"To", "TraceHeader", "Reference", "Attachment"})
_H = "edXMLHeader/MessageHeader/"
_T = "edXMLHeader/TraceHeaderList/"


def _name(tag: Any) -> str | None:
    if not isinstance(tag, str):
        return None  # comments, processing instructions
    if tag.startswith(_Q):
        name = tag[_QL:]
    elif tag.startswith("{"):
        return None  # another namespace (xmldsig Signature, vendor extensions): not ours
    else:
        name = tag
    return name.replace("Bussiness", "Business") if "Buss" in name else name


# Tag -> name, filled as tags are met. A packet has few distinct tags and a sync reads thousands of packets;
# the lookup replaces a function call and string surgery per element. Bounded: unknown tags beyond the cap are
# named without being remembered, so a hostile stream of distinct tags cannot grow it.
_NAMES: dict[Any, str | None] = {}
_NAMES_CAP = 4096
_UNSEEN: Any = object()


def _cached_name(tag: Any) -> str | None:
    name = _NAMES.get(tag, _UNSEEN)
    if name is _UNSEEN:
        name = _name(tag)
        if len(_NAMES) < _NAMES_CAP and isinstance(tag, str):
            _NAMES[tag] = name
    return name  # type: ignore[no-any-return]


def _flatten(el: Any, prefix: str, out: dict[str, str | None], repeats: dict[str, list[Any]]) -> None:
    """One pass: ``path -> text`` for the first element at each path; repeated groups kept as elements."""
    for child in el:
        tag = child.tag
        name = _NAMES.get(tag, _UNSEEN)  # inlined _cached_name: this loop runs for every element of every packet
        if name is _UNSEEN:
            name = _cached_name(tag)
        if name is None:
            continue
        path = prefix + name
        if name in _REPEATED:
            repeats.setdefault(path, []).append(child)
        elif len(child):
            out.setdefault(path, None)
            _flatten(child, path + "/", out, repeats)
        elif path not in out or out[path] is None:
            text = child.text
            out[path] = (text.strip() or None) if text else None


def _fields(el: Any, *names: str) -> dict[str, str | None]:
    values: dict[str, str | None] = dict.fromkeys(names)
    if el is None:
        return values
    for child in el:
        name = _cached_name(child.tag)
        if name in values and values[name] is None and child.text:
            values[name] = child.text.strip() or None
    return values


_ORGAN_FIELDS = ("OrganId", "OrganName", "OrganizationInCharge", "OrganAdd", "Email", "Telephone")


def _organ(el: Any) -> dict[str, str | None]:
    return _fields(el, *_ORGAN_FIELDS)


def _group(flat: dict[str, str | None], prefix: str, *names: str) -> dict[str, str | None]:
    return {name: flat.get(prefix + name) for name in names}


def read_packet(data: bytes | str, *, limits: XmlLimits | None = None) -> dict[str, Any]:
    """Parse packet bytes with the hardened parser, then :func:`parse_packet`."""
    root = parse_xml(data, limits=limits or DEFAULT_LIMITS, what="edXML packet")
    return parse_packet(root)


def parse_packet(root: Any) -> dict[str, Any]:
    """A document or status packet (an lxml element) as a dict with ``kind`` ``document`` or ``status``."""
    if root.tag != _Q + "edXMLEnvelope":
        raise EdxmlError(f"not an edXML envelope: root is {root.tag!r}, expected {{{NS}}}edXMLEnvelope")
    flat: dict[str, str | None] = {}
    repeats: dict[str, list[Any]] = {}
    _flatten(root, "", flat, repeats)
    if _H[:-1] not in flat:
        raise EdxmlError("edXML packet without edXMLHeader/MessageHeader")
    traces = [_fields(t, "OrganId", "Timestamp") for t in repeats.get(_T + "TraceHeader", ())]
    if _H + "StatusCode" in flat:
        return _status(flat, traces)
    return _document(flat, repeats, traces)


def _document(flat: dict[str, str | None], repeats: dict[str, list[Any]], traces: list[Any]) -> dict[str, Any]:
    number, notation = flat.get(_H + "Code/CodeNumber"), flat.get(_H + "Code/CodeNotation")
    document_id = flat.get(_H + "DocumentId")
    if not document_id and not (number and notation):
        raise EdxmlError("edXML document without DocumentId and without Code")
    if number and notation:
        number_symbol: str | None = f"{number}/{notation}"
    else:
        number_symbol = document_id.rsplit(",", 1)[-1].strip() if document_id else None
    biz = _T + "Business/"
    biz_type = flat.get(biz + "BusinessDocType") or "0"
    if biz_type not in BUSINESS_DOC_TYPES:
        raise EdxmlError(f"unknown BussinessDocType {biz_type!r}; expected one of {sorted(BUSINESS_DOC_TYPES)}")
    attachments = []
    for path in ("edXMLBody/edXMLManifest/Reference", "edXMLBody/AttachmentEncoded/Attachment"):
        for att in repeats.get(path, ()):
            found = _fields(att, "AttachmentName", "ContentId", "ContentType", "Description")
            attachments.append({k: v for k, v in found.items() if v})
    return {
        "kind": "document",
        "from": _group(flat, _H + "From/", *_ORGAN_FIELDS),
        "to": [_organ(t) for t in repeats.get(_H + "To", ())],
        "document_id": document_id,
        "code_number": number,
        "code_notation": notation,
        "number_symbol": number_symbol,
        "promulgation_place": flat.get(_H + "PromulgationInfo/Place"),
        "promulgation_date": flat.get(_H + "PromulgationInfo/PromulgationDate"),
        "type": flat.get(_H + "DocumentType/Type"),
        "type_detail": flat.get(_H + "DocumentType/TypeDetail"),
        "type_name": flat.get(_H + "DocumentType/TypeName"),
        "subject": flat.get(_H + "Subject"),
        "signer": _group(flat, _H + "SignerInfo/", "Competence", "Position", "FullName"),
        "due_date": flat.get(_H + "DueDate"),
        "priority": flat.get(_H + "OtherInfo/Priority"),
        "steering_type": flat.get(_H + "SteeringType"),
        "business_doc_type": biz_type,
        "business": BUSINESS_DOC_TYPES[biz_type],
        "business_reason": flat.get(biz + "BusinessDocReason"),
        "business_staff": _group(flat, biz + "StaffInfo/", "Department", "Staff", "Email", "Mobile"),
        "traces": traces,
        "attachments": attachments,
    }


def _status(flat: dict[str, str | None], traces: list[Any]) -> dict[str, Any]:
    code = flat.get(_H + "StatusCode")
    if code is None or code.zfill(2) not in STATUS_CODES:
        raise EdxmlError(f"unknown StatusCode {code!r}; expected one of {sorted(STATUS_CODES)}")
    code = code.zfill(2)
    response_for = _group(flat, _H + "ResponseFor/", "OrganId", "Code", "PromulgationDate", "DocumentId")
    if not (response_for["DocumentId"] or (response_for["OrganId"] and response_for["Code"])):
        raise EdxmlError("edXML status without ResponseFor DocumentId or OrganId+Code")
    timestamp = flat.get(_H + "Timestamp")
    if timestamp is None:
        raise EdxmlError("edXML status without Timestamp")
    return {
        "kind": "status",
        "from": _group(flat, _H + "From/", *_ORGAN_FIELDS),
        "response_for": response_for,
        "staff": _group(flat, _H + "StaffInfo/", "Department", "Staff", "Email", "Mobile"),
        "status_code": code,
        "status": STATUS_CODES[code],
        "description": flat.get(_H + "Description"),
        "timestamp": timestamp,
        "traces": traces,
    }
