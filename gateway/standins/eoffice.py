"""The e-office stand-in: a real HTTP server shaped like VNPT iOffice (QLVB&ĐH), with sandbox hooks.

``EOfficeState`` holds the deterministic data (two months of documents and tasks for the seed agencies,
plus optional synthetic bulk records), a simulated clock, the mutations incremental-sync tests need, the
fault hooks retry tests need, and the sandbox credentials. ``create_eoffice_app(state)`` is the ASGI app;
run it with :func:`gateway.standins.server.serve_in_thread`. The wire API is described in
``docs/standins.md``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.standins._eoffice_model import fmt_dt, parse_dt
from gateway.standins._eoffice_state import (
    INCOMING,
    KINDS,
    MAX_PAGE_REC,
    OUTGOING,
    SANDBOX_PASSWORD,
    SANDBOX_USERNAME,
    TASKS,
    TOKEN_HEADER,
    AdvanceResult,
    EOfficeState,
    Page,
)

__all__ = [
    "INCOMING",
    "KINDS",
    "MAX_PAGE_REC",
    "OUTGOING",
    "SANDBOX_PASSWORD",
    "SANDBOX_USERNAME",
    "TASKS",
    "TOKEN_HEADER",
    "AdvanceResult",
    "EOfficeState",
    "Page",
    "create_eoffice_app",
]

_JSON = "application/json"

# --------------------------------------------------------------------------------------------- HTTP


def _envelope(data: Any, code: str = "0", message: str = "OK", status: int = 200, **headers: str) -> Response:
    body = orjson.dumps({"status": {"code": code, "message": message}, "data": data})
    return Response(body, status_code=status, media_type=_JSON, headers=headers or None)


def _error(status: int, message: str) -> Response:
    return _envelope(None, code=str(status), message=message, status=status)


Handler = Callable[[Request], Awaitable[Response]]


def create_eoffice_app(state: EOfficeState) -> Starlette:
    """The iOffice-shaped ASGI app over ``state`` (see ``docs/standins.md``)."""

    def api(handler: Handler, *, auth: bool = True) -> Handler:
        async def wrapped(request: Request) -> Response:
            failure = state.consume_failure()
            if failure is not None:
                status, retry_after = failure
                headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                return _envelope(None, str(status), "Hệ thống đang bận, vui lòng thử lại sau", status, **headers)
            if auth and not state.token_valid(request.headers.get(TOKEN_HEADER)):
                return _error(401, "Phiên đăng nhập hết hạn hoặc không hợp lệ")
            return await handler(request)

        return wrapped

    async def login(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            username, password = str(body["username"]), str(body["password"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(400, "Yêu cầu không hợp lệ")
        token = state.login(username, password)
        if token is None:
            return _envelope(None, "AUTH_FAILED", "Sai tên đăng nhập hoặc mật khẩu")
        return _envelope({"token": token, "expiresIn": max(1, math.ceil(state.token_ttl))})

    def lister(kind: str) -> Handler:
        async def handler(request: Request) -> Response:
            q = request.query_params
            try:
                page_no = int(q.get("pageNo", "1"))
                page_rec = int(q.get("pageRec", "100"))
                since = parse_dt(q["tuNgayCapNhat"]) if q.get("tuNgayCapNhat") else None
            except ValueError:
                return _error(400, "Tham số không hợp lệ")
            if page_no < 1 or page_rec < 1:
                return _error(400, "Tham số không hợp lệ")
            with_log = q.get("kemNhatKy", "0").lower() in ("1", "true")
            page = state.page(
                kind, page_no=page_no, page_rec=page_rec, since=since, agency=q.get("maDonVi"), with_log=with_log
            )
            body = b"".join(
                (
                    b'{"status":{"code":"0","message":"OK"},"data":{"totalRecord":',
                    str(page.total).encode(),
                    b',"pageNo":',
                    str(page.page_no).encode(),
                    b',"pageRec":',
                    str(page.page_rec).encode(),
                    b',"items":',
                    page.items_json,
                    b"}}",
                )
            )
            if state.consume_malformed():
                body = body[: len(body) // 2]
            return Response(body, media_type=_JSON)

        return handler

    def one(kind: str, *, log_only: bool) -> Handler:
        async def handler(request: Request) -> Response:
            raw = request.path_params["doc_id"]
            doc_id = int(raw) if raw.isdigit() else -1
            data: Any = state.activity_log(kind, doc_id) if log_only else state.detail(kind, doc_id)
            if data is None:
                return _error(404, "Không tìm thấy bản ghi")
            return _envelope(data)

        return handler

    async def sandbox_advance(request: Request) -> Response:
        result = state.advance(int(request.query_params.get("days", "1")))
        return _envelope(
            {
                "clock": fmt_dt(result.clock),
                "added": list(result.added),
                "completed": list(result.completed),
                "extended": list(result.extended),
            }
        )

    async def sandbox_expire(request: Request) -> Response:
        state.expire_tokens()
        return _envelope(None)

    async def sandbox_fail(request: Request) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        state.fail_next(int(body.get("n", 1)), int(body.get("status", 503)), body.get("retryAfter"))
        return _envelope(None)

    async def sandbox_malformed(request: Request) -> Response:
        state.malformed_next_page()
        return _envelope(None)

    async def sandbox_clock(request: Request) -> Response:
        return _envelope({"now": fmt_dt(state.now)})

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return _error(status, "Không tìm thấy" if status == 404 else "Lỗi yêu cầu")

    routes = [Route("/qlvb/api/login", api(login, auth=False), methods=["POST"])]
    for kind in KINDS:
        routes.append(Route(f"/qlvb/api/{kind}/danh-sach", api(lister(kind)), methods=["GET"]))
        routes.append(Route(f"/qlvb/api/{kind}/{{doc_id}}", api(one(kind, log_only=False)), methods=["GET"]))
    for kind in (INCOMING, OUTGOING):
        routes.append(Route(f"/qlvb/api/{kind}/{{doc_id}}/nhat-ky", api(one(kind, log_only=True)), methods=["GET"]))
    routes += [
        Route("/_sandbox/advance", sandbox_advance, methods=["POST"]),
        Route("/_sandbox/expire-tokens", sandbox_expire, methods=["POST"]),
        Route("/_sandbox/fail-next", sandbox_fail, methods=["POST"]),
        Route("/_sandbox/malformed-next-page", sandbox_malformed, methods=["POST"]),
        Route("/_sandbox/clock", sandbox_clock, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
