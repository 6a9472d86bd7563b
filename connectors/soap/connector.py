"""The declarative SOAP connector: a YAML file (see :mod:`connectors.soap.config`) becomes a connector.

zeep reads the WSDL (once per process, through the injected httpx client, see :mod:`connectors.soap._wsdl`)
and builds each request envelope, so arguments are typed and namespaced as the WSDL says; credentials go into
the body, a SOAP header or a WS-Security UsernameToken. Every call is sent with :func:`gateway.http.fetch`
(overall deadline, size cap, no cross-host redirects) under the one retry policy. The response is parsed by
the hardened parser and records are picked out with lxml (:mod:`connectors.soap._envelope`): zeep's object
building is skipped on the hot path (``decode: zeep`` turns it back on for odd services).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
from lxml import etree

from connectors._records import key_and_cursor, lower_bound
from connectors.auth import apply_ws_security, soap_body_values
from connectors.declarative.config import CursorKeysetPaginator, NormalizeConfig
from connectors.declarative.fieldmap import (
    compile_normalizer,
    date_parser,
    format_date,
    key_template,
    parse_duration,
    path_getter,
)
from connectors.declarative.paginators import build_paginator
from connectors.edxml.normalize import EdxmlNormalizeConfig, compile_edxml_normalizer
from connectors.soap._envelope import (
    HostileResponse,
    PayloadError,
    decode_item,
    fault_error,
    find_fault,
    read_envelope,
    record_selector,
    wrapper_of,
)
from connectors.soap._joins import attach_joins
from connectors.soap._wsdl import load_wsdl
from connectors.soap.config import (
    HeaderCredentials,
    PayloadConfig,
    SoapSourceConfig,
    SoapStreamConfig,
    WsSecurityCredentials,
)
from connectors.xmlsafe import UnsafeXml, XmlLimits
from gateway.connector import CheckResult, ConnectorContext, Normalize, NormalizerRecipe, Page, RecordProblem
from gateway.errors import ConfigError, GatewayError
from gateway.http import HttpLimits, fetch, raise_for_status
from gateway.types import SourceRecord, WorkItem

__all__ = ["SoapConnector"]


class _Stream:
    """A stream's compiled pieces (built once per connector)."""

    def __init__(self, name: str, cfg: SoapStreamConfig, *, id_system: str) -> None:
        self.name, self.cfg = name, cfg
        self.key_of: Callable[[Mapping[str, Any]], Any] = (
            _lenient(key_template(cfg.key)) if "{" in cfg.key else path_getter(cfg.key)
        )
        self.normalize = _compile_one((cfg.normalize, cfg.edxml), id_system)
        cur = cfg.cursor
        self.cursor_of = path_getter(cur.field) if cur else None
        self.parse_cursor = date_parser(cur.format) if cur else None
        self.lookback = parse_duration(cur.lookback) if cur else None


_StreamMaps = tuple[NormalizeConfig | None, EdxmlNormalizeConfig | None]  # a stream has exactly one of them


def _compile_one(maps: _StreamMaps, id_system: str) -> Callable[[SourceRecord], WorkItem]:
    field_map, edxml = maps
    if edxml is not None:
        return compile_edxml_normalizer(edxml, id_system=id_system)
    assert field_map is not None  # SoapStreamConfig allows exactly one of the two
    return compile_normalizer(field_map, id_system=id_system)


def stream_normalizer(streams: Mapping[str, _StreamMaps], id_system: str) -> Normalize:
    """:meth:`SoapConnector.normalize` built from the streams' field maps alone, in any process."""
    compiled = {name: _compile_one(maps, id_system) for name, maps in streams.items()}

    def normalize(record: SourceRecord) -> Sequence[WorkItem]:
        return [compiled[record.stream](record)]

    return normalize


def _lenient(render: Callable[[Mapping[str, Any]], str]) -> Callable[[Mapping[str, Any]], str | None]:
    def key(record: Mapping[str, Any]) -> str | None:
        try:
            return render(record)
        except GatewayError:
            return None

    return key


