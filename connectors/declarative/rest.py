"""The declarative REST connector: a YAML file (see :mod:`connectors.declarative.config`) becomes a connector.

Every call goes through :func:`gateway.http.fetch` (deadline, size cap, same-host redirects), then the
envelope check, under the one retry policy. An expired token (HTTP 401 or an envelope auth code) makes the
auth strategy forget it and the call is tried once more before it is an ``AuthError``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import orjson

from connectors._records import key_and_cursor, lower_bound
from connectors.auth import build_auth
from connectors.declarative.config import (
    CursorKeysetPaginator,
    NormalizeConfig,
    RestSourceConfig,
    StreamConfig,
    SubRequest,
)
from connectors.declarative.fieldmap import (
    compile_normalizer,
    date_parser,
    format_date,
    key_template,
    parse_duration,
    path_getter,
)
from connectors.declarative.paginators import build_paginator
from gateway.connector import CheckResult, ConnectorContext, Normalize, NormalizerRecipe, Page, RecordProblem
from gateway.errors import AuthError, GatewayError, ProtocolError, SourceUnavailable
from gateway.http import HttpLimits, fetch
from gateway.types import SourceRecord, WorkItem


class MalformedResponse(SourceUnavailable):
    """The body did not parse; retried (sources do glitch), then quarantined with the body if it persists."""

    def __init__(self, message: str, *, body: bytes, where: str, source: str) -> None:
        super().__init__(message, source=source, where=where)
        self.body = body


class _Stream:
    """A stream's compiled pieces (built once per connector)."""

    def __init__(self, name: str, cfg: StreamConfig, *, id_system: str) -> None:
        self.name, self.cfg = name, cfg
        self.records_at = path_getter(cfg.records)
        self.key_of = path_getter(cfg.key)
        self.normalize = compile_normalizer(cfg.normalize, id_system=id_system)
        cur = cfg.cursor
        self.cursor_of = path_getter(cur.field) if cur else None
        self.parse_cursor = date_parser(cur.format) if cur else None
        self.lookback = parse_duration(cur.lookback) if cur else None
        self.sub_paths = [(sub, key_template(sub.path), path_getter(sub.records)) for sub in cfg.sub_requests]


def stream_normalizer(maps: Mapping[str, NormalizeConfig], id_system: str) -> Normalize:
    """:meth:`RestConnector.normalize` built from the streams' field maps alone, in any process."""
    compiled = {stream: compile_normalizer(cfg, id_system=id_system) for stream, cfg in maps.items()}

    def normalize(record: SourceRecord) -> Sequence[WorkItem]:
        return [compiled[record.stream](record)]

    return normalize


