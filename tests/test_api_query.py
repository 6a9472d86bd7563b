"""The hot reads validate their query strings themselves (gateway/api/query.py), and nothing a client sees changes.

Each hot route is compared with FastAPI's own handling of the same pydantic model declared the usual way,
``Annotated[Model, Query()]``, in a reference app with the same problem+json handlers: the OpenAPI
parameters are equal, and so are the responses to valid and invalid queries (status, ``loc``, ``msg``,
``type``, detail). (Declared that way, the models also gave the OpenAPI document of the earlier eleven
``Query`` arguments, byte for byte; the 422 bodies were compared with the earlier code for the cases below.)
"""

# No ``from __future__ import annotations``: the reference endpoints' annotations name a local model.
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query
from pydantic import BaseModel

from gateway.api import problems
from gateway.api.routes_facts import ChangeQuery, FactQuery, SummaryQuery
from gateway.runtime import Runtime
from gateway.standins.server import serve_in_thread
from tests.api_support import Api, make_runtime, new_key, serve

ROUTES: dict[str, type[BaseModel]] = {"/v1/facts": FactQuery, "/v1/facts/changes": ChangeQuery,
                                      "/v1/summaries": SummaryQuery}  # fmt: skip
QUERIES: dict[str, list[str]] = {
    "/v1/facts": ["limit=0", "limit=abc", "limit=1001&period=2026-13", "period=bad", "status=zzz", "state=x",
                  "changed_since=notadate", "unit=" + "x" * 201, "after=" + "a" * 65, "limit=5&limit=abc",
                  "limit=abc&limit=5", "agency=", "limit=", "changed_since=2026-01-01T00:00:00", "foo=bar",
                  "limit=1.0", "limit=+7", "status=late&state=any&period=2026-01"],
    "/v1/facts/changes": ["limit=0", "after=" + "a" * 65, "limit=x&agency=" + "y" * 300, "limit=2", "agency=SKHCN"],
    "/v1/summaries": ["", "period=2026-Q5", "period=2026&group_by=team", "period=2026&limit=0&after=" + "a" * 401,
                      "group_by=unit", "period=2026&unit=", "period=2026-01&period=2026", "period=2026-Q1"],
}  # fmt: skip


def _reference_app() -> FastAPI:
    """FastAPI validating the same models itself; it answers the validated query back."""
    app = FastAPI()
    problems.install(app)

    def route(model: type[BaseModel]) -> Any:
        async def endpoint(q: Annotated[model, Query()]) -> dict[str, Any]:  # type: ignore[valid-type]
            return {}

        return endpoint

    for path, model in ROUTES.items():
        app.get(path)(route(model))
    return app


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Api, str, httpx.Client]]:
    runtime: Runtime = make_runtime(f"sqlite:///{tmp_path / 's.db'}", tmp_path, rate_limit_burst=500)
    key = new_key(runtime, "reader", ["*"])
    with serve(runtime) as served, serve_in_thread(_reference_app()) as ref_server, \
            httpx.Client(base_url=ref_server.url, timeout=30) as ref:  # fmt: skip
        yield served, key, ref
    runtime.close()


def test_openapi_parameters_are_fastapis_own(api: tuple[Api, str, httpx.Client]) -> None:
    served, _key, ref = api
    ours, theirs = served.http.get("/openapi.json").json(), ref.get("/openapi.json").json()
    for path in ROUTES:
        assert ours["paths"][path]["get"]["parameters"] == theirs["paths"][path]["get"]["parameters"], path


def _seen(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, (response.json() if response.status_code == 422 else None)


@pytest.mark.parametrize("path", list(QUERIES))
def test_validation_answers_as_fastapi_would(api: tuple[Api, str, httpx.Client], path: str) -> None:
    served, key, ref = api
    for query in QUERIES[path]:
        ours = served.http.get(f"{path}?{query}", headers={"X-API-Key": key})
        theirs = ref.get(f"{path}?{query}")
        assert _seen(ours) == _seen(theirs), query
        if ours.status_code == 422:
            assert ours.headers["content-type"] == "application/problem+json"
