"""Hostile XML is refused everywhere: by the parser, in SOAP responses, in payloads and in WSDLs.

Every case must fail with a clear error before any page is yielded (so nothing can be committed), attempt no
outbound connection (a listening canary socket must see none) and keep memory bounded.
"""

from __future__ import annotations

import socket
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.soap import SoapConnector, clear_wsdl_cache
from connectors.soap._envelope import HostileResponse, MalformedResponse, read_envelope
from connectors.xmlsafe import UnsafeXml, XmlLimits, parse_xml
from gateway.errors import ProtocolError, StreamError
from gateway.standins.edoc_hub import SANDBOX_TOKEN, EdocHubState
from gateway.standins.server import RunningServer, serve_in_thread
from tests._soap_helpers import ROOT, context, hub_config

WSDL = (ROOT / "gateway" / "standins" / "wsdl" / "edoc_hub.wsdl").read_text(encoding="utf-8")
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"


@pytest.fixture
def canary() -> Iterator[socket.socket]:
    """A listening socket that no test may connect to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.3)
    yield sock
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        pass
    else:
        conn.close()
        pytest.fail("an outbound connection was attempted")
    finally:
        sock.close()


def hostile_bodies(port: int) -> dict[str, bytes]:
    evil = f"http://127.0.0.1:{port}/evil"
    lol = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    return {
        "xxe_file": b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
        "xxe_network": f'<!DOCTYPE r [<!ENTITY x SYSTEM "{evil}">]><r>&x;</r>'.encode(),
        "billion_laughs": f'<!DOCTYPE r [<!ENTITY lol0 "lol">{lol}]><r>&lol9;</r>'.encode(),
        "external_dtd": f'<!DOCTYPE r SYSTEM "{evil}.dtd"><r/>'.encode(),
        "parameter_entity": f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{evil}"> %p;]><r/>'.encode(),
        "utf16_doctype": '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>'.encode(
            "utf-16"
        ),
        "deep": b"<a>" * 10_000 + b"</a>" * 10_000,
    }


@pytest.mark.parametrize(
    "case", ["xxe_file", "xxe_network", "billion_laughs", "external_dtd", "parameter_entity", "utf16_doctype", "deep"]
)
def test_parser_refuses(case: str, canary: socket.socket) -> None:
    body = hostile_bodies(canary.getsockname()[1])[case]
    with pytest.raises(UnsafeXml):
        parse_xml(body)


def test_parser_depth_limit_is_configurable() -> None:
    body = b"<a>" * 20 + b"</a>" * 20
    assert parse_xml(body, limits=XmlLimits(max_depth=20)) is not None
    with pytest.raises(UnsafeXml, match="deeper than 19"):
        parse_xml(body, limits=XmlLimits(max_depth=19))


@pytest.mark.parametrize("max_depth", [8, 19, 64])
def test_depth_limit_holds_at_the_fewest_tags_that_can_exceed_it(max_depth: int) -> None:
    """The probe is skipped below 2 * max_depth + 1 "<" bytes: the tightest too-deep documents must still fail."""
    depth = max_depth + 1
    tightest = b"<a>" * (depth - 1) + b"<a/>" + b"</a>" * (depth - 1)  # exactly 2 * max_depth + 1 "<"
    assert tightest.count(b"<") == 2 * max_depth + 1
    as_text = tightest.decode()
    for body in (tightest, as_text, b'<?xml version="1.0" encoding="utf-8"?>' + tightest, "\ufeff " + as_text):
        with pytest.raises(UnsafeXml, match=f"deeper than {max_depth}"):
            parse_xml(body, limits=XmlLimits(max_depth=max_depth))
    just_deep_enough = b"<a>" * (depth - 2) + b"<a/>" + b"</a>" * (depth - 2)
    assert parse_xml(just_deep_enough, limits=XmlLimits(max_depth=max_depth)) is not None


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "iso-8859-1"])
def test_depth_limit_holds_in_other_encodings(encoding: str) -> None:
    """Where "<" may not be the byte 0x3C, or the count could mislead, the probe runs (or the count still holds)."""
    body = f'<?xml version="1.0" encoding="{encoding}"?>' + "<a>" * 10 + "</a>" * 10
    with pytest.raises(UnsafeXml, match="deeper than 9"):
        parse_xml(body.encode(encoding), limits=XmlLimits(max_depth=9))
    if encoding in ("utf-16", "utf-32"):  # found by the byte-order mark alone, no declaration
        with pytest.raises(UnsafeXml, match="deeper than 9"):
            parse_xml(("<a>" * 10 + "</a>" * 10).encode(encoding), limits=XmlLimits(max_depth=9))


def test_fifty_megabyte_text_node_is_refused_with_bounded_memory() -> None:
    body = b"<r>" + b"x" * (50 * 1024 * 1024) + b"</r>"
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeXml, match="exceeds"):
            parse_xml(body)  # over the 32 MB cap: refused before parsing
        with pytest.raises(UnsafeXml, match="limits"):
            parse_xml(body, limits=XmlLimits(max_bytes=64 * 1024 * 1024))  # libxml2's 10 MB text-node limit
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_truncated_at_many_offsets_is_malformed() -> None:
    state = EdocHubState(days=0, bulk_records=5)
    from gateway.standins._edoc_state import PROVINCE_ORGAN
    from gateway.standins.edoc_hub import _dispatch

    whole = _dispatch(state, "GetTraces", PROVINCE_ORGAN, {"DocumentId": [state.bulk.document(1).document_id]})
    assert whole is not None
    limits = XmlLimits()
    read_envelope(whole, status=200, limits=limits, source="s", where="w")
    for cut in range(1, len(whole) - 1, 7):
        with pytest.raises((MalformedResponse, HostileResponse)):
            read_envelope(whole[:cut], status=200, limits=limits, source="s", where="w")


# --- end to end: a hostile server behind a valid WSDL --------------------------------------------------------


def hostile_app(body: Callable[[], bytes], wsdl: str = WSDL) -> Starlette:
    async def endpoint(request: Request) -> Response:
        if request.method == "GET":
            address = f"{request.base_url}".rstrip("/") + "/EdocHub.asmx"
            return Response(wsdl.replace("http://127.0.0.1:8102/EdocHub.asmx", address), media_type="text/xml")
        return Response(body(), media_type="text/xml")

    return Starlette(routes=[Route("/EdocHub.asmx", endpoint, methods=["GET", "POST"])])


def envelope(inner: str) -> bytes:
    return f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body>{inner}</soap:Body></soap:Envelope>'.encode()


def connector_for(server: RunningServer, **limits: int) -> SoapConnector:
    clear_wsdl_cache()
    cfg = hub_config(server.url, SANDBOX_TOKEN)
    if limits:
        cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(update=limits)})
    return SoapConnector(name="edoc-hub", config=cfg, context=context())


@pytest.mark.parametrize(
    "case", ["xxe_file", "xxe_network", "billion_laughs", "external_dtd", "parameter_entity", "deep"]
)
def test_hostile_responses_fail_the_stream_before_any_page(case: str, canary: socket.socket) -> None:
    body = hostile_bodies(canary.getsockname()[1])[case]
    with serve_in_thread(hostile_app(lambda: body)) as server:
        connector = connector_for(server)
        try:
            pages = connector.read("documents", None)
            with pytest.raises(ProtocolError) as caught:
                next(pages)
            assert isinstance(caught.value, HostileResponse)
            assert caught.value.body == body  # kept as evidence for the quarantine
        finally:
            connector.close()


def test_hostile_payload_inside_a_string_fails_the_stream(canary: socket.socket) -> None:
    packet = hostile_bodies(canary.getsockname()[1])["xxe_network"].decode()
    escaped = packet.replace("&", "&amp;").replace("<", "&lt;")
    listing = (
        '<GetPendingDocumentIdsResponse xmlns="http://edoc.laocai.gov.vn/hub/"><GetPendingDocumentIdsResult>'
        "<DocumentInfo><DocumentId>D1</DocumentId><ReceiverOrganId>000.00.12.H37</ReceiverOrganId>"
        "<UpdatedAt>2026/09/01 08:00:00</UpdatedAt></DocumentInfo></GetPendingDocumentIdsResult>"
        "</GetPendingDocumentIdsResponse>"
    )
    document = (
        '<GetDocumentResponse xmlns="http://edoc.laocai.gov.vn/hub/"><GetDocumentResult>'
        f"<Packet>{escaped}</Packet></GetDocumentResult></GetDocumentResponse>"
    )
    replies = iter([envelope(listing), envelope(document)])
    with serve_in_thread(hostile_app(lambda: next(replies))) as server:
        connector = connector_for(server)
        try:
            with pytest.raises(HostileResponse, match="DTD"):
                next(connector.read("documents", None))
        finally:
            connector.close()


def test_oversized_response_is_refused_while_streaming() -> None:
    big = envelope("<x>" + "y" * (50 * 1024 * 1024) + "</x>")
    tracemalloc.start()
    try:
        with serve_in_thread(hostile_app(lambda: big)) as server:
            connector = connector_for(server, max_bytes=4 * 1024 * 1024)
            try:
                with pytest.raises(ProtocolError, match="cap"):
                    next(connector.read("documents", None))
            finally:
                connector.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 150 * 1024 * 1024  # the 50 MB body is built once by the server; the client holds < 4 MB


def test_wrong_soap_namespace_is_refused() -> None:
    body = b'<soap:Envelope xmlns:soap="http://evil.example/soap"><soap:Body/></soap:Envelope>'
    with serve_in_thread(hostile_app(lambda: body)) as server:
        connector = connector_for(server)
        try:
            with pytest.raises(HostileResponse, match="not a SOAP envelope"):
                next(connector.read("documents", None))
        finally:
            connector.close()


@pytest.mark.parametrize("target", ["network", "file", "dtd"])
def test_hostile_wsdl_import_is_refused(target: str, canary: socket.socket, tmp_path: Path) -> None:
    port = canary.getsockname()[1]
    location = {"network": f"http://127.0.0.1:{port}/evil.xsd", "file": "file:///etc/passwd", "dtd": ""}[target]
    if target == "dtd":
        wsdl = f'<!DOCTYPE d SYSTEM "http://127.0.0.1:{port}/x.dtd">' + WSDL.split("?>", 1)[1]
    else:
        wsdl = WSDL.replace(
            '<s:schema elementFormDefault="qualified" targetNamespace="http://edoc.laocai.gov.vn/hub/">',
            '<s:schema elementFormDefault="qualified" targetNamespace="http://edoc.laocai.gov.vn/hub/">'
            f'<s:import namespace="urn:evil" schemaLocation="{location}"/>',
        )
    with serve_in_thread(hostile_app(lambda: b"", wsdl)) as server:
        connector = connector_for(server)
        try:
            with pytest.raises(StreamError, match="WSDL"):
                connector.check()
        finally:
            connector.close()
