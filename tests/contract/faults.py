"""A fault-injecting ASGI wrapper: any stand-in (or a third party's fake) answers the next calls with an HTTP status.

``FaultInjector(app, skip=("/token",))`` passes everything through until ``fail_next(503, times=1)``; then the next
matching requests get that status (with ``Retry-After: 0`` for 503). Paths in ``skip`` (log-in, token, WSDL) are
never failed, so a test aims at data calls. Real sockets, real status codes: the connector cannot tell it apart
from a source that misbehaves.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson


class FaultInjector:
    def __init__(self, app: Any, *, skip: tuple[str, ...] = ()) -> None:
        self.app = app
        self.skip = skip
        self._lock = threading.Lock()
        self._plan: list[int] = []
        self.injected = 0

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._plan.extend([status] * times)

    def clear(self) -> None:
        with self._lock:
            self._plan.clear()

    def _take(self, scope: dict[str, Any]) -> int | None:
        if scope.get("type") != "http":
            return None
        path = scope.get("path", "")
        query = scope.get("query_string", b"").lower()
        if any(path.startswith(s) for s in self.skip) or b"wsdl" in query:
            return None
        with self._lock:
            if not self._plan:
                return None
            self.injected += 1
            return self._plan.pop(0)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        status = self._take(scope)
        if status is None:
            await self.app(scope, receive, send)
            return
        body = orjson.dumps({"error": f"injected HTTP {status}"})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", b"0"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