class RestConnector:
    config_model = RestSourceConfig

    def __init__(self, *, name: str, config: Mapping[str, Any], context: ConnectorContext) -> None:
        self.cfg = config if isinstance(config, RestSourceConfig) else RestSourceConfig.model_validate(config)
        self.name = name
        self._ctx = context
        lim = self.cfg.limits
        self._limits = HttpLimits(
            lim.connect_timeout, lim.read_timeout, lim.deadline, lim.max_bytes, lim.max_connections
        )
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._auth = build_auth(self.cfg.auth)
        self._streams = {s: _Stream(s, c, id_system=self.cfg.id_system) for s, c in self.cfg.streams.items()}
        env = self.cfg.envelope
        self._env_status = path_getter(env.status_path) if env else None
        self._env_message = path_getter(env.message_path) if env and env.message_path else None

    # -- plumbing ---------------------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = self._ctx.http_client(
                base_url=self.cfg.base_url,
                limits=self._limits,
                headers=self.cfg.headers,
                **self._auth.client_kwargs(),  # e.g. a TLS context carrying the client certificate
            )
        return self._client

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _send(self, request: httpx.Request, operation: str = "auth") -> tuple[httpx.Response, bytes]:
        started = time.perf_counter()
        status = "error"
        try:
            response, body = fetch(self.client, request, limits=self._limits, source=self.name)
            status = f"{response.status_code // 100}xx"
            return response, body
        except GatewayError:
            status = "failed"
            raise
        finally:
            self._ctx.observe_request(self.name, operation, status, time.perf_counter() - started)

    def _auth_send(self, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, bytes]:
        return self._send(self.client.build_request(method, url, **kwargs), "auth")

    def _decode(self, body: bytes, where: str) -> Any:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedResponse(
                f"response is not valid JSON: {exc}", body=body, where=where, source=self.name
            ) from exc
        if self._env_status is not None and self.cfg.envelope is not None:
            code = str(self._env_status(doc))
            if code not in self.cfg.envelope.success:
                message = self._env_message(doc) if self._env_message else None
                if code in self.cfg.envelope.auth_failure:
                    raise AuthError(
                        f"source refused credentials (code {code}: {message})", source=self.name, where=where
                    )
                raise ProtocolError(f"source reported error code {code}: {message}", source=self.name, where=where)
        return doc

    def _same_origin(self, url: httpx.URL, *, where: str) -> None:
        """Refuse a URL (a next link is the source's data) off the source's scheme, host and port before the
        credentials are applied: the rule ``gateway.http.fetch`` keeps for redirects."""
        base = self.client.base_url
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
            raise ProtocolError(
                f"refused a call to {url.scheme}://{url.host}: not the source's origin "
                f"{base.scheme}://{base.host}", source=self.name, where=where,
            )  # fmt: skip

    def call(self, method: str, path: str, params: Mapping[str, Any] | None = None, *, operation: str) -> Any:
        """One authenticated, enveloped, retried call; returns the decoded JSON document.

        ``operation`` names the call for metrics and logs (a stream or sub-request name, never a record id).
        """

        def attempt() -> Any:
            for renewed in (False, True):
                url = str(params["__url__"]) if params and "__url__" in params else path
                query = {k: v for k, v in (params or {}).items() if k != "__url__"}
                request = self.client.build_request(method, url, params=query or None)  # {} would drop url's query
                self._same_origin(request.url, where=path)
                self._auth.apply(request, self._auth_send)
                try:
                    _response, body = self._send(request, operation)
                    return self._decode(body, f"{method} {path}")
                except AuthError:
                    if renewed:
                        raise
                    self._auth.invalidate()
            raise AssertionError("unreachable")  # pragma: no cover

        return self._ctx.retry.call(f"{self.name}:{operation}", attempt)

    # -- the connector protocol -------------------------------------------------------------------------

    def streams(self) -> Sequence[str]:
        return list(self._streams)

    def check(self) -> CheckResult:
        first = next(iter(self._streams.values()))
        lower = lower_bound(first, None)
        params = self._render_params(first, lower)
        params.update(build_paginator(first.cfg.paginator, **self._keyset_args(first, lower)).first())
        doc = self.call(first.cfg.method, first.cfg.path, params, operation=first.name)
        records = first.records_at(doc)
        if not isinstance(records, list):
            raise ProtocolError(f"records path {first.cfg.records!r} is not a list", source=self.name)
        return CheckResult(
            True, f"authenticated; {first.name} answered with {len(records)} records", streams=self.streams()
        )

    def _render_params(self, stream: _Stream, lower: datetime | None) -> dict[str, Any]:
        params: dict[str, Any] = dict(stream.cfg.params)
        if stream.cfg.cursor and lower is not None:
            params[stream.cfg.cursor.param] = format_date(lower, stream.cfg.cursor.format)
        return params

    def _keyset_args(self, stream: _Stream, lower: datetime | None) -> dict[str, Any]:
        if not isinstance(stream.cfg.paginator, CursorKeysetPaginator):
            return {}
        if stream.cfg.cursor is None or stream.cursor_of is None or stream.parse_cursor is None:
            raise ProtocolError("cursor_keyset paging needs a cursor", source=self.name, stream=stream.name)
        cursor_of, parse, fmt = stream.cursor_of, stream.parse_cursor, stream.cfg.cursor.format
        return {
            "cursor_param": stream.cfg.cursor.param,
            "cursor_of": lambda r: parse(cursor_of(r)),
            "render": lambda v: format_date(v, fmt),
            "key_of": stream.key_of,
            "lower": lower,
        }

    def read(self, stream: str, cursor: str | None) -> Iterator[Page]:
        s = self._streams[stream]
        lower = lower_bound(s, cursor)
        base = self._render_params(s, lower)
        keyset = isinstance(s.cfg.paginator, CursorKeysetPaginator)
        if keyset:
            base.pop(s.cfg.cursor.param if s.cfg.cursor else "", None)
        paginator = build_paginator(s.cfg.paginator, **self._keyset_args(s, lower))
        params: dict[str, Any] | None = paginator.first()
        high: datetime | None = None
        while params is not None:
            doc = self.call(s.cfg.method, s.cfg.path, {**base, **params}, operation=stream)
            items = s.records_at(doc)
            if not isinstance(items, list):
                raise ProtocolError(
                    f"records path {s.cfg.records!r} is not a list", source=self.name, stream=stream, where=s.cfg.path
                )
            fresh = paginator.fresh(items)  # before next(): it moves the keyset bound to this page's end
            next_params = paginator.next(doc, items)
            records, problems, high = self._records(s, fresh, high)
            sorted_source = s.cfg.cursor is not None and s.cfg.cursor.sorted
            last_page = next_params is None
            checkpoint = high.isoformat() if high is not None and (sorted_source or last_page) else None
            yield Page(records=records, checkpoint=checkpoint, problems=problems)
            params = next_params

    def _records(
        self, s: _Stream, items: list[Any], high: datetime | None
    ) -> tuple[list[SourceRecord], list[RecordProblem], datetime | None]:
        records: list[SourceRecord] = []
        problems: list[RecordProblem] = []
        good: list[tuple[str, Mapping[str, Any], datetime | None]] = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                problems.append(RecordProblem(key=f"#{index}", payload=item, reason="record is not a JSON object"))
                continue
            found = key_and_cursor(item, index=index, key_of=s.key_of, key_name=s.cfg.key, cursor_of=s.cursor_of,
                                   parse_cursor=s.parse_cursor)  # fmt: skip
            if isinstance(found, RecordProblem):
                problems.append(found)
                continue
            key, moment = found
            if moment is not None and (high is None or moment > high):
                high = moment
            good.append((key, item, moment))
        payloads = self._attach_sub_requests(s, [g[1] for g in good], problems, [g[0] for g in good])
        for (key, _item, moment), payload in zip(good, payloads, strict=True):
            if payload is not None:
                records.append(SourceRecord(self.name, s.name, key, payload, moment.isoformat() if moment else None))
        return records, problems, high

    def _attach_sub_requests(
        self, s: _Stream, items: list[Mapping[str, Any]], problems: list[RecordProblem], keys: list[str]
    ) -> list[Mapping[str, Any] | None]:
        out: list[Mapping[str, Any] | None] = list(items)
        for sub, path_of, records_at in s.sub_paths:
            todo = [
                i for i, item in enumerate(out) if item is not None and not (sub.skip_if_present and sub.name in item)
            ]
            if not todo:
                continue
            results = self._run_sub(sub, [path_of(out[i]) for i in todo if out[i] is not None])  # type: ignore[arg-type]
            for i, result in zip(todo, results, strict=True):
                current = out[i]
                assert current is not None
                if isinstance(result, GatewayError):
                    problems.append(
                        RecordProblem(
                            key=keys[i],
                            payload=current,
                            reason=f"sub-request {sub.name} failed: {result}",
                            error_kind=type(result).__name__,
                        )
                    )
                    out[i] = None
                else:
                    out[i] = {**current, sub.name: records_at(result)}
        return out

    def _run_sub(self, sub: SubRequest, paths: list[str]) -> list[Any]:
        def one(path: str) -> Any:
            try:
                return self.call("GET", path, operation=sub.name)
            except ProtocolError as exc:  # this record's sub-resource is bad; the others go on
                return exc

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=sub.concurrency, thread_name_prefix=f"{self.name}-sub")
        return list(self._pool.map(one, paths))

    def normalize(self, record: SourceRecord) -> Sequence[WorkItem]:
        return [self._streams[record.stream].normalize(record)]

    def normalizer_recipe(self) -> NormalizerRecipe:
        maps = {name: cfg.normalize for name, cfg in self.cfg.streams.items()}  # the field maps, nothing else
        return NormalizerRecipe(stream_normalizer, (maps, self.cfg.id_system), json_payloads=True)  # from orjson