class SoapConnector:
    def __init__(self, *, name: str, config: Mapping[str, Any], context: ConnectorContext) -> None:
        self.cfg = config if isinstance(config, SoapSourceConfig) else SoapSourceConfig.model_validate(config)
        self.name = name
        self._ctx = context
        lim = self.cfg.limits
        self._limits = HttpLimits(
            lim.connect_timeout, lim.read_timeout, lim.deadline, lim.max_bytes, lim.max_connections
        )
        self._xml_limits = XmlLimits(max_bytes=lim.max_bytes, max_depth=lim.max_depth)
        self._streams = {s: _Stream(s, c, id_system=self.cfg.id_system) for s, c in self.cfg.streams.items()}
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._zeep: Any = None
        self._binding: Any = None
        self._address = ""

    # -- plumbing ---------------------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = self._ctx.http_client(limits=self._limits)
        return self._client

    def _join_pool(self, stream: _Stream) -> ThreadPoolExecutor | None:
        """The pool that pipelines a page's join calls (``join_concurrency`` > 1), built on first use."""
        wanted = stream.cfg.join_concurrency
        if wanted <= 1:
            return None
        if self._pool is None:
            size = max(s.cfg.join_concurrency for s in self._streams.values())
            self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"{self.name}-join")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _wsdl_location(self) -> str:
        wsdl = self.cfg.wsdl
        if wsdl.startswith(("http://", "https://")):
            return wsdl
        path = self._ctx.config_dir / wsdl.removeprefix("file://")
        return str(path.resolve())

    def _load(self) -> None:
        if self._binding is not None:
            return
        zc = load_wsdl(
            self._wsdl_location(),
            client=self.client,
            http_limits=self._limits,
            xml_limits=self._xml_limits,
            source=self.name,
        )
        try:
            proxy = zc.bind(self.cfg.service, self.cfg.port) if self.cfg.service else zc.service
        except (ValueError, LookupError) as exc:
            raise ConfigError(
                f"WSDL has no service/port {self.cfg.service}/{self.cfg.port}: {exc}", source=self.name
            ) from exc
        self._zeep, self._binding = zc, proxy._binding
        self._address = self.cfg.address or proxy._binding_options["address"]

    def _operation(self, operation: str) -> Any:
        self._load()
        try:
            return self._binding.get(operation)
        except ValueError as exc:
            known = ", ".join(sorted(self._binding._operations))
            raise ConfigError(f"the WSDL has no operation {operation!r}; it has: {known}", source=self.name) from exc

    def _request(self, operation: str, args: Mapping[str, Any]) -> tuple[bytes, dict[str, str], str | None]:
        op = self._operation(operation)
        auth = self.cfg.auth
        values = {**args, **soap_body_values(auth)}
        try:
            envelope, headers = self._binding._create(operation, (), values, client=self._zeep)
        except (TypeError, ValueError, LookupError) as exc:
            raise ConfigError(
                f"cannot build {operation} with arguments {sorted(values)}: {exc}", source=self.name
            ) from exc
        if isinstance(auth, HeaderCredentials):
            _add_header(envelope, auth)
        elif isinstance(auth, WsSecurityCredentials):
            envelope, headers = apply_ws_security(envelope, headers, auth)
        body = etree.tostring(envelope, encoding="utf-8", xml_declaration=True)
        expected = getattr(getattr(op.output, "body", None), "qname", None)
        return body, {str(k): str(v) for k, v in headers.items()}, str(expected) if expected is not None else None

    def call(self, operation: str, args: Mapping[str, Any], *, name: str) -> Any:
        """One SOAP call, retried by the policy; returns the response wrapper element (or zeep's object).

        ``name`` labels metrics and logs (a stream or join name, never a record id).
        """
        body, headers, expected = self._request(operation, args)
        where = f"{operation} {self._address}"

        def attempt() -> Any:
            started = time.perf_counter()
            outcome = "failed"
            try:
                request = httpx.Request("POST", self._address, content=body, headers=headers)
                response, raw = fetch(self.client, request, limits=self._limits, source=self.name, check_status=False)
                outcome = f"{response.status_code // 100}xx"
                return self._reply(operation, response, raw, expected, where)
            finally:
                self._ctx.observe_request(self.name, name, outcome, time.perf_counter() - started)

        return self._ctx.retry.call(f"{self.name}:{name}", attempt)

    def _reply(self, operation: str, response: httpx.Response, raw: bytes, expected: str | None, where: str) -> Any:
        status = response.status_code
        if status in (401, 403) or (not raw.strip() and status != 200):
            raise_for_status(response, source=self.name)
        body = read_envelope(raw, status=status, limits=self._xml_limits, source=self.name, where=where)
        fault = find_fault(body)
        if fault is not None:
            raise fault_error(fault, self.cfg.faults, source=self.name, where=where)
        if status != 200:
            raise_for_status(response, source=self.name)
        wrapper = wrapper_of(body, expected, raw=raw, source=self.name, where=where)
        if self.cfg.decode == "zeep":
            from zeep.helpers import serialize_object

            try:
                result = self._operation(operation).process_reply(body.getparent())
            except Exception as exc:  # zeep raises many shapes of error for a reply that breaks the contract
                raise HostileResponse(
                    f"reply does not fit the WSDL: {exc}", body=raw, source=self.name, where=where
                ) from exc
            return serialize_object(result, dict)  # type: ignore[no-untyped-call]
        return wrapper

    def items(
        self, reply: Any, records: str, payload: PayloadConfig
    ) -> tuple[list[dict[str, Any]], list[RecordProblem]]:
        """Decode the records of one reply; an undecodable one is a problem, hostile content fails the stream."""
        found = _zeep_records(reply, records) if self.cfg.decode == "zeep" else record_selector(records)(reply)
        out: list[dict[str, Any]] = []
        problems: list[RecordProblem] = []
        for index, el in enumerate(found):
            if self.cfg.decode == "zeep":
                out.append(el if isinstance(el, dict) else {"value": el})
                continue
            try:
                out.append(decode_item(el, payload, self._xml_limits))
            except UnsafeXml as exc:
                raw = etree.tostring(el)
                raise HostileResponse(f"record #{index}: {exc}", body=raw, source=self.name, where=records) from exc
            except PayloadError as exc:
                text = el.text if el.text and len(el) == 0 else etree.tostring(el, encoding="unicode")
                problems.append(RecordProblem(key=f"#{index}", payload={"raw": text[:100_000]}, reason=str(exc)))
        return out, problems

    # -- the connector protocol -------------------------------------------------------------------------

    def streams(self) -> Sequence[str]:
        return list(self._streams)

    def check(self) -> CheckResult:
        first = next(iter(self._streams.values()))
        lower = lower_bound(first, None)
        paginator = build_paginator(first.cfg.paginator, **self._keyset_args(first, lower))
        args = {**self._base_args(first, lower), **paginator.first()}
        reply = self.call(first.cfg.operation, args, name=first.name)
        found, _problems = self.items(reply, first.cfg.records, first.cfg.payload)
        return CheckResult(
            True, f"WSDL loaded; {first.name} answered with {len(found)} records", streams=self.streams()
        )

    def _base_args(self, stream: _Stream, lower: datetime | None) -> dict[str, Any]:
        args = dict(stream.cfg.args)
        cur = stream.cfg.cursor
        if cur is not None and lower is not None and not isinstance(stream.cfg.paginator, CursorKeysetPaginator):
            args[cur.param] = format_date(lower, cur.format)
        return args

    def _keyset_args(self, stream: _Stream, lower: datetime | None) -> dict[str, Any]:
        if not isinstance(stream.cfg.paginator, CursorKeysetPaginator):
            return {}
        cur, cursor_of, parse = stream.cfg.cursor, stream.cursor_of, stream.parse_cursor
        if cur is None or cursor_of is None or parse is None:
            raise ConfigError("cursor_keyset paging needs a cursor", source=self.name, stream=stream.name)
        return {
            "cursor_param": cur.param,
            "cursor_of": lambda r: parse(cursor_of(r)),
            "render": lambda v: format_date(v, cur.format),
            "key_of": stream.key_of,
            "lower": lower,
        }

    def read(self, stream: str, cursor: str | None) -> Iterator[Page]:
        s = self._streams[stream]
        lower = lower_bound(s, cursor)
        base = self._base_args(s, lower)
        paginator = build_paginator(s.cfg.paginator, **self._keyset_args(s, lower))
        params: dict[str, Any] | None = paginator.first()
        high: datetime | None = None
        sorted_source = s.cfg.cursor is not None and s.cfg.cursor.sorted
        while params is not None:
            reply = self.call(s.cfg.operation, {**base, **params}, name=stream)
            found, problems = self.items(reply, s.cfg.records, s.cfg.payload)
            fresh = paginator.fresh(found)  # before next(): next() moves the keyset bound to this page's end
            next_params = paginator.next({}, found)
            records, high = self._records(s, fresh, problems, high)
            if s.cfg.joins and records:
                records = attach_joins(self, s.cfg.joins, records, problems, pool=self._join_pool(s))
            checkpoint = high.isoformat() if high is not None and (sorted_source or next_params is None) else None
            yield Page(records=records, checkpoint=checkpoint, problems=problems)
            params = next_params

    def _records(
        self, s: _Stream, items: Sequence[Mapping[str, Any]], problems: list[RecordProblem], high: datetime | None
    ) -> tuple[list[SourceRecord], datetime | None]:
        records: list[SourceRecord] = []
        for index, item in enumerate(items):
            found = key_and_cursor(item, index=index, key_of=s.key_of, key_name=s.cfg.key, cursor_of=s.cursor_of,
                                   parse_cursor=s.parse_cursor)  # fmt: skip
            if isinstance(found, RecordProblem):
                problems.append(found)
                continue
            key, moment = found
            if moment is not None and (high is None or moment > high):
                high = moment
            records.append(SourceRecord(self.name, s.name, key, item, moment.isoformat() if moment else None))
        return records, high

    def normalize(self, record: SourceRecord) -> Sequence[WorkItem]:
        return [self._streams[record.stream].normalize(record)]

    def normalizer_recipe(self) -> NormalizerRecipe:
        maps = {name: (cfg.normalize, cfg.edxml) for name, cfg in self.cfg.streams.items()}  # nothing else
        return NormalizerRecipe(stream_normalizer, (maps, self.cfg.id_system))


def _zeep_records(result: Any, path: str) -> list[Any]:
    value = path_getter(path)(result) if path not in ("", ".") else result
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _add_header(envelope: Any, auth: HeaderCredentials) -> None:
    soap_ns = etree.QName(envelope).namespace
    header = envelope.find(f"{{{soap_ns}}}Header")
    if header is None:
        header = etree.Element(f"{{{soap_ns}}}Header")
        envelope.insert(0, header)
    holder = etree.SubElement(header, f"{{{auth.namespace}}}{auth.element}")
    for field, value in auth.fields.items():
        etree.SubElement(holder, f"{{{auth.namespace}}}{field}").text = value
    for field, secret in auth.secret_fields.items():
        etree.SubElement(holder, f"{{{auth.namespace}}}{field}").text = secret.get_secret_value()
