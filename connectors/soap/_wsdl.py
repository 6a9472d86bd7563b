"""WSDL loading: through the injected httpx client, hardened, same origin only, once per process.

zeep reads a WSDL and its imports through a transport; :class:`GuardedTransport` is that transport, built on
the connector's httpx client and :func:`gateway.http.fetch` (deadline, size cap, same-host redirects). It
loads only from the WSDL's own origin: the same scheme, host and port for a URL, the WSDL's own directory for
a file; anything else (a hostile ``xsd:import`` of another host or of ``/etc/passwd``) is refused before a
connection or an ``open`` happens. Each document is checked by :func:`connectors.xmlsafe.parse_xml` before
zeep sees it, and zeep itself runs with :func:`connectors.xmlsafe.zeep_settings`.

The parsed WSDL (a ``zeep.Client`` used only to build envelopes, never to send) is cached per location for
the life of the process: :func:`load_wsdl` is called on a connector's first use, never at import.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from connectors.xmlsafe import XmlError, XmlLimits, parse_xml, zeep_settings
from gateway.errors import ConfigError, GatewayError, ProtocolError
from gateway.http import HttpLimits, fetch

_CACHE: dict[str, Any] = {}
_LOCK = threading.Lock()


def _zeep_transport_base() -> type:
    from zeep.transports import Transport

    return Transport


class _Refusal(ProtocolError):
    pass


def _make_transport(
    client: httpx.Client, location: str, http_limits: HttpLimits, xml_limits: XmlLimits, source: str
) -> Any:
    base = _zeep_transport_base()

    class GuardedTransport(base):  # type: ignore[misc, valid-type]
        """A zeep transport that only loads documents of the WSDL's origin; operations never use it."""

        def __init__(self) -> None:  # no requests.Session: httpx does the I/O
            self.cache = None
            self.load_timeout = http_limits.deadline
            self.operation_timeout = http_limits.deadline
            self._close_session = False
            self.session = None
            self.sealed = False
            self.loaded: list[str] = []

        def load(self, url: str) -> bytes:
            if self.sealed:
                raise _Refusal(f"WSDL already loaded; refusing a late fetch of {url}", source=source)
            content = _guarded_load(client, location, url, http_limits, source)
            try:
                parse_xml(content, limits=xml_limits, what=f"WSDL document {url}")
            except XmlError as exc:
                raise _Refusal(f"refused WSDL document {url}: {exc}", source=source) from exc
            self.loaded.append(url)
            return content

        def get(self, address: str, params: Any, headers: Any) -> Any:
            raise _Refusal("operations are not sent through zeep's transport", source=source)

        def post(self, address: str, message: Any, headers: Any) -> Any:
            raise _Refusal("operations are not sent through zeep's transport", source=source)

    return GuardedTransport()


def _guarded_load(client: httpx.Client, location: str, url: str, limits: HttpLimits, source: str) -> bytes:
    origin = urlsplit(location)
    if origin.scheme in ("http", "https"):
        target = urlsplit(urljoin(location, url))
        if (target.scheme, target.hostname, target.port) != (origin.scheme, origin.hostname, origin.port):
            raise _Refusal(f"WSDL import from another origin refused: {url}", source=source, where=location)
        _response, body = fetch(client, httpx.Request("GET", urljoin(location, url)), limits=limits, source=source)
        return body
    root = Path(location).resolve().parent
    path = Path(url.removeprefix("file://")).resolve()
    if urlsplit(url).scheme not in ("", "file") or not path.is_relative_to(root):
        raise _Refusal(f"WSDL import outside {root} refused: {url}", source=source, where=location)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read WSDL file {path}: {exc.strerror}", source=source) from exc
    if len(data) > limits.max_bytes:
        raise _Refusal(f"WSDL file {path} exceeds the {limits.max_bytes}-byte cap", source=source)
    return data


def load_wsdl(
    location: str, *, client: httpx.Client, http_limits: HttpLimits, xml_limits: XmlLimits, source: str
) -> Any:
    """The ``zeep.Client`` for ``location``, loaded on first use and cached for the process."""
    with _LOCK:
        cached = _CACHE.get(location)
        if cached is not None:
            return cached
        import zeep
        import zeep.exceptions

        transport = _make_transport(client, location, http_limits, xml_limits, source)
        try:
            zc = zeep.Client(location, transport=transport, settings=zeep_settings())  # type: ignore[no-untyped-call]
        except GatewayError:
            raise
        except (zeep.exceptions.Error, ValueError, LookupError, OSError) as exc:
            # DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden, XMLSyntaxError, lookup errors
            raise ProtocolError(f"cannot load WSDL {location}: {type(exc).__name__}: {exc}", source=source) from exc
        transport.sealed = True
        _CACHE[location] = zc
        return zc


def clear_wsdl_cache() -> None:
    """Forget every loaded WSDL (tests; a deliberate reload after the source changed its contract)."""
    with _LOCK:
        _CACHE.clear()
