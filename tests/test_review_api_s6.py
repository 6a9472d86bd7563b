"""Review of the facts API and its store (session 6): each test failed on the code before its fix.

- a hand-made page token (a number past any row id, a summary token with other than text in it) or a
  ``changed_since`` at the edge of the calendar is a 400 or 422 problem, never a 500;
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.api_support import Api, fact, make_runtime, new_key, put, serve


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
