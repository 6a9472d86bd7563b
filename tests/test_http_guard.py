"""The guarded HTTP call every connector uses: size cap, overall deadline, redirects, error translation."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import respx

from gateway.errors import AuthError, ConfigError, ProtocolError, SourceUnavailable
from gateway.http import HttpLimits, fetch, make_http_client

LIMITS = HttpLimits(connect_timeout=2, read_timeout=2, deadline=1.5, max_bytes=1000)


def _get(client: httpx.Client, url: str, limits: HttpLimits = LIMITS) -> tuple[httpx.Response, bytes]:
    return fetch(client, client.build_request("GET", url), limits=limits, source="test")


def test_body_over_the_cap_is_refused_while_streaming() -> None:
    with respx.mock(assert_all_called=True) as router:
        router.get("http://src.test/big").respond(200, content=b"x" * 5000)
        router.get("http://src.test/declared").respond(200, headers={"Content-Length": "99999"}, content=b"x")
        with make_http_client() as client:
            with pytest.raises(ProtocolError, match="exceeds the 1000-byte cap"):
                _get(client, "http://src.test/big")
            with pytest.raises(ProtocolError, match="99999 bytes exceeds"):
                _get(client, "http://src.test/declared")


def test_status_codes_are_translated_by_next_action() -> None:
    with respx.mock(assert_all_called=True) as router:
        router.get("http://src.test/busy").respond(429, headers={"Retry-After": "7"})
        router.get("http://src.test/down").respond(503)
        router.get("http://src.test/auth").respond(401)
        router.get("http://src.test/gone").respond(404)
        with make_http_client() as client:
            with pytest.raises(SourceUnavailable) as busy:
                _get(client, "http://src.test/busy")
            assert busy.value.retry_after == 7
            with pytest.raises(SourceUnavailable):
                _get(client, "http://src.test/down")
            with pytest.raises(AuthError):
                _get(client, "http://src.test/auth")
            with pytest.raises(ProtocolError):
                _get(client, "http://src.test/gone")


def test_redirects_are_followed_only_to_the_same_host() -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get("http://src.test/a").respond(302, headers={"Location": "/b"})
        router.get("http://src.test/b").respond(200, content=b"ok")
        evil = router.get("http://evil.test/steal").respond(200)
        router.get("http://src.test/away").respond(302, headers={"Location": "http://evil.test/steal"})
        with make_http_client() as client:
            assert _get(client, "http://src.test/a")[1] == b"ok"
            with pytest.raises(ProtocolError, match="refused redirect"):
                _get(client, "http://src.test/away")
        assert evil.call_count == 0  # the other host was never contacted


def test_a_bad_url_is_a_config_error_not_a_retry() -> None:
    with make_http_client() as client, pytest.raises(ConfigError):
        _get(client, "ftp://src.test/x")


@pytest.fixture
def slow_drip() -> Iterator[str]:
    """A real server that sends headers, then one byte every 0.3 s: each read is under the read timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                for _ in range(100):
                    if stop.is_set():
                        break
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        break
                    time.sleep(0.3)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/drip"
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_a_slow_drip_ends_at_the_overall_deadline(slow_drip: str) -> None:
    started = time.monotonic()
    with make_http_client() as client, pytest.raises(SourceUnavailable, match="deadline"):
        _get(client, slow_drip, HttpLimits(connect_timeout=2, read_timeout=2, deadline=1.0, max_bytes=10_000))
    assert time.monotonic() - started < 3
