"""SOAP on the wire: responses read with the hardened parser, Faults classified, records selected and decoded.

Responses are never handed to zeep's object builder on the hot path: the raw envelope is parsed once with
:func:`connectors.xmlsafe.parse_xml`, checked (SOAP 1.1 or 1.2 namespace, a Body, the operation's wrapper
element in the namespace the WSDL promises) and the records are picked out with precompiled XPath.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from lxml import etree

from connectors.edxml.packets import EdxmlError, parse_packet
from connectors.soap.config import FaultRule, PayloadConfig
from connectors.xmlsafe import MalformedXml, UnsafeXml, XmlLimits, parse_xml
from gateway.errors import AuthError, GatewayError, ProtocolError, RecordError, SourceUnavailable

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"


class MalformedResponse(SourceUnavailable):
    """The response did not parse (truncated, garbled): retried, then the page is quarantined with its body."""

    def __init__(self, message: str, *, body: bytes, source: str, where: str) -> None:
        super().__init__(message, source=source, where=where)
        self.body = body


class HostileResponse(ProtocolError):
    """DTD, entities, too deep, too big, wrong namespace: the stream fails and the body is kept as evidence."""

    def __init__(self, message: str, *, body: bytes, source: str, where: str) -> None:
        super().__init__(message, source=source, where=where)
        self.body = body


class FaultQuarantine(RecordError):
    """A Fault classified ``quarantine``: the records this call was about go to quarantine."""


@dataclass(frozen=True, slots=True)
class SoapFault:
    code: str
    message: str
    detail: str | None


DEFAULT_FAULT_RULES: tuple[FaultRule, ...] = (
    FaultRule(message=r"token|auth|credential|unauthori[sz]ed|access denied|login|xác thực", action="auth"),
    FaultRule(code=r"(^|:)(Server|Receiver)$", message=r"timeout|busy|unavailable|try again|quá tải", action="retry"),
    FaultRule(code=r"(^|:)(Server|Receiver)$", action="retry"),
    FaultRule(code=r"(^|:)(Client|Sender)$", action="fail"),
    FaultRule(code=r".", action="fail"),
)


def read_envelope(raw: bytes, *, status: int, limits: XmlLimits, source: str, where: str) -> Any:
    """The SOAP Body element of a response, or the right gateway error."""
    try:
        root = parse_xml(raw, limits=limits, what="SOAP response")
    except UnsafeXml as exc:
        raise HostileResponse(str(exc), body=raw, source=source, where=where) from exc
    except MalformedXml as exc:
        if status == 429 or status >= 500:
            raise SourceUnavailable(f"HTTP {status} with an unreadable body", source=source, where=where) from exc
        raise MalformedResponse(str(exc), body=raw, source=source, where=where) from exc
    ns = etree.QName(root).namespace
    if etree.QName(root).localname != "Envelope" or ns not in (SOAP11, SOAP12):
        raise HostileResponse(
            f"not a SOAP envelope: root element is {root.tag!r}", body=raw, source=source, where=where
        )
    body = root.find(f"{{{ns}}}Body")
    if body is None:
        raise HostileResponse("SOAP envelope without a Body", body=raw, source=source, where=where)
    return body


def find_fault(body: Any) -> SoapFault | None:
    for ns in (SOAP11, SOAP12):
        fault = body.find(f"{{{ns}}}Fault")
        if fault is None:
            continue
        if ns == SOAP11:
            code = (fault.findtext("faultcode") or "").strip()
            message = (fault.findtext("faultstring") or "").strip()
            detail_el = fault.find("detail")
        else:
            code = (fault.findtext(f"{{{ns}}}Code/{{{ns}}}Value") or "").strip()
            sub = fault.findtext(f"{{{ns}}}Code/{{{ns}}}Subcode/{{{ns}}}Value")
            code = f"{code}/{sub.strip()}" if sub else code
            message = (fault.findtext(f"{{{ns}}}Reason/{{{ns}}}Text") or "").strip()
            detail_el = fault.find(f"{{{ns}}}Detail")
        detail = " ".join(detail_el.itertext()).strip() if detail_el is not None else None
        return SoapFault(code, message, detail or None)
    return None


def fault_error(fault: SoapFault, rules: Sequence[FaultRule], *, source: str, where: str) -> GatewayError:
    """The error a Fault means, by the first rule (configured ones first) whose patterns match."""
    text = f"SOAP Fault {fault.code}: {fault.message}" + (f" ({fault.detail[:200]})" if fault.detail else "")
    for rule in (*rules, *DEFAULT_FAULT_RULES):
        if rule.code is not None and not re.search(rule.code, fault.code, re.IGNORECASE):
            continue
        if rule.message is not None and not re.search(rule.message, f"{fault.message} {fault.detail or ''}", re.I):
            continue
        if rule.action == "retry":
            return SourceUnavailable(text, source=source, where=where)
        if rule.action == "auth":
            return AuthError(text, source=source, where=where)
        if rule.action == "quarantine":
            return FaultQuarantine(text, source=source, where=where)
        return ProtocolError(text, source=source, where=where)
    return ProtocolError(text, source=source, where=where)  # pragma: no cover - the last default matches all


def wrapper_of(body: Any, expected: str | None, *, raw: bytes, source: str, where: str) -> Any:
    """The operation's response element (first child of Body), checked against the WSDL's qualified name."""
    children = [c for c in body if isinstance(c.tag, str)]
    if not children:
        raise HostileResponse("SOAP Body is empty", body=raw, source=source, where=where)
    wrapper = children[0]
    if expected is not None and wrapper.tag != expected:
        raise HostileResponse(
            f"unexpected response element {wrapper.tag!r}; the WSDL promises {expected!r} (wrong namespace?)",
            body=raw,
            source=source,
            where=where,
        )
    return wrapper


@cache
def record_selector(path: str) -> etree.XPath:
    steps = "/".join(f"*[local-name()='{part}']" for part in path.split(".") if part)
    if not re.fullmatch(r"[A-Za-z_][\w.\-]*", path):
        raise ValueError(f"bad records path {path!r}: dotted element names only")
    return etree.XPath(steps)


def element_fields(el: Any) -> Any:
    """An element as plain data: leaves are text, repeats become lists, attributes are ``@name``."""
    kids = [c for c in el if isinstance(c.tag, str)]
    if not kids:
        text = el.text
        if el.attrib:
            return {**{f"@{etree.QName(k).localname}": v for k, v in el.attrib.items()}, "value": text}
        return text
    out: dict[str, Any] = {f"@{etree.QName(k).localname}": v for k, v in el.attrib.items()}
    for child in kids:
        name = etree.QName(child).localname
        value = element_fields(child)
        if name in out:
            current = out[name]
            if isinstance(current, list):
                current.append(value)
            else:
                out[name] = [current, value]
        else:
            out[name] = value
    return out


class PayloadError(ValueError):
    """One record's payload cannot be decoded (malformed inner XML or JSON, not an edXML packet)."""


