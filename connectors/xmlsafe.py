"""Hardened XML: the one place an lxml parser (or zeep's parse settings) is configured.

Every XML byte the gateway reads, SOAP envelopes, WSDLs, edXML packets and payloads carried inside string
elements, goes through :func:`parse_xml` or a parser from :func:`safe_parser`:

- **no DTD at all**: a ``<!DOCTYPE`` (internal or external) or ``<!ENTITY`` is refused before parsing and
  again after (encodings such as UTF-16 hide the bytes from the pre-scan, not from ``docinfo``); so no
  entity expansion (billion laughs), no XXE, no external DTD fetch;
- **no network** and no file access by the parser (``no_network``, ``load_dtd=False``, no resolvers);
- **strict**: ``recover=False``; a truncated or malformed document is an error, never a silently shortened tree;
- **bounded**: a byte cap before parsing, libxml2's own limits kept (``huge_tree=False``: text nodes under
  10 MB, depth under 256) and a configurable, lower depth limit checked in C after parsing (skipped only when
  counting ``<`` bytes proves the document cannot be that deep, see :func:`_may_be_too_deep`).

Failures raise :class:`UnsafeXml` (hostile or oversized: fail the stream) or :class:`MalformedXml` (does not
parse: the caller decides whether a retry may help).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

from lxml import etree

__all__ = [
    "DEFAULT_LIMITS",
    "MalformedXml",
    "UnsafeXml",
    "XmlError",
    "XmlLimits",
    "parse_xml",
    "safe_parser",
    "zeep_settings",
]


@dataclass(frozen=True, slots=True)
class XmlLimits:
    max_bytes: int = 32 * 1024 * 1024
    max_depth: int = 100  # libxml2 refuses beyond 256 anyway (without XML_PARSE_HUGE)


DEFAULT_LIMITS = XmlLimits()


class XmlError(ValueError):
    """Base of the XML refusals; ``reason`` is a short, stable label for metrics and tests."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnsafeXml(XmlError):
    """Hostile or oversized input (DTD, entity, too deep, too big): refused, never retried."""


class MalformedXml(XmlError):
    """Not well-formed (truncated, broken encoding, garbage)."""


def safe_parser() -> etree.XMLParser:
    """A fresh hardened parser (lxml parsers are not thread-safe; make one per thread or per use)."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        recover=False,
        remove_pis=True,
        collect_ids=False,
    )


_LOCAL = threading.local()


def _thread_parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_LOCAL, "parser", None)
    if parser is None:
        parser = _LOCAL.parser = safe_parser()
    return parser


@cache
def _depth_probe(max_depth: int) -> etree.XPath:
    # An element at depth max_depth + 1 exists iff this absolute path matches; evaluated in C.
    return etree.XPath("boolean(" + "/*" * (max_depth + 1) + ")")


# Encodings in which every "<" is the byte 0x3C (libxml2 reports UTF-8 when there is no declaration, also for
# UTF-16/32 found by their byte-order mark, where "<" still yields a 0x3C byte).
_LT_IS_3C = frozenset({"utf-8", "utf8", "ascii", "us-ascii"})


def _may_be_too_deep(raw: bytes, encoding: str | None, max_depth: int) -> bool:
    """Whether the depth probe has to run on a document parsed from ``raw``.

    Nesting ``max_depth + 1`` elements takes that many start tags and an end tag for every one but the innermost,
    so at least ``2 * max_depth + 1`` "<" characters (comments, CDATA and text only add to the count). Where "<"
    is the byte 0x3C, fewer such bytes prove the tree shallow enough. The probe is an XPath evaluation of several
    microseconds: on the thousands of small edXML packets a sync reads it was a fifth of the parse time.
    """
    if (encoding or "utf-8").lower() not in _LT_IS_3C:
        return True
    return raw.count(b"<") >= 2 * max_depth + 1


_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY")
_XML_DECL = re.compile(r"^\ufeff?\s*<\?xml[^>]*\?>")


def parse_xml(data: bytes | str, *, limits: XmlLimits = DEFAULT_LIMITS, what: str = "document") -> Any:
    """Parse ``data`` with the hardened parser and return the root element (an ``lxml`` element)."""
    # Text (a payload decoded from a string element) is re-encoded as UTF-8; its declaration would lie.
    if isinstance(data, str):
        raw = (_XML_DECL.sub("", data, count=1) if data.startswith(("<?", "\ufeff", " ", "\n")) else data).encode()
    else:
        raw = data
    if len(raw) > limits.max_bytes:
        raise UnsafeXml(f"{what} of {len(raw)} bytes exceeds the {limits.max_bytes}-byte cap", reason="too_large")
    if b"<!" in raw and any(marker in raw for marker in _DTD_MARKERS):  # one scan for the common case
        raise UnsafeXml(f"{what} carries a DTD or entity declaration; refused", reason="dtd")
    try:
        root = etree.fromstring(raw, parser=_thread_parser())
    except etree.XMLSyntaxError as exc:
        message = str(exc)
        if "Excessive depth" in message or "Resource limit" in message or "too long" in message:
            raise UnsafeXml(f"{what} exceeds the parser's limits: {message}", reason="limits") from exc
        if "Entity" in message or "entity" in message:
            raise UnsafeXml(f"{what} uses entities; refused: {message}", reason="entity") from exc
        raise MalformedXml(f"{what} is not well-formed XML: {message}", reason="malformed") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.system_url:
        raise UnsafeXml(f"{what} carries a DTD; refused", reason="dtd")
    if _may_be_too_deep(raw, docinfo.encoding, limits.max_depth) and _depth_probe(limits.max_depth)(root):
        raise UnsafeXml(f"{what} nests deeper than {limits.max_depth} elements; refused", reason="depth")
    return root


def zeep_settings() -> Any:
    """zeep's parse settings matching this module: no DTD, no entities, no transitive fetches, strict."""
    from zeep import Settings

    return Settings(
        strict=True,
        raw_response=False,
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
        xml_huge_tree=False,
        xsd_ignore_sequence_order=False,
    )
