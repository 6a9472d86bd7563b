"""The eDoc hub stand-in: a document/literal SOAP 1.1 service on loopback, shaped like a provincial
(Bkav-style) hub, serving QCVN 102:2016 edXML packets.

- ``GET /EdocHub.asmx?wsdl``: the WSDL (``gateway/standins/wsdl/edoc_hub.wsdl``) with this server's address;
- ``POST /EdocHub.asmx``: ``GetPendingDocumentIds`` (documents changed since ``Since``, ascending, paged),
  ``GetDocument`` (the edXML document packets of one or more ``DocumentId``) and ``GetTraces`` (status packets
  since ``Since``, paged, or every status of the given ``DocumentId`` values). ``OrganId`` + ``Token`` travel in
  the body; a bad pair is a ``soap:Client`` Fault. Packets are escaped inside ``string`` elements, as legacy
  .NET services do (``payload_mode="element"`` embeds them as elements instead).

Requests are parsed by hand with the hardened parser (:func:`connectors.xmlsafe.parse_xml`); responses are
string templates. ``create_edoc_hub_app(state)`` builds the ASGI app (no work at import time); run it with
:func:`gateway.standins.server.serve_in_thread`. Data and mutations live in :class:`EdocHubState`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from importlib.resources import files
from typing import Any
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.edxml._dates import parse_edxml_date
from connectors.xmlsafe import XmlError, XmlLimits, parse_xml
from gateway.standins._edoc_packets import HubDocument, HubStatus, document_packet, status_packet
from gateway.standins._edoc_state import PROVINCE_ORGAN, SANDBOX_TOKEN, BulkDocuments, EdocHubState

__all__ = [
    "PROVINCE_ORGAN",
    "SANDBOX_TOKEN",
    "BulkDocuments",
    "EdocHubState",
    "HubDocument",
    "HubStatus",
    "create_edoc_hub_app",
    "document_packet",
    "status_packet",
]

HUB_NS = "http://edoc.laocai.gov.vn/hub/"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
ENDPOINT = "/EdocHub.asmx"
MAX_PAGE_SIZE = 1000
_XML = "text/xml; charset=utf-8"
_REQUEST_LIMITS = XmlLimits(max_bytes=1024 * 1024, max_depth=32)


def _envelope(inner: str, ns: str = SOAP_NS) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{ns}" '
        f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        f"<soap:Body>{inner}</soap:Body></soap:Envelope>"
    ).encode()


def _fault(code: str, message: str) -> Response:
    inner = f"<soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{escape(message)}</faultstring></soap:Fault>"
    return Response(_envelope(inner), status_code=500, media_type=_XML)


def _result(operation: str, items: str) -> bytes:
    return _envelope(
        f'<{operation}Response xmlns="{HUB_NS}"><{operation}Result>{items}</{operation}Result></{operation}Response>'
    )


def _args(body: Any) -> tuple[str, dict[str, list[str]]]:
    call = next((c for c in body if isinstance(c.tag, str)), None)
    if call is None or not call.tag.startswith("{" + HUB_NS + "}"):
        raise ValueError("the Body holds no operation of this service")
    args: dict[str, list[str]] = {}
    for child in call:
        if isinstance(child.tag, str):
            args.setdefault(child.tag.rpartition("}")[2], []).append((child.text or "").strip())
    return call.tag.rpartition("}")[2], args


def _one(args: dict[str, list[str]], name: str, default: str = "") -> str:
    values = args.get(name)
    return values[0] if values else default


def _int(args: dict[str, list[str]], name: str, default: int) -> int:
    text = _one(args, name)
    return int(text) if text else default


def _since(args: dict[str, list[str]]) -> datetime | None:
    return parse_edxml_date(_one(args, "Since") or None)


def _packets(tag: str, packets: list[str], mode: str) -> str:
    if mode == "element":
        return "".join(f"<{tag}>{p}</{tag}>" for p in packets)
    return "".join(f"<{tag}>{escape(p)}</{tag}>" for p in packets)


def create_edoc_hub_app(state: EdocHubState, *, latency: float = 0.0) -> Starlette:
    """The hub's ASGI app; ``latency`` seconds are added to every SOAP answer, as if the hub were that far away
    (it waits without blocking, so concurrent calls overlap their waits as they would on a real network)."""
    wsdl_text = files("gateway.standins").joinpath("wsdl/edoc_hub.wsdl").read_text(encoding="utf-8")

    async def wsdl(request: Request) -> Response:
        address = f"{request.base_url}".rstrip("/") + ENDPOINT
        text = wsdl_text.replace("http://127.0.0.1:8102/EdocHub.asmx", address)
        return Response(text.encode(), media_type=_XML)

    async def endpoint(request: Request) -> Response:
        if request.method == "GET":
            if "wsdl" in {k.lower() for k in request.query_params}:
                return await wsdl(request)
            return Response(b"use POST (SOAP 1.1) or ?wsdl", status_code=405)
        raw = await request.body()
        if latency > 0:
            await asyncio.sleep(latency)
        try:
            root = parse_xml(raw, limits=_REQUEST_LIMITS, what="SOAP request")
            body = root.find(f"{{{SOAP_NS}}}Body")
            if body is None:
                raise ValueError("not a SOAP 1.1 envelope with a Body")
            operation, args = _args(body)
        except (XmlError, ValueError) as exc:
            return _fault("Client", f"bad request: {exc}")
        failure = state.next_failure()
        if failure is not None:
            injected = _injected(failure, operation)
            if injected is not None:
                return injected
        organ = _one(args, "OrganId")
        if not state.authorized(organ, _one(args, "Token")):
            return _fault("Client", "Token không hợp lệ (invalid token for this OrganId)")
        try:
            content = _dispatch(state, operation, organ, args)
        except (ValueError, TypeError) as exc:
            return _fault("Client", f"bad arguments: {exc}")
        if content is None:
            return _fault("Client", f"unknown operation {operation}")
        if failure == "truncate":
            content = content[: max(1, len(content) // 2)]
        elif failure == "wrong_namespace":
            content = content.replace(HUB_NS.encode(), b"http://evil.example/hub/")
        return Response(content, media_type=_XML)

    return Starlette(routes=[Route(ENDPOINT, endpoint, methods=["GET", "POST"])])


def _injected(failure: str, operation: str) -> Response | None:
    if failure == "fault_server":
        return _fault("Server", "Hệ thống đang bận, vui lòng thử lại (server busy)")
    if failure == "fault_client":
        return _fault("Client", f"{operation}: invalid request")
    if failure == "fault_auth":
        return _fault("Client", "Token hết hạn (token expired)")
    if failure == "http503":
        return Response(b"Service Unavailable", status_code=503, headers={"Retry-After": "0"})
    return None  # truncate / wrong_namespace act on the real answer


def _dispatch(state: EdocHubState, operation: str, organ: str, args: dict[str, list[str]]) -> bytes | None:
    size = min(max(_int(args, "PageSize", 100), 1), MAX_PAGE_SIZE)
    page = max(_int(args, "PageIndex", 1), 1)
    if operation == "GetPendingDocumentIds":
        rows = state.pending(organ, _since(args), page, size)
        items = "".join(
            f"<DocumentInfo><DocumentId>{escape(doc_id)}</DocumentId><ReceiverOrganId>{receiver}</ReceiverOrganId>"
            f"<UpdatedAt>{updated.strftime('%Y/%m/%d %H:%M:%S')}</UpdatedAt></DocumentInfo>"
            for doc_id, receiver, updated in rows
        )
        return _result(operation, items)
    if operation == "GetDocument":
        ids = [i for i in args.get("DocumentId", []) if i]
        if not ids:
            raise ValueError("DocumentId is required")
        return _result(
            operation, _packets("Packet", state.document_packets(organ, ids[:MAX_PAGE_SIZE]), state.payload_mode)
        )
    if operation == "GetTraces":
        ids = [i for i in args.get("DocumentId", []) if i][:MAX_PAGE_SIZE]
        packets = state.status_packets(organ, ids, _since(args), page, size)
        return _result(operation, _packets("Trace", packets, state.payload_mode))
    return None
