"""edXML (QCVN 102:2016) packets: lenient reading of real-world quirks, strict validation, normalization."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from connectors.edxml import (
    EdxmlError,
    EdxmlNormalizeConfig,
    compile_edxml_normalizer,
    parse_edxml_date,
    read_packet,
)
from gateway.errors import NormalizeError
from gateway.types import VN_TZ, EventKind, Role, SourceRecord

FIXTURES = Path(__file__).parent / "fixtures" / "edxml"
AGENCIES = {"000.00.12.H37": "SKHCN", "000.00.01.H37": "VPUBND"}


def packet(name: str) -> dict:
    return read_packet((FIXTURES / name).read_bytes())


def record(document: dict, statuses: list[dict], receiver: str | None = "000.00.12.H37") -> SourceRecord:
    payload = {"ReceiverOrganId": receiver, "document": document, "statuses": statuses}
    return SourceRecord("edoc-hub", "documents", "k1", payload)


def normalizer(**overrides: object):
    cfg = EdxmlNormalizeConfig(**{"agencies": AGENCIES, "receiver": "ReceiverOrganId", **overrides})
    return compile_edxml_normalizer(cfg, id_system="edxml")


def test_document_packet_with_real_quirks() -> None:
    doc = packet("document_quirks.xml")
    assert doc["kind"] == "document"
    assert doc["from"]["OrganId"] == "000.00.00.H37"
    assert [t["OrganId"] for t in doc["to"]] == ["000.00.12.H37", "000.00.01.H37"]
    assert doc["number_symbol"] == "156/QĐ-UBND"
    assert doc["type_name"] == "Quyết định"  # mapped on the name, the vendor's Type number is ignored
    assert doc["subject"] == "Về việc ban hành Danh mục sản phẩm & công việc năm 2026"
    assert doc["promulgation_date"] == "03/09/2026"  # day-first, kept as text, parsed later
    assert doc["business"] == "new"  # read from the misspelt Bussiness block
    assert doc["from"]["OrganAdd"] is None  # empty elements are None, not ""
    assert doc["attachments"] == [{"AttachmentName": "156-QD.pdf", "ContentType": "application/pdf"}]


def test_status_packet() -> None:
    status = packet("status_04.xml")
    assert status["kind"] == "status"
    assert status["status_code"] == "04"
    assert status["staff"]["Staff"] == "Lãnh đạo B"
    assert status["response_for"]["DocumentId"] == "000.00.00.H37,2026/09/03,156/QĐ-UBND"


def test_wrong_namespace_is_refused() -> None:
    with pytest.raises(EdxmlError, match="not an edXML envelope"):
        packet("status_wrong_namespace.xml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026/09/05 09:00:00", datetime(2026, 9, 5, 9, 0, tzinfo=VN_TZ)),
        ("05/09/2026 09:00:00", datetime(2026, 9, 5, 9, 0, tzinfo=VN_TZ)),
        ("2026-09-05", datetime(2026, 9, 5, 0, 0, tzinfo=VN_TZ)),
        ("5/9/2026 9:00", datetime(2026, 9, 5, 9, 0, tzinfo=VN_TZ)),
        ("2026-09-05T02:00:00+00:00", datetime(2026, 9, 5, 9, 0, tzinfo=VN_TZ)),
        ("  ", None),
    ],
)
def test_both_date_orders(text: str, expected: datetime | None) -> None:
    assert parse_edxml_date(text) == expected


def test_bad_date_is_an_error() -> None:
    with pytest.raises(ValueError, match="not an edXML date"):
        parse_edxml_date("tomorrow")


def test_unknown_status_code_is_refused() -> None:
    text = (
        (FIXTURES / "status_03.xml").read_text(encoding="utf-8").replace("<edXML:StatusCode>03", "<edXML:StatusCode>99")
    )
    with pytest.raises(EdxmlError, match="unknown StatusCode"):
        read_packet(text)


def test_document_and_statuses_become_one_work_item() -> None:
    statuses = [packet(f"status_{code}.xml") for code in ("06", "03", "05", "04")]  # any order
    item = normalizer()(record(packet("document_quirks.xml"), statuses))
    assert item.key == "doc:SKHCN:in:000.00.00.H37:156/QĐ-UBND"
    assert item.agency == "SKHCN"
    assert item.id_system == "edxml"
    assert item.due_at == datetime(2026, 9, 15, 23, 59, 59, tzinfo=VN_TZ)  # a date-only deadline is end of day
    assert item.received_at == datetime(2026, 9, 4, 8, 5, tzinfo=VN_TZ)
    assert item.done_at == datetime(2026, 9, 10, 15, 30, tzinfo=VN_TZ)
    assert [e.kind for e in item.events] == [EventKind.REGISTER, EventKind.ASSIGN, EventKind.PROCESS, EventKind.FINISH]
    roles = {(p.user_id, p.role) for p in item.participants}
    assert roles == {
        ("Văn thư A", Role.CLERK),
        ("Lãnh đạo B", Role.DIRECTING_LEADER),
        ("Chuyên viên C", Role.LEAD),  # 05 and 06 by the same person: one participant
    }
    assert item.status == "completed"
    assert not item.revoked


def test_revoked_document_is_revoked() -> None:
    item = normalizer()(record(packet("document_revoke.xml"), [packet("status_03.xml")]))
    assert item.revoked
    assert item.attributes["business"] == "revoke"


def test_take_back_accepted_revokes() -> None:
    text = (
        (FIXTURES / "status_06.xml").read_text(encoding="utf-8").replace("<edXML:StatusCode>06", "<edXML:StatusCode>15")
    )
    item = normalizer()(record(packet("document_quirks.xml"), [packet("status_03.xml"), read_packet(text)]))
    assert item.revoked
    assert item.events[-1].kind is EventKind.REVOKE


def test_unknown_receiver_is_a_record_error() -> None:
    with pytest.raises(NormalizeError, match="not in the source's agencies map") as caught:
        normalizer()(record(packet("document_quirks.xml"), [], receiver="000.99.99.H37"))
    assert caught.value.record_key == "k1"


def test_receiver_falls_back_to_status_sender_then_to() -> None:
    item = normalizer(receiver=None)(record(packet("document_quirks.xml"), [packet("status_03.xml")], receiver=None))
    assert item.agency == "SKHCN"
    cfg = EdxmlNormalizeConfig(agencies=AGENCIES)
    lone = compile_edxml_normalizer(cfg, id_system="edxml")(record(packet("document_quirks.xml"), [], receiver=None))
    assert lone.agency == "SKHCN"  # the first To


def test_missing_document_is_a_record_error() -> None:
    with pytest.raises(NormalizeError, match="no edXML document packet"):
        normalizer()(SourceRecord("s", "documents", "k", {"statuses": []}))


def test_key_template_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown fields"):
        normalizer(key="doc:{agency}:{nonsense}")


def test_tag_name_cache_is_bounded_and_does_not_change_what_is_read() -> None:
    """Packets with thousands of distinct (vendor) tags cannot grow the walk's tag-name cache past its cap."""
    from connectors.edxml import packets

    first = packet(sorted(p.name for p in FIXTURES.glob("*.xml"))[0])
    ns = packets.NS
    junk = "".join(f"<edXML:X{i}>v</edXML:X{i}>" for i in range(packets._NAMES_CAP + 100))
    hostile = (
        f'<edXML:edXMLEnvelope xmlns:edXML="{ns}"><edXML:edXMLHeader><edXML:MessageHeader>'
        f"<edXML:DocumentId>000.00.00.G22,2026/09/01,1/UBND</edXML:DocumentId>{junk}"
        "</edXML:MessageHeader></edXML:edXMLHeader></edXML:edXMLEnvelope>"
    )
    assert read_packet(hostile)["document_id"] == "000.00.00.G22,2026/09/01,1/UBND"
    assert len(packets._NAMES) <= packets._NAMES_CAP
    assert packet(sorted(p.name for p in FIXTURES.glob("*.xml"))[0]) == first
