"""Errors as ``application/problem+json`` (RFC 9457) everywhere, including validation and unknown routes."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import GatewayError
from gateway.security.errors import RateLimited, SecurityError

log = logging.getLogger("kpigw.api")
PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "about:blank", "title": "Forbidden", "status": 403,
         "detail": "agency 'SNV' is outside the scope of client 'skhcn-frontend'"}]})  # fmt: skip
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="what was invalid, for 422 responses")


def problem(status: int, title: str, detail: str | None = None, *, headers: dict[str, str] | None = None,
            errors: list[dict[str, Any]] | None = None) -> Response:  # fmt: skip
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body, default=str), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    text = {400: "Bad request (a page token or parameter this API cannot use)", 401: "No or bad credentials",
            403: "Role or agency outside the caller's scope", 404: "Not found (or not visible to the caller)",
            409: "Conflict with the current state", 413: "Request too large", 422: "Invalid parameters",
            429: "Rate limit exceeded; see Retry-After"}  # fmt: skip
    schema = {"$ref": "#/components/schemas/Problem"}
    return {c: {"description": text.get(c, "Error"), "content": {PROBLEM_JSON: {"schema": schema}}} for c in codes}


class ApiError(GatewayError):
    """Raised by routes for a plain HTTP error with a problem body."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title = status, title


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_r: Request, exc: StarletteHTTPException) -> Response:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        return problem(exc.status_code, title, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(_r: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]  # fmt: skip
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(SecurityError)
    async def security(_r: Request, exc: SecurityError) -> Response:
        headers = {"WWW-Authenticate": 'Bearer realm="kpigw"'} if exc.status == 401 else {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, round(exc.retry_after + 0.5)))
        return problem(exc.status, exc.title, exc.message, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(_r: Request, exc: ApiError) -> Response:
        return problem(exc.status, exc.title, exc.message)

    @app.exception_handler(GatewayError)
    async def gateway_error(_r: Request, exc: GatewayError) -> Response:
        # BadPageToken, BadPeriod and the like: the caller sent something this API cannot use
        return problem(400, type(exc).__name__, exc.message)

    @app.exception_handler(Exception)
    async def crash(_r: Request, exc: Exception) -> Response:
        log.exception("unhandled error in the API", exc_info=exc)
        return problem(500, "Internal error", "the gateway failed to answer; the error is logged")
