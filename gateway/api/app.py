"""``create_app(runtime)``: the FastAPI application. No work at import time; the lifespan owns the scheduler.

Everything under ``/v1`` needs credentials (see :mod:`gateway.security`) unless the gateway runs with
``KPIGW_AUTH_MODE=open``, the demo's sandbox, which is announced in the log and in every response header.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__, logs
from gateway.api import problems, routes_admin, routes_facts, routes_ops, routes_periods
from gateway.api.cache import ResponseCache
from gateway.api.deps import AdminDep, CallerDep, ConnDep, RuntimeDep
from gateway.api.problems import ApiError, Problem, problem, problem_responses
from gateway.runtime import Runtime
from gateway.security import Authenticator, RateLimiter
from gateway.security.shared_rate import SharedCounts
from gateway.store import records as rec_store
from gateway.store.db import schema_version

log = logging.getLogger("kpigw.api")
MAX_QUERY_BYTES = 4096
SANDBOX_WARNING = ("KPIGW_AUTH_MODE=open: the API serves every agency's facts WITHOUT credentials. This is the "
                   "demo sandbox; never run it like this with real data.")  # fmt: skip


class RequestLimits:
    """Refuse oversized query strings (414) and bodies (413), counted as they stream in, and NUL characters in
    the path or query string (400)."""

    def __init__(self, app: ASGIApp, *, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
            await problem(414, "URI too long", f"query strings are limited to {MAX_QUERY_BYTES} bytes")(
                scope, receive, send)  # fmt: skip
            return
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", ""):
            # PostgreSQL text cannot hold NUL: such a code reached the driver and was a 500 on every route
            await problem(400, "Bad request", "the path or query string holds a NUL character (%00)")(
                scope, receive, send)  # fmt: skip
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await problem(413, "Request too large", f"request bodies are limited to {self.max_body} bytes")(
                scope, receive, send)  # fmt: skip
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise ApiError(413, "Request too large", f"request bodies are limited to {self.max_body} bytes")
            return message

        await self.app(scope, counted, send)


class Observe:
    """Correlation id, request metrics and the sandbox label, as a plain ASGI middleware.

    (``@app.middleware("http")`` wraps every response in a streaming copy through an extra task; for a 500 KB
    page of facts that cost more than this middleware's own work.) Requests are counted by route template,
    never by raw path, and a request that crashed is counted as a 500."""

    def __init__(self, app: ASGIApp, *, runtime: Runtime, sandbox: bool) -> None:
        self.app, self.metrics, self.sandbox = app, runtime.metrics, sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        cid = logs.new_correlation_id(Headers(scope=scope).get("X-Request-ID"))
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = cid
                if self.sandbox:
                    headers["X-KPIGW-Sandbox"] = "open: no authentication, demo only"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            logs.correlation_id.set(None)
            template = getattr(scope.get("route"), "path", "unmatched")  # the route template, never the raw path
            self.metrics.api_requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.api_latency.labels(template).observe(time.perf_counter() - started)


def create_app(runtime: Runtime, *, start_scheduler: bool | None = None, authenticator: Authenticator | None = None,
               response_cache_bytes: int | None = None) -> FastAPI:  # fmt: skip
    """The application. ``response_cache_bytes`` bounds the per-process cache of fact pages and summaries
    (:mod:`gateway.api.cache`; 0 turns it off; default: ``KPIGW_API_RESPONSE_CACHE_MB``)."""
    if response_cache_bytes is None:
        response_cache_bytes = int(runtime.settings.api_response_cache_mb * 2**20)
    run_scheduler = runtime.settings.scheduler if start_scheduler is None else start_scheduler
    settings = runtime.settings
    auth = authenticator or Authenticator.from_settings(settings, runtime.db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if auth.open_mode:
            log.warning(SANDBOX_WARNING)
        if run_scheduler and runtime.scheduler is None:
            runtime.start_scheduler()
        if shared is not None:
            shared.start()
        try:
            yield
        finally:
            if shared is not None:
                shared.stop()
            if runtime.scheduler is not None:
                runtime.scheduler.stop(wait=False)
                runtime.scheduler = None

    app = FastAPI(
        title="KPI gateway",
        version=__version__,
        summary="Normalized KPI facts (Decree 335/2025) from e-office, document-exchange and one-stop systems",
        description=("Facts, change feed, summaries, closed periods and exports for scoring front ends. "
                     "Authenticate with `X-API-Key: kpigw_...` or `Authorization: Bearer <OIDC token or key>`; "
                     "every query is limited to the caller's agencies. Errors are `application/problem+json`."),
        lifespan=lifespan,
    )  # fmt: skip
    app.state.runtime = runtime
    app.state.authenticator = auth
    app.state.response_cache = ResponseCache(max_bytes=response_cache_bytes)
    # Replicas share a PostgreSQL store: their request counts are summed there. A SQLite store has one process.
    shared = SharedCounts(runtime.db) if runtime.db.dialect.name == "postgresql" else None
    app.state.rate_limiter = RateLimiter(per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst,
                                         shared=shared)  # fmt: skip
    problems.install(app)
    app.add_middleware(RequestLimits, max_body=settings.max_request_bytes)

    app.add_middleware(Observe, runtime=runtime, sandbox=auth.open_mode)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "not ready (same body)"}})
    def readyz(rt: RuntimeDep, response: Response) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            with rt.db.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["store"] = "ok"
            checks["schema_version"] = schema_version(rt.db)
        except Exception as exc:  # readiness reports, it does not crash
            checks["store"] = f"unreachable: {type(exc).__name__}"
        checks["mappings"] = rt.mappings.current.version
        ready = checks["store"] == "ok"
        response.status_code = 200 if ready else 503
        return {"ready": ready, "checks": checks}

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def metrics(rt: RuntimeDep, request: Request) -> Response:
        token = rt.settings.metrics_token
        if token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
                raise HTTPException(status_code=401, detail="metrics need a bearer token")
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/sources", tags=["sources"], summary="Sources and their freshness",
             responses=problem_responses(401, 403, 422, 429))
    def get_sources(rt: RuntimeDep, conn: ConnDep, _caller: CallerDep) -> dict[str, Any]:
        runs = rec_store.last_runs(conn)
        now = datetime.now(UTC)
        status = rt.scheduler.status() if rt.scheduler else {}
        out = []
        for name, spec in sorted(rt.sources.items()):
            run = runs.get(name)
            last_ok = run.get("last_success_at") if run else None
            out.append({
                "name": name, "kind": spec.kind, "interval_seconds": spec.interval, "enabled": spec.enabled,
                "last_run": _run_view(run) if run else None,
                "last_success_at": last_ok.isoformat() if last_ok else None,
                "freshness_seconds": round((now - last_ok).total_seconds(), 1) if last_ok else None,
                "scheduler": status.get(name),
            })  # fmt: skip
        return {"items": out}

    @app.post("/v1/sources/{name}/sync", tags=["sources"], status_code=202,
              summary="Trigger a sync now (admin)",
              responses=problem_responses(401, 403, 404, 409, 422, 429))  # fmt: skip
    def trigger_sync(rt: RuntimeDep, name: str, _caller: AdminDep) -> dict[str, Any]:
        if name not in rt.sources:
            raise ApiError(404, "Not found", f"no source named {name!r}")
        if rt.scheduler is None:
            raise ApiError(409, "Conflict", "the scheduler is not running in this process")
        rt.scheduler.trigger(name)
        return {"source": name, "status": "triggered"}

    for module in (routes_facts, routes_periods, routes_admin, routes_ops):
        app.include_router(module.router)
    _document_problems(app)
    return app


def _document_problems(app: FastAPI) -> None:
    """Put the ``Problem`` schema into the OpenAPI components that the error responses refer to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}")  # fmt: skip
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _run_view(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "trigger", "outcome", "pages", "records_read", "records_quarantined", "facts_written",
            "facts_retracted", "error", "error_kind", "replica")
    view = {k: run.get(k) for k in keys}
    for k in ("started_at", "finished_at"):
        view[k] = run[k].isoformat() if run.get(k) else None
    return view
