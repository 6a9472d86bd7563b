"""The one HTTP client factory and the guarded ``fetch`` every connector call goes through.

- timeouts on connect/read/write/pool, plus an **overall deadline per call**: every socket operation of a
  ``fetch`` waits at most until the call's deadline (:class:`_DeadlineBackend`), so a source that drips its
  headers or its body, each byte within the read timeout, still ends at the deadline;
- a **response size cap**, enforced while streaming, before the body is held in memory;
- **no cross-host redirects**: the client never follows redirects itself; ``fetch`` follows at most three,
  same scheme, host and port, and only for GET;
- connection limits; and httpx errors translated into the gateway's tree (``SourceUnavailable``,
  ``AuthError``, ``ProtocolError``) right here, so httpx never reaches the sync engine.
"""

from __future__ import annotations

import email.utils
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx
from httpx._utils import get_environment_proxies  # what httpx.Client reads for a transport it builds

from gateway.errors import AuthError, ConfigError, ProtocolError, SourceUnavailable


@dataclass(frozen=True)
class HttpLimits:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    deadline: float = 60.0
    max_bytes: int = 32 * 1024 * 1024
    max_connections: int = 10


_DEADLINE: ContextVar[float | None] = ContextVar("kpigw_http_deadline", default=None)
"""The ``time.monotonic()`` by which the current :func:`fetch` must end; None outside one."""


