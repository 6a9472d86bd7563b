"""The declarative SOAP connector against the stand-in eDoc hub, over real loopback sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date

import pytest
from lxml import etree

from connectors.soap import SoapConnector, clear_wsdl_cache
from connectors.soap._envelope import HostileResponse, MalformedResponse, decode_item
from connectors.soap.config import PayloadConfig
from connectors.xmlsafe import DEFAULT_LIMITS
from gateway.errors import AuthError, ConfigError, ProtocolError
from gateway.standins import seed
from gateway.standins.edoc_hub import SANDBOX_TOKEN, EdocHubState, create_edoc_hub_app
from gateway.standins.eoffice import EOfficeState
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.types import Role, WorkItem
from tests._soap_helpers import hub_config, hub_connector

DAYS = 12


@pytest.fixture(scope="module")
def eoffice() -> EOfficeState:
    return EOfficeState(days=DAYS)


@pytest.fixture
def state(eoffice: EOfficeState) -> EdocHubState:
    return EdocHubState(eoffice=eoffice)


@pytest.fixture
def hub(state: EdocHubState) -> Iterator[RunningServer]:
    clear_wsdl_cache()
    with serve_in_thread(create_edoc_hub_app(state)) as server:
        yield server


@pytest.fixture
def make() -> Iterator[Callable[..., SoapConnector]]:
    made: list[SoapConnector] = []

    def build(url: str, token: str = SANDBOX_TOKEN, **changes: object) -> SoapConnector:
        made.append(hub_connector(url, token, **changes))
        return made[-1]

    yield build
    for connector in made:
        connector.close()


def sync(url: str, cursor: str | None = None, **changes: object) -> tuple[list[WorkItem], str | None]:
    connector = hub_connector(url, SANDBOX_TOKEN, **changes)
    items: list[WorkItem] = []
    checkpoint = cursor
    try:
        for page in connector.read("documents", cursor):
            assert not page.problems, page.problems[:2]
            items.extend(item for record in page.records for item in connector.normalize(record))
            checkpoint = page.checkpoint or checkpoint
    finally:
        connector.close()
    return items, checkpoint


def test_shipped_source_file_validates() -> None:
    cfg = hub_config("http://127.0.0.1:8102", "t")
    assert cfg.kind == "soap"
    assert cfg.streams["documents"].edxml is not None
    assert cfg.auth.type == "body"


def test_check_loads_the_wsdl_and_calls(hub: RunningServer, make: Callable[..., SoapConnector]) -> None:
    connector = make(hub.url)
    result = connector.check()
    assert result.ok
    assert result.streams == ["documents"]


def test_same_document_same_key_and_people_as_the_eoffice(hub: RunningServer, eoffice: EOfficeState) -> None:
    items, checkpoint = sync(hub.url)
    assert checkpoint is not None
    by_key = {item.key: item for item in items}
    rows = eoffice.rows("van-ban-den", page_rec=1000, with_log=True)
    keys = {f"doc:{r['maDonVi']}:in:{r['maDinhDanhCoQuanBanHanh']}:{r['soKyHieu']}": r for r in rows}
    assert set(by_key) == set(keys)
    person_by_ioffice = {p.ioffice_id: p.person_id for p in seed.people()}
    person_by_staff = {p.edxml_staff: p.person_id for p in seed.people()}
    for key, row in keys.items():
        item = by_key[key]
        people = {(person_by_staff[p.user_id], p.role) for p in item.participants}
        leads = {pid for pid, role in people if role is Role.LEAD}
        if row["ngayHoanThanh"]:  # edXML names the lead once processing is reported (05/06)
            assert leads == {person_by_ioffice[row["nguoiChuTri"]]}
        assert leads <= {person_by_ioffice.get(row["nguoiChuTri"] or "")}
        if row["lanhDaoPhanCong"]:
            assert (person_by_ioffice[row["lanhDaoPhanCong"]], Role.DIRECTING_LEADER) in people
        assert (item.done_at is None) == (row["ngayHoanThanh"] is None)
        assert (item.due_at is None) == (row["hanXuLy"] is None)


def test_incremental_sync_sees_new_status_and_revoke(hub: RunningServer, state: EdocHubState) -> None:
    _, checkpoint = sync(hub.url)
    state.advance(86_400)
    doc = state.add_document("SKHCN", number="77", notation="KH-UBND", issuer_id="000.00.00.H37",
                             due=date(2026, 10, 1), clerk="P0010")  # fmt: skip
    revoked = state.documents_of("VPUBND")[0]
    state.advance(60)
    state.revoke(revoked)
    items, _ = sync(hub.url, checkpoint)
    keys = {item.key: item for item in items}
    new_key = f"doc:SKHCN:in:000.00.00.H37:{doc.number_symbol}"
    assert keys[new_key].status == "registered"
    assert keys[f"doc:VPUBND:in:{revoked.issuer_id}:{revoked.number_symbol}"].revoked
    assert len(items) < 10  # only what changed since the cursor (and its look-back window)


def test_element_payloads_decode_like_escaped_ones(eoffice: EOfficeState) -> None:
    clear_wsdl_cache()
    state = EdocHubState(eoffice=eoffice, payload_mode="element")
    cfg = hub_config("http://x", SANDBOX_TOKEN)
    stream = cfg.streams["documents"]
    joins = [j.model_copy(update={"payload": PayloadConfig(encoding="element", parse="edxml")}) for j in stream.joins]
    streams = {"documents": stream.model_copy(update={"joins": joins})}
    with serve_in_thread(create_edoc_hub_app(state)) as server:
        items, _ = sync(server.url, streams=streams)
    assert len(items) == len(state.documents_of("SKHCN")) + len(state.documents_of("VPUBND")) + len(
        state.documents_of("XA_COCSAN")
    )


def test_server_fault_and_503_are_retried(hub: RunningServer, state: EdocHubState) -> None:
    state.fail_next("fault_server", "http503")
    items, _ = sync(hub.url)
    assert items


def test_bad_token_fails_the_stream_as_auth(hub: RunningServer, make: Callable[..., SoapConnector]) -> None:
    connector = make(hub.url, "wrong-token")
    with pytest.raises(AuthError, match="Token"):
        next(iter(connector.read("documents", None)))


def test_client_fault_fails_the_stream(hub: RunningServer, state: EdocHubState) -> None:
    state.fail_next("fault_client")
    with pytest.raises(ProtocolError, match="SOAP Fault soap:Client"):
        sync(hub.url)


def test_fault_rule_can_quarantine_the_records_of_a_join(
    hub: RunningServer, state: EdocHubState, make: Callable[..., SoapConnector]
) -> None:
    from connectors.soap.config import FaultRule

    faults = [FaultRule(code="Client", message="invalid request", action="quarantine")]
    state.fail_next("pass", "fault_client")  # the list call passes, the first GetDocument fails
    connector = make(hub.url, faults=faults)
    page = next(iter(connector.read("documents", None)))
    assert not page.records
    assert page.problems
    assert all(p.error_kind == "FaultQuarantine" for p in page.problems)


def test_truncated_response_is_retried_then_kept_as_evidence(hub: RunningServer, state: EdocHubState) -> None:
    state.fail_next("truncate", "truncate", "truncate")
    with pytest.raises(MalformedResponse) as caught:
        sync(hub.url)
    assert caught.value.body  # the engine quarantines the raw page


def test_wrong_namespace_in_the_response_is_refused(hub: RunningServer, state: EdocHubState) -> None:
    state.fail_next("wrong_namespace")
    with pytest.raises(HostileResponse, match="wrong namespace"):
        sync(hub.url)


def test_unknown_operation_is_a_config_error(hub: RunningServer, make: Callable[..., SoapConnector]) -> None:
    cfg = hub_config(hub.url, SANDBOX_TOKEN)
    stream = cfg.streams["documents"].model_copy(update={"operation": "GetEverything"})
    connector = make(hub.url, streams={"documents": stream})
    with pytest.raises(ConfigError, match="no operation 'GetEverything'"):
        next(iter(connector.read("documents", None)))


def test_json_payload_in_a_string() -> None:
    el = etree.fromstring(b'<Item>{"id": 7, "name": "Nguy\\u1ec5n"}</Item>')
    assert decode_item(el, PayloadConfig(encoding="json"), DEFAULT_LIMITS) == {"id": 7, "name": "Nguyễn"}


def test_fields_payload_keeps_repeats_and_attributes() -> None:
    el = etree.fromstring(b'<Row kind="x"><A>1</A><B>2</B><B>3</B><C/></Row>')
    assert decode_item(el, PayloadConfig(), DEFAULT_LIMITS) == {"@kind": "x", "A": "1", "B": ["2", "3"], "C": None}
