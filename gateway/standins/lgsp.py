"""The LGSP one-stop stand-in: OAuth2 client credentials and the provincial one-stop system's dossiers, on loopback.

- ``POST /token``: ``grant_type=client_credentials``, the client authenticated by ``client_id`` +
  ``client_secret`` in the form **or** by HTTP Basic; answers ``{access_token, token_type, expires_in}``
  (``401 invalid_client`` otherwise);
- ``GET /api/dossiers``: dossiers updated at or after ``updatedFrom`` (``dd/MM/yyyy HH:mm:ss``), ascending by
  (``UpdatedDate``, ``Id``), paged by ``page`` / ``pageSize``, one organ with ``organId``; ``includeTraces=true``
  embeds each dossier's ``Traces``;
- ``GET /api/dossiers/{DocCode}/traces``: the per-step traces (``DocumentId``, ``UserName``, ``UserPosition``,
  ``DateCreated``, ``Status``, ``Comment``);
- ``GET /api/statistics?organId=&month=YYYY-MM``: solved on time / late / returned / pending.

Every ``/api`` answer is ``{"ErrorCode": "0", "Message": ..., "Total": n, "Data": ...}``; a missing or expired
Bearer token is HTTP 401 with ``ErrorCode`` ``"401"``. ``create_lgsp_app(state)`` builds the ASGI app (no work at
import time); data, clock and mutations live in :class:`LgspState`.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.standins._lgsp_state import (
    DATE_FORMAT,
    PROCEDURES,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    Dossier,
    LgspState,
    Trace,
    parse,
)

__all__ = [
    "DATE_FORMAT",
    "PROCEDURES",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "Dossier",
    "LgspState",
    "Trace",
    "create_lgsp_app",
]

MAX_PAGE_SIZE = 1000
_JSON = "application/json; charset=utf-8"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON, headers=headers)


def _api(data: Any, *, total: int | None = None, code: str = "0", message: str = "Thành công", status: int = 200,
         headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    body: dict[str, Any] = {"ErrorCode": code, "Message": message, "Data": data}
    if total is not None:
        body["Total"] = total
    return _json(body, status, headers)


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            user, _, secret = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return unquote(user), unquote(secret)
    if "client_id" in form and "client_secret" in form:
        return form["client_id"], form["client_secret"]
    return None


def create_lgsp_app(state: LgspState) -> Starlette:
    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))  # no multipart dependency
        if form.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, 400)
        creds = _client_credentials(request, form)
        issued = state.issue_token(*creds) if creds else None
        if issued is None:
            return _json({"error": "invalid_client"}, 401, {"WWW-Authenticate": 'Basic realm="lgsp"'})
        return _json({"access_token": issued, "token_type": "Bearer", "expires_in": math.ceil(state.token_ttl)})

    def guarded(handler: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            failure = state.consume_failure()
            if failure is not None:
                status, retry_after = failure
                headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
                return _api(None, code=str(status), message="Hệ thống đang bận", status=status, headers=headers)
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not state.token_valid(auth[7:].strip()):
                return _api(None, code="401", message="Unauthorized", status=401,
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})  # fmt: skip
            try:
                response: Response = await handler(request)
            except (ValueError, KeyError) as exc:
                return _api(None, code="400", message=f"Tham số không hợp lệ: {exc}", status=400)
            return response

        return wrapped

    async def dossiers(request: Request) -> Response:
        q = request.query_params
        page, size = int(q.get("page", "1")), min(int(q.get("pageSize", "50")), MAX_PAGE_SIZE)
        if page < 1 or size < 1:
            raise ValueError("page and pageSize start at 1")
        since = parse(q["updatedFrom"]) if q.get("updatedFrom") else None
        traces = q.get("includeTraces", "false").lower() in ("1", "true")
        total, rows = state.page(page=page, size=size, since=since, organ=q.get("organId"), traces=traces)
        return _api(rows, total=total)

    async def traces(request: Request) -> Response:
        code = request.path_params["code"]
        try:
            dossier = state.find(code)
        except KeyError:
            return _api(None, code="404", message=f"Không tìm thấy hồ sơ {code}", status=404)
        rows = dossier.traces(state.now)
        return _api(rows, total=len(rows))

    async def statistics(request: Request) -> Response:
        q = request.query_params
        return _api(state.statistics(q["organId"], q["month"]))

    return Starlette(
        routes=[
            Route("/token", token, methods=["POST"]),
            Route("/api/dossiers", guarded(dossiers)),
            Route("/api/dossiers/{code}/traces", guarded(traces)),
            Route("/api/statistics", guarded(statistics)),
        ]
    )
