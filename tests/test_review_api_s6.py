"""Review of the facts API and its store (session 6): each test failed on the code before its fix.

- a hand-made page token (a number past any row id, a summary token with other than text in it) or a
  ``changed_since`` at the edge of the calendar is a 400 or 422 problem, never a 500;
- a fact moving to another agency leaves the first agency's change feed (a retraction there) and its history
  shows a caller only the versions filed under the caller's agencies;
- a NUL character in the path or query string is a 400 on both backends (a 500 on PostgreSQL before);
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from gateway.mapping.explain import facts_as_of
from gateway.store.facts import CHANGE
from tests.api_support import NOW, Api, close_month, fact, make_runtime, new_key, put, serve


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture
def api(store_url: str, tmp_path: Path) -> Iterator[Api]:
    runtime = make_runtime(store_url, tmp_path, rate_limit_burst=500)
    put(runtime, [fact(n) for n in range(6)])
    put(runtime, [fact(n, agency="SNV", unit="SNV.TCCB", person=f"Q{n}") for n in range(6, 9)])
    with serve(runtime) as served:
        yield served
    runtime.close()


def test_hand_made_page_tokens_are_problems_not_500(api: Api) -> None:
    key = new_key(api.runtime, "province", ["*"], ("read_facts", "admin"))
    huge = "9" * 40  # past any row id the store can hold (SQLite's INTEGER is 64-bit)
    for path, params in (
        ("/v1/facts", {"after": _token(f"id:{huge}")}),
        ("/v1/facts/changes", {"after": _token(f"seq:{huge}")}),
        ("/v1/corrections", {"after": _token(f"cor:{huge}")}),
        ("/v1/reopenings", {"after": _token(f"reo:{huge}")}),
        ("/v1/admin/audit", {"after": _token(f"aud:{huge}")}),
        ("/v1/summaries", {"period": "2026-01", "after": _token("[1]")}),
        ("/v1/summaries", {"period": "2026-01", "after": _token('["SKHCN", {"a": 1}]')}),
        ("/v1/summaries", {"period": "2026-01", "after": _token("[[]]")}),
    ):
        r = api.get(path, key, **params)
        assert r.status_code == 400, (path, params, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    # what the API issues still works
    first = api.get("/v1/summaries", key, period="2026-01", group_by="person", limit=2).json()
    rest = api.get("/v1/summaries", key, period="2026-01", group_by="person", after=first["next"]).json()
    assert len(first["items"]) + len(rest["items"]) == 4 + 3
    assert orjson.loads(base64.urlsafe_b64decode(first["next"] + "==")) == ["SKHCN", "SKHCN.VP", "P1"]


def test_changed_since_at_the_edge_of_the_calendar_is_not_a_500(api: Api) -> None:
    key = new_key(api.runtime, "province", ["*"], ("read_facts",))
    for moment in ("0001-01-01T00:00:00", "0001-01-01T03:00:00+05:00", "9999-12-31T23:00:00-05:00"):
        r = api.get("/v1/facts", key, changed_since=moment)
        assert r.status_code in (200, 422), (moment, r.status_code, r.text)
        assert r.status_code == 200 or r.headers["content-type"] == "application/problem+json"
    assert len(api.get("/v1/facts", key, changed_since="0001-01-02T00:00:00").json()["items"]) == 9
    assert api.get("/v1/facts", key, changed_since="9999-12-30T00:00:00").json()["items"] == []


def _mirror(api: Api, key: str, token: str | None = None) -> tuple[dict[str, dict[str, Any]], str | None]:
    """What a follower of the change feed holds (fact_key -> latest snapshot, retracted ones too), its token."""
    mirror: dict[str, dict[str, Any]] = {}
    while True:
        page = api.get("/v1/facts/changes", key, limit=3, **({"after": token} if token else {})).json()
        for change in page["items"]:
            mirror[change["fact_key"]] = change["fact"]
        token = page["next"]
        if not page["has_more"]:
            return mirror, token


def _active(mirror: dict[str, dict[str, Any]]) -> set[str]:
    return {key for key, snap in mirror.items() if snap["state"] == "active"}


def test_a_fact_moving_to_another_agency_leaves_the_first_agencys_feed_and_history(api: Api) -> None:
    """A one-stop dossier keeps its key (``dossier:{DocCode}``) while its processing organ, hence its fact's
    agency, changes: the first agency's followers must see the fact go, the second's must not read the first's
    versions of it."""
    skhcn, snv = new_key(api.runtime, "skhcn-app", ["SKHCN"]), new_key(api.runtime, "snv-app", ["SNV"])
    mirror, token = _mirror(api, skhcn)
    moved = fact(0, agency="SNV", unit="SNV.TCCB", item_key="SKHCN:doc0", record="SKHCN-0")
    assert put(api.runtime, [moved], now=NOW + timedelta(hours=1)).updated == 1
    listed = {f["fact_key"] for f in api.get("/v1/facts", skhcn, limit=1000).json()["items"]}
    assert listed == {f"SKHCN:doc{n}|P{n % 4}|lead" for n in range(1, 6)}
    assert _active(_mirror(api, skhcn)[0]) == listed  # a follower starting now
    # the follower that had the fact sees it leave its agencies
    page = api.get("/v1/facts/changes", skhcn, after=token).json()
    assert [(c["fact_key"], c["fact"]["state"]) for c in page["items"]] == [("SKHCN:doc0|P0|lead", "retracted")]
    mirror.update(_mirror(api, skhcn, token)[0])
    assert _active(mirror) == listed
    # SNV sees the fact as its own, without SKHCN's versions of it
    fact_id = next(f["id"] for f in api.get("/v1/facts", snv).json()["items"] if f["item_key"] == "SKHCN:doc0")
    detail = api.get(f"/v1/facts/{fact_id}", snv).json()
    assert detail["fact"]["agency"] == "SNV"
    assert {h["fact"]["agency"] for h in detail["history"]} == {"SNV"}
    assert api.get(f"/v1/facts/{fact_id}", skhcn).status_code == 404
    # an agency's month as it stood after the move (kpigw remap's reference) no longer holds the fact
    with api.runtime.db.connect() as conn:
        last = conn.execute(select(func.max(CHANGE.c.seq))).scalar_one()
        assert {f["fact_key"] for f in facts_as_of(conn, agency="SKHCN", period="2026-01", seq=last)} == listed
    # a province-wide follower ends with the fact in SNV
    everything, _ = _mirror(api, new_key(api.runtime, "province", ["*"]))
    assert everything["SKHCN:doc0|P0|lead"]["agency"] == "SNV" and len(_active(everything)) == 9


def test_a_nul_character_in_the_path_or_query_is_a_400_on_every_backend(api: Api) -> None:
    """PostgreSQL text cannot hold NUL: a code with one reached the driver and was a 500 on every route."""
    key = new_key(api.runtime, "province", ["*"], ("read_facts", "admin"))
    for path, params in (
        ("/v1/facts", {"unit": "a\x00b"}), ("/v1/facts", {"agency": "SKHCN\x00"}),
        ("/v1/facts/changes", {"agency": "\x00"}), ("/v1/summaries", {"period": "2026-01", "person": "P\x00"}),
        ("/v1/corrections", {"agency": "a\x00"}), ("/v1/reopenings", {"agency": "a\x00"}),
        ("/v1/periods", {"agency": "a\x00"}), ("/v1/periods/a%00b/2026-01", {}),
        ("/v1/export", {"agency": "SKHCN", "unit": "a\x00", "period": "2026-01"}),
        ("/v1/admin/audit", {"actor": "a\x00"}), ("/v1/admin/clients/a%00b/keys", {}),
    ):  # fmt: skip
        r = api.get(path, key, **params)
        assert r.status_code == 400, (path, params, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    r = api.http.post("/v1/periods/a%00b/2026-01/close", headers={"X-API-Key": key})
    assert r.status_code == 400
    assert api.get("/v1/facts", key, unit="a%00b").json()["items"] == []  # the text "%00" is not a NUL


def test_a_nul_character_in_a_json_body_is_a_422_on_every_backend(api: Api) -> None:
    """The admin bodies' text (a client's name and agencies, a reopening's reason) reached PostgreSQL with a NUL
    in it and was a 500 there; it is refused as the invalid value it is, naming the field."""
    key = new_key(api.runtime, "province", ["*"], ("read_facts", "admin"))
    headers = {"X-API-Key": key}
    close_month(api.runtime, "2026-01")
    for path, body, field in (
        ("/v1/admin/clients", {"id": "nul-name", "name": "a\x00b", "agencies": ["SKHCN"], "roles": ["read_facts"]},
         "name"),
        ("/v1/admin/clients", {"id": "nul-agency", "name": "n", "agencies": ["SK\x00"], "roles": ["read_facts"]},
         "agencies"),
        ("/v1/periods/SKHCN/2026-01/reopen", {"reason": "late\x00 documents"}, "reason"),
    ):  # fmt: skip
        r = api.http.post(path, headers=headers, json=body)
        assert r.status_code == 422, (path, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json" and field in r.text
    r = api.http.post("/v1/periods/SKHCN/2026-01/reopen", headers=headers, json={"reason": "late documents"})
    assert r.status_code == 201, r.text  # the same request without the NUL
