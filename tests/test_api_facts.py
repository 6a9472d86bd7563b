"""Facts API on SQLite: filters, pages, lineage, problem+json, scopes on every endpoint, audit, limits, keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from gateway.api.audit import AUDIT
from gateway.store import clients
from tests.api_support import Api, fact, make_runtime, new_key, put, serve


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp: Path = tmp_path_factory.mktemp("api")
    runtime = make_runtime(f"sqlite:///{tmp / 'facts.db'}", tmp, rate_limit_burst=200)
    put(runtime, [fact(n, on_time=n % 5 != 0, delays=int(n % 5 == 0)) for n in range(30)])
    put(runtime, [fact(n, agency="SNV", unit="SNV.TCCB", person=f"Q{n}") for n in range(30, 40)])
    put(runtime, [fact(n, period="2026-02") for n in range(40, 45)])
    with serve(runtime) as served:
        yield served
    runtime.close()


@pytest.fixture(scope="module")
def keys(api: Api) -> dict[str, str]:
    rt = api.runtime
    return {
        "all": new_key(rt, "province", ["*"], ("read_facts", "admin")),
        "skhcn": new_key(rt, "skhcn-app", ["SKHCN"]),
        "skhcn_admin": new_key(rt, "skhcn-admin", ["SKHCN"], ("admin", "read_facts")),
        "snv": new_key(rt, "snv-app", ["SNV"]),
        "none": new_key(rt, "no-role", ["SKHCN"], ()),
    }


def test_credentials_are_required_and_errors_are_problems(api: Api, keys: dict[str, str]) -> None:
    for path in ("/v1/facts", "/v1/facts/changes", "/v1/facts/1", "/v1/summaries?period=2026-01", "/v1/sources",
                 "/v1/corrections", "/v1/periods", "/v1/admin/clients"):  # fmt: skip
        r = api.get(path, None)
        assert r.status_code == 401, path
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 401
    r = api.get("/v1/facts", "kpigw_nokey_nosecret")
    assert r.status_code == 401
    r = api.get("/v1/facts", keys["none"])
    assert r.status_code == 403
    r = api.get("/v1/facts", keys["all"], after="garbage!")
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert api.get("/v1/nowhere", keys["all"]).headers["content-type"] == "application/problem+json"
    assert api.get("/healthz", None).status_code == 200


def test_filters_and_keyset_pages(api: Api, keys: dict[str, str]) -> None:
    seen: list[int] = []
    after = None
    while True:
        r = api.get("/v1/facts", keys["all"], limit=7, **({"after": after} if after else {}))
        assert r.status_code == 200
        body = r.json()
        seen += [f["id"] for f in body["items"]]
        after = body["next"]
        if after is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 45
    only = api.get("/v1/facts", keys["all"], agency="SKHCN", period="2026-01", status="late", limit=100).json()
    assert {f["on_time"] for f in only["items"]} == {False} and len(only["items"]) == 6
    assert len(api.get("/v1/facts", keys["all"], person="Q33").json()["items"]) == 1
    assert len(api.get("/v1/facts", keys["all"], unit="SNV.TCCB", product="VB", source="eoffice").json()["items"]) == 10
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert api.get("/v1/facts", keys["all"], changed_since=future).json()["items"] == []
    assert api.get("/v1/facts", keys["all"], limit=5000).status_code == 422  # page size is capped


def test_fact_detail_has_lineage(api: Api, keys: dict[str, str]) -> None:
    first = api.get("/v1/facts", keys["skhcn"], limit=1).json()["items"][0]
    detail = api.get(f"/v1/facts/{first['id']}", keys["skhcn"]).json()
    assert detail["fact"] == first
    assert detail["history"][0]["op"] == "insert"
    assert detail["person_resolution"]["user_id"].startswith("u")
    assert detail["catalog_version"] == "2026.1"
    assert detail["closure"] is None and detail["corrections"] == []


def test_cross_agency_probes_never_return_data(api: Api, keys: dict[str, str]) -> None:
    snv_fact = api.get("/v1/facts", keys["snv"], limit=1).json()["items"][0]
    k = keys["skhcn"]
    assert api.get(f"/v1/facts/{snv_fact['id']}", k).status_code == 404
    for path, params in [
        ("/v1/facts", {"agency": "SNV"}), ("/v1/facts/changes", {"agency": "SNV"}),
        ("/v1/summaries", {"agency": "SNV", "period": "2026-01"}), ("/v1/corrections", {"agency": "SNV"}),
        ("/v1/periods", {"agency": "SNV"}), ("/v1/periods/SNV/2026-01", {}), ("/v1/reopenings", {"agency": "SNV"}),
        ("/v1/export", {"agency": "SNV", "unit": "SNV.TCCB", "period": "2026-01"}),
    ]:  # fmt: skip
        r = api.get(path, k, **params)
        assert r.status_code == 403, (path, r.text)
        assert "Q3" not in r.text
    # without naming an agency, scoped queries only see their own agency
    facts = api.get("/v1/facts", k, limit=1000).json()["items"]
    assert facts and {f["agency"] for f in facts} == {"SKHCN"}
    changes = api.get("/v1/facts/changes", k, limit=1000).json()["items"]
    assert changes and {c["agency"] for c in changes} == {"SKHCN"}
    for group in ("person", "unit", "agency"):
        summaries = api.get("/v1/summaries", k, period="2026", group_by=group).json()["items"]
        assert summaries and {s["agency"] for s in summaries} == {"SKHCN"}
    # admin routes: a scoped admin cannot close another agency's month nor manage its clients
    h = {"X-API-Key": keys["skhcn_admin"]}
    assert api.http.post("/v1/periods/SNV/2026-01/close", headers=h).status_code == 403
    assert api.http.post("/v1/periods/SNV/2026-01/reopen", headers=h, json={"reason": "probe"}).status_code == 403
    assert api.http.post("/v1/admin/clients/snv-app/keys", headers=h).status_code == 404
    assert api.get("/v1/admin/clients/snv-app/keys", keys["skhcn_admin"]).status_code == 404
    assert "snv-app" not in api.get("/v1/admin/clients", keys["skhcn_admin"]).text
    created = api.http.post("/v1/admin/clients", headers=h, json={"id": "sneaky", "name": "x", "agencies": ["*"],
                                                                   "roles": ["read_facts"]})  # fmt: skip
    assert created.status_code == 403
    assert api.get("/v1/admin/audit", keys["skhcn_admin"]).status_code == 403
    assert api.get("/v1/admin/clients", keys["skhcn"]).status_code == 403  # reader is not admin


def test_every_read_is_audited(api: Api, keys: dict[str, str]) -> None:
    api.get("/v1/facts", keys["snv"], person="Q31")
    with api.runtime.db.connect() as conn:
        row = conn.execute(select(AUDIT).where(AUDIT.c.actor == "snv-app").order_by(AUDIT.c.id.desc())).first()
    assert row is not None and row.action == "read_facts"
    detail = orjson.loads(row.detail)
    assert detail["filter"] == {"person": "Q31", "state": "active"} and detail["rows"] == 1
    page = api.get("/v1/admin/audit", keys["all"], actor="snv-app").json()
    assert page["items"][-1]["detail"]["filter"]["person"] == "Q31"


def test_key_rotation_expiry_and_revocation(api: Api, keys: dict[str, str]) -> None:
    admin = {"X-API-Key": keys["all"]}
    body = {"id": "rotating", "name": "R", "agencies": ["SNV"], "roles": ["read_facts"]}
    made = api.http.post("/v1/admin/clients", headers=admin, json=body)
    assert made.status_code == 201
    old = api.http.post("/v1/admin/clients/rotating/keys", headers=admin).json()
    assert api.get("/v1/facts", old["key"]).status_code == 200
    new = api.http.post("/v1/admin/clients/rotating/keys", headers=admin, params={"rotate_grace_hours": 0}).json()
    assert api.get("/v1/facts", new["key"]).status_code == 200
    assert api.get("/v1/facts", old["key"]).status_code == 401  # grace 0: the old key expired at rotation
    listed = api.get("/v1/admin/clients/rotating/keys", keys["all"]).text
    assert new["key"] not in listed and "secret" not in listed
    with api.runtime.db.connect() as conn:
        stored = clients.get_key(conn, new["key_id"])
    assert stored is not None and stored.secret_hash not in new["key"]
    assert api.http.delete(f"/v1/admin/clients/rotating/keys/{new['key_id']}", headers=admin).status_code == 204
    assert api.get("/v1/facts", new["key"]).status_code == 401
    assert api.get("/v1/facts", new["key"][:-1] + "x").status_code == 401


def test_rate_limit_and_request_caps(api: Api, keys: dict[str, str]) -> None:
    slow = new_key(api.runtime, "slow", ["SKHCN"], rate_per_minute=1)
    statuses = [api.get("/v1/sources", slow).status_code for _ in range(205)]
    assert statuses[0] == 200 and statuses[-1] == 429
    r = api.get("/v1/sources", slow)
    assert r.headers["content-type"] == "application/problem+json" and int(r.headers["retry-after"]) >= 1
    big = api.http.post("/v1/admin/clients", headers={"X-API-Key": keys["all"]}, content=b"x" * 70000)
    assert big.status_code == 413
    assert api.get("/v1/facts", keys["all"], unit="x" * 5000).status_code in (414, 422)
