"""A fault-injecting HTTP proxy on loopback, in front of a stand-in: the network's bad days, on demand.

Each client connection carries one request (the proxy answers with ``Connection: close``). For every request
the proxy asks its plan for a :class:`Fault` (or none: forward as is):

- ``Latency(s)``: wait, then forward;
- ``Hang()``: accept the request and never answer (until the client gives up);
- ``Drip(chunk, every)``: forward the answer a few bytes at a time;
- ``Reset()``: close the connection with a TCP RST, no answer;
- ``Status(code, retry_after)``: answer 5xx / 429 itself, with ``Retry-After`` when given;
- ``Mutate(fn)``: call ``fn()`` (change the source's data), then forward: records changing between pages.

Plans: :meth:`FaultProxy.inject` queues faults for the next matching requests; :meth:`FaultProxy.policy` sets a
function of the request number (storms, flapping).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Latency:
    seconds: float


@dataclass(frozen=True)
class Hang:
    pass


@dataclass(frozen=True)
class Drip:
    chunk: int = 64
    every: float = 0.05


@dataclass(frozen=True)
class Reset:
    pass


@dataclass(frozen=True)
class Status:
    code: int = 503
    retry_after: float | None = None


@dataclass(frozen=True)
class Mutate:
    change: Callable[[], None] = field(compare=False)


Fault = Latency | Hang | Drip | Reset | Status | Mutate


@dataclass(frozen=True)
class Request:
    number: int
    method: str
    path: str


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self._upstream = (host, int(port or 80))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._queue: deque[tuple[Fault, str | None]] = deque()
        self._policy: Callable[[Request], Fault | None] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._count = 0
        self.seen: list[tuple[Request, str]] = []  # every request and what was done to it
        self._thread = threading.Thread(target=self._serve, name="faultproxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def inject(self, *faults: Fault, path: str | None = None) -> None:
        """Apply ``faults`` to the next requests (whose path contains ``path``), one each, in order."""
        with self._lock:
            self._queue.extend((f, path) for f in faults)

    def policy(self, decide: Callable[[Request], Fault | None] | None) -> None:
        with self._lock:
            self._policy = decide

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._policy = None

    def faults_applied(self, kind: type) -> int:
        return sum(1 for _r, what in self.seen if what == kind.__name__)

    # -- serving ---------------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _decide(self, request: Request) -> Fault | None:
        with self._lock:
            for i, (fault, path) in enumerate(self._queue):
                if path is None or path in request.path:
                    del self._queue[i]
                    return fault
            return self._policy(request) if self._policy else None

    def _handle(self, client: socket.socket) -> None:
        try:
            client.settimeout(30)
            head, body = _read_request(client)
            if head is None:
                return
            method, path = head.split(b" ", 2)[:2]
            with self._lock:
                self._count += 1
                request = Request(self._count, method.decode(), path.decode())
            fault = self._decide(request)
            self.seen.append((request, type(fault).__name__ if fault else "ok"))
            if isinstance(fault, Hang):
                self._stop.wait(60)
                return
            if isinstance(fault, Reset):
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if isinstance(fault, Status):
                extra = f"Retry-After: {fault.retry_after:g}\r\n" if fault.retry_after is not None else ""
                body_out = b'{"error": "injected"}'
                client.sendall(f"HTTP/1.1 {fault.code} Injected\r\nContent-Type: application/json\r\n{extra}"
                               f"Content-Length: {len(body_out)}\r\nConnection: close\r\n\r\n".encode() + body_out)
                return
            if isinstance(fault, Latency):
                time.sleep(fault.seconds)
            if isinstance(fault, Mutate):
                fault.change()
            answer = self._forward(head, body)
            if isinstance(fault, Drip):
                for i in range(0, len(answer), fault.chunk):
                    client.sendall(answer[i:i + fault.chunk])
                    if self._stop.wait(fault.every):
                        return
            else:
                client.sendall(answer)
        except OSError:
            pass  # the client gave up (timeouts, deadlines): that is the point
        finally:
            client.close()

    def _forward(self, head: bytes, body: bytes) -> bytes:
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        with socket.create_connection(self._upstream, timeout=30) as up:
            up.sendall(b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body)
            chunks = []
            while chunk := up.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _read_request(sock: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body