def decode_item(el: Any, cfg: PayloadConfig, limits: XmlLimits) -> dict[str, Any]:
    """One record element -> a dict; ``UnsafeXml`` propagates (hostile content fails the stream)."""
    if cfg.encoding == "json":
        try:
            value = orjson.loads((el.text or "").encode())
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"payload is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise PayloadError("JSON payload is not an object")
        return value
    if cfg.encoding == "escaped_xml":
        text = el.text or ""
        if not text.strip():
            raise PayloadError("empty XML payload")
        try:
            node = parse_xml(text, limits=limits, what="XML payload")
        except MalformedXml as exc:
            raise PayloadError(str(exc)) from exc
    else:
        node = el
        if cfg.parse == "edxml":
            inner = [c for c in el if isinstance(c.tag, str)]
            node = inner[0] if inner else el
    if cfg.parse == "edxml":
        try:
            return parse_packet(node)
        except EdxmlError as exc:
            raise PayloadError(str(exc)) from exc
    value = element_fields(node)
    return value if isinstance(value, dict) else {"value": value}


__all__ = [
    "DEFAULT_FAULT_RULES",
    "FaultQuarantine",
    "HostileResponse",
    "MalformedResponse",
    "PayloadError",
    "SoapFault",
    "decode_item",
    "element_fields",
    "fault_error",
    "find_fault",
    "read_envelope",
    "record_selector",
    "wrapper_of",
]
