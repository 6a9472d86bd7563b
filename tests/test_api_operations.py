"""Operator endpoints: /healthz, /readyz, /metrics (optionally behind a token), /v1/sources freshness."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from gateway.api import create_app
from gateway.runtime import Runtime
from gateway.standins.server import serve_in_thread
from tests.conftest import RuntimeFactory


@pytest.fixture
def synced(make_runtime: RuntimeFactory, tmp_path) -> Runtime:  # type: ignore[no-untyped-def]
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db")
    connector = runtime.connector("eoffice")
    runtime.sync.run(connector, streams=["tasks"])
    connector.close()
    return runtime


def _serve(runtime: Runtime) -> Iterator[httpx.Client]:
    with serve_in_thread(create_app(runtime, start_scheduler=False)) as server, httpx.Client(base_url=server.url) as c:
        yield c


@pytest.fixture
def client(synced: Runtime) -> Iterator[httpx.Client]:
    synced.settings = synced.settings.model_copy(update={"auth_mode": "open"})
    yield from _serve(synced)


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["store"] == "ok" and checks["schema_version"] >= 1 and checks["mappings"].startswith("m-")


def test_metrics_name_sources_and_outcomes_never_people(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    assert 'kpigw_source_records_total{outcome="read",source="eoffice",stream="tasks"}' in text
    assert "kpigw_sync_runs_total" in text and "kpigw_upstream_request_seconds_bucket" in text
    assert not re.search(r'"(P\d{4}|u\d{4})"', text)  # no person ids (directory or source) in any label


def test_metrics_can_require_a_bearer_token(synced: Runtime) -> None:
    synced.settings = synced.settings.model_copy(update={"auth_mode": "open", "metrics_token": SecretStr("t0k")})
    for client in _serve(synced):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer t0k"}).status_code == 200


def test_sources_show_last_run_and_freshness(client: httpx.Client) -> None:
    items = {s["name"]: s for s in client.get("/v1/sources").json()["items"]}
    eoffice = items["eoffice"]
    assert eoffice["last_run"]["outcome"] in ("success", "partial")
    assert eoffice["last_success_at"] is not None and eoffice["freshness_seconds"] >= 0
