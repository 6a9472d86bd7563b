"""Run any ASGI app on a real loopback socket in a daemon thread (for stand-ins, tests, demos, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


class RunningServer:
    """A uvicorn server running in a background thread; ``stop()`` (or leaving the ``with``) shuts it down."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, sock: socket.socket, host: str) -> None:
        self._server = server
        self._thread = thread
        self._sock = sock
        self.host = host
        self.port: int = sock.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():  # open keep-alive connections: stop waiting for them
            self._server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningServer({self.url})"


def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, startup_timeout: float = 10.0
) -> RunningServer:
    """Bind ``host:port`` (0 = any free port) first, then serve ``app`` on it; return once it accepts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it: no Nagle stall
        sock.bind((host, port))
        sock.listen(128)
        config = uvicorn.Config(
            app,
            log_level="warning",
            log_config=None,  # leave the process' logging configuration alone
            access_log=False,
            ws="none",
            lifespan="auto",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"asgi-{sock.getsockname()[1]}", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the ASGI server thread exited during startup")
            if time.monotonic() > deadline:
                server.should_exit = True
                raise TimeoutError(f"the ASGI server did not start within {startup_timeout} s")
            time.sleep(0.005)
    except BaseException:
        sock.close()
        raise
    return RunningServer(server, thread, sock, host)