def _until_deadline(timeout: float | None, expired: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` shortened to what is left of the current call's deadline; ``expired`` once none is left."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the call's overall deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake waits at most until the call's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _until_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _until_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:  # fmt: skip
        timeout = _until_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, with the deadline of the current :func:`fetch` applied to every wait.

    httpx's timeouts bound each socket operation, not the call: a source that sends a byte of its headers
    within every read timeout held a call for as long as h11 takes header bytes (64 KiB, one per read timeout),
    and ``fetch`` could check its deadline only between body chunks. The deadline is a context variable that
    ``fetch`` sets, so calls outside one (and other threads) keep their plain timeouts; the cost is a clock
    read per socket operation."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:  # fmt: skip
        timeout = _until_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:  # fmt: skip
        timeout = _until_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport on :class:`_DeadlineBackend`, direct or through a ``proxy``.

    httpx takes no network backend, so the pool httpx builds (a direct pool, or an HTTP or SOCKS proxy's, with
    every argument httpx gives it) is handed this one before it opens a connection: all of them open their
    connections through ``_network_backend``. Rebuilding the pool here instead dropped what httpx adds, the
    proxy first of all."""

    def __init__(self, *, verify: Any, cert: Any, limits: httpx.Limits, proxy: httpx.Proxy | None = None) -> None:
        super().__init__(verify=verify, cert=cert, limits=limits, proxy=proxy)
        self._pool._network_backend = _DeadlineBackend()


def make_http_client(
    *,
    base_url: str = "",
    limits: HttpLimits | None = None,
    headers: dict[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
    verify: Any = True,
    cert: Any = None,
) -> httpx.Client:
    """A client for one source. ``transport``: a test's or the runtime's own (a mock, a fault proxy); the
    default sends over :class:`_DeadlineTransport`, whose socket waits see :func:`fetch`'s deadline.

    httpx honours the environment's proxies (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) only
    for a transport it builds itself, so the default one mounts them here, on deadline transports too, as httpx
    would: a source reachable only through the agency's proxy is reached through it."""
    limits = limits or HttpLimits()
    pool = httpx.Limits(max_connections=limits.max_connections, max_keepalive_connections=limits.max_connections)
    mounts: dict[str, httpx.BaseTransport | None] | None = None
    if transport is None:
        transport = _DeadlineTransport(verify=verify, cert=cert, limits=pool)
        mounts = {}
        for pattern, url in get_environment_proxies().items():  # None: a NO_PROXY host, called directly
            proxy = None if url is None else httpx.Proxy(url)
            mounts[pattern] = None if proxy is None else _DeadlineTransport(verify=verify, cert=cert, limits=pool,
                                                                            proxy=proxy)  # fmt: skip
    return httpx.Client(
        base_url=base_url,
        headers={"User-Agent": "kpi-gateway/0.1", **(headers or {})},
        timeout=httpx.Timeout(limits.read_timeout, connect=limits.connect_timeout),
        limits=pool,
        follow_redirects=False,
        transport=transport,
        mounts=mounts,
        verify=verify,
        cert=cert,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def fetch(
    client: httpx.Client,
    request: httpx.Request,
    *,
    limits: HttpLimits,
    source: str | None = None,
    check_status: bool = True,
) -> tuple[httpx.Response, bytes]:
    """Send ``request`` and read the whole body within the deadline and the size cap."""
    started = time.monotonic()
    within = _DEADLINE.set(started + limits.deadline)
    try:
        for _hop in range(4):
            try:
                response = client.send(request, stream=True)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise ConfigError(f"bad source URL {_without_query(request.url)}: {exc}", source=source) from exc
            except httpx.TimeoutException as exc:
                raise SourceUnavailable(f"timed out talking to {request.url.host}: {_timeout(exc, started, limits)}",
                                        source=source) from exc  # fmt: skip
            except httpx.TransportError as exc:
                raise SourceUnavailable(f"cannot reach {request.url.host}: {exc!r}", source=source) from exc
            try:
                if response.is_redirect:
                    request = _same_host_redirect(request, response, source)
                    continue
                body = _read_capped(response, started, limits, source)
            finally:
                response.close()
            if check_status:
                raise_for_status(response, source=source)
            return response, body
        raise ProtocolError("too many redirects", source=source, where=_where(request))
    finally:
        _DEADLINE.reset(within)


def _timeout(exc: httpx.TimeoutException, started: float, limits: HttpLimits) -> str:
    if time.monotonic() - started >= limits.deadline:
        return f"the call exceeded its {limits.deadline:g}s deadline"
    return repr(exc)


def _where(request: httpx.Request) -> str:
    """Where a call went, for errors (stored in the run, logged, served): the method and path, never the query
    string, which may carry a source's token (``params: {token: ${TOKEN}}``)."""
    return f"{request.method} {request.url.path}"


def _without_query(url: httpx.URL) -> httpx.URL:
    return url.copy_with(query=None, fragment=None)


def _same_host_redirect(request: httpx.Request, response: httpx.Response, source: str | None) -> httpx.Request:
    target = request.url.join(response.headers.get("Location", ""))
    same = (target.scheme, target.host, target.port) == (request.url.scheme, request.url.host, request.url.port)
    if not same or request.method != "GET":
        raise ProtocolError(
            f"refused redirect from {request.url.host} to {target.host} ({request.method})",
            source=source,
            where=_where(request),
        )
    return httpx.Request("GET", target, headers=request.headers)


def _read_capped(response: httpx.Response, started: float, limits: HttpLimits, source: str | None) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise ProtocolError(f"response of {declared} bytes exceeds the {limits.max_bytes}-byte cap", source=source)
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limits.max_bytes:
                raise ProtocolError(f"response exceeds the {limits.max_bytes}-byte cap", source=source)
            if time.monotonic() - started > limits.deadline:
                raise SourceUnavailable(f"call exceeded its {limits.deadline:.0f}s deadline", source=source)
            chunks.append(chunk)
    except httpx.TimeoutException as exc:
        raise SourceUnavailable(f"read timed out: {_timeout(exc, started, limits)}", source=source) from exc
    except httpx.TransportError as exc:
        raise SourceUnavailable(f"connection broke mid-response: {exc!r}", source=source) from exc
    return b"".join(chunks)


def raise_for_status(response: httpx.Response, *, source: str | None) -> None:
    status = response.status_code
    where = f"{response.request.method} {response.request.url.path}"
    if status == 429 or status >= 500:
        raise SourceUnavailable(f"HTTP {status}", source=source, where=where, retry_after=_retry_after(response))
    if status in (401, 403):
        raise AuthError(f"HTTP {status}: credentials refused", source=source, where=where)
    if status >= 400:
        raise ProtocolError(f"HTTP {status}", source=source, where=where)
