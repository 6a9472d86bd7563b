"""Review of session 6's changes (the deadline transport, the run crash record, the read retry, the VXP
refusals): each test failed on the code before its fix.

The sources and proxies here are small real servers on loopback, never mocks.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.errors import SourceUnavailable
from gateway.http import HttpLimits, fetch, make_http_client

_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
              "no_proxy")  # fmt: skip


class _Proxy:
    """A forward proxy on loopback that answers every request itself, after ``delay_per_byte`` per byte of
    its response (0: at once), and keeps the request lines it was sent."""

    def __init__(self, delay_per_byte: float = 0.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.lines: list[bytes] = []
        self._delay = delay_per_byte
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # closed at the end of the test
            while True:
                threading.Thread(target=self._answer, args=(self.listener.accept()[0],), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.lines.append(conn.recv(65536).split(b"\r\n", 1)[0])
            answer = b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{"via":"proxy"}'
            if not self._delay:
                conn.sendall(answer)
                return
            for byte in answer:
                conn.sendall(bytes([byte]))
                time.sleep(self._delay)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def env_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Proxy]:
    for name in _PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    proxy = _Proxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    yield proxy
    proxy.close()


# -- 1. the deadline transport honours the environment's proxy, as httpx's own transport did ---------------------


def test_a_source_behind_the_environments_proxy_is_reached_through_it(env_proxy: _Proxy) -> None:
    """httpx reads HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY only when the client builds its own
    transport; the client now gets the deadline transport, so a gateway whose sources are reachable only
    through the agency's proxy went straight to them (here: a name only the proxy resolves, 'cannot reach')."""
    limits = HttpLimits(connect_timeout=2, read_timeout=2, deadline=3)
    with make_http_client(limits=limits) as client:
        response, body = fetch(client, client.build_request("GET", "http://legacy-source.invalid/items"),
                               limits=limits)  # fmt: skip
    assert response.status_code == 200 and body == b'{"via":"proxy"}'
    assert env_proxy.lines == [b"GET http://legacy-source.invalid/items HTTP/1.1"]


def test_a_call_through_the_environments_proxy_keeps_the_overall_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxied call still ends at the deadline while the proxy drips its answer within every read timeout."""
    for name in _PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    proxy = _Proxy(delay_per_byte=0.04)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    limits = HttpLimits(connect_timeout=1.0, read_timeout=0.5, deadline=0.3)
    started = time.monotonic()
    try:
        with make_http_client(limits=limits) as client:
            request = client.build_request("GET", "http://legacy-source.invalid/items")
            with pytest.raises(SourceUnavailable, match=r"exceeded its 0\.3s deadline"):
                fetch(client, request, limits=limits)
        assert time.monotonic() - started < 1.5
    finally:
        proxy.close()


def test_no_proxy_still_sends_a_source_directly(env_proxy: _Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_PROXY is honoured as httpx honours it: the named host is called directly, not through the proxy."""
    monkeypatch.setenv("NO_PROXY", "legacy-source.invalid")
    limits = HttpLimits(connect_timeout=2, read_timeout=2, deadline=3)
    with make_http_client(limits=limits) as client, pytest.raises(SourceUnavailable, match="cannot reach"):
        fetch(client, client.build_request("GET", "http://legacy-source.invalid/items"), limits=limits)
    assert env_proxy.lines == []
