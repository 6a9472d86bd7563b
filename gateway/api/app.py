"""``create_app(runtime)``: the FastAPI application. No work at import time; the lifespan owns the scheduler."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from gateway import __version__
from gateway.api.deps import ConnDep, RuntimeDep
from gateway.api.facts import BadPageToken, FactFilter, list_facts
from gateway.runtime import Runtime
from gateway.store import records as rec_store
from gateway.store.db import schema_version

PERIOD = r"^\d{4}-(0[1-9]|1[0-2])$"


def create_app(runtime: Runtime, *, start_scheduler: bool | None = None) -> FastAPI:
    run_scheduler = runtime.settings.scheduler if start_scheduler is None else start_scheduler

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_scheduler and runtime.scheduler is None:
            runtime.start_scheduler()
        try:
            yield
        finally:
            if runtime.scheduler is not None:
                runtime.scheduler.stop(wait=False)
                runtime.scheduler = None

    app = FastAPI(
        title="KPI gateway",
        version=__version__,
        summary="Normalized KPI facts (Decree 335/2025) from e-office, document-exchange and one-stop systems",
        lifespan=lifespan,
    )
    app.state.runtime = runtime

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")  # the route template, never the raw path
        runtime.metrics.api_requests.labels(template, request.method, str(response.status_code)).inc()
        runtime.metrics.api_latency.labels(template).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(BadPageToken)
    async def bad_token(_request: Request, exc: BadPageToken) -> JSONResponse:
        return JSONResponse(
            {"type": "about:blank", "title": "Bad page token", "status": 400, "detail": exc.message},
            status_code=400, media_type="application/problem+json",
        )

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
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

    @app.get("/v1/facts", tags=["facts"])
    def get_facts(
        conn: ConnDep,
        agency: str | None = None,
        unit: str | None = None,
        person: str | None = None,
        period: Annotated[str | None, Query(pattern=PERIOD)] = None,
        product: str | None = None,
        source: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: str | None = None,
    ) -> dict[str, Any]:
        filters = FactFilter(agency=agency, unit=unit, person=person, period=period, product=product, source=source)
        items, next_token = list_facts(conn, filters=filters, limit=limit, after=after)
        return {"items": items, "next": next_token}

    @app.get("/v1/sources", tags=["sources"])
    def get_sources(rt: RuntimeDep, conn: ConnDep) -> dict[str, Any]:
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
            })
        return {"items": out}

    @app.post("/v1/sources/{name}/sync", tags=["sources"], status_code=202)
    def trigger_sync(rt: RuntimeDep, name: str) -> dict[str, Any]:
        if name not in rt.sources:
            raise HTTPException(status_code=404, detail=f"no source named {name!r}")
        if rt.scheduler is None:
            raise HTTPException(status_code=409, detail="the scheduler is not running in this process")
        rt.scheduler.trigger(name)
        return {"source": name, "status": "triggered"}

    return app


def _run_view(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "trigger", "outcome", "pages", "records_read", "records_quarantined", "facts_written",
            "facts_retracted", "error", "error_kind", "replica")
    view = {k: run.get(k) for k in keys}
    for k in ("started_at", "finished_at"):
        view[k] = run[k].isoformat() if run.get(k) else None
    return view
