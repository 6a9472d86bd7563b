"""Reopening a closed month: the corrections recorded while it was closed are applied, once, through the
ordinary write path (change feed included); the reopening is kept; closing again freezes it anew.

Runs on SQLite and, when reachable, on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from gateway.api.audit import AUDIT
from gateway.api.cache import store_version
from gateway.runtime import Runtime
from gateway.store.facts import FACT, write_facts
from gateway.store.periods import PeriodNotClosed, close_period, reopen_period
from gateway.types import Fact
from tests.api_support import NOW, Api, fact, make_runtime, new_key, put, serve


@pytest.fixture
def api(store_url: str, tmp_path: Path) -> Iterator[Api]:
    runtime = make_runtime(store_url, tmp_path)
    with serve(runtime) as served:
        yield served
    runtime.close()


def _page(runtime: Runtime, facts: list[Fact], *, also_origins: Sequence[Fact] = (), minutes: int = 0) -> Any:
    """A sync page: the origins of ``facts`` and ``also_origins`` now yield exactly ``facts``."""
    with runtime.db.begin() as conn:
        origins = [(f.source, f.stream, f.record_key) for f in [*facts, *also_origins]]
        return write_facts(conn, origins=origins, facts=facts, now=NOW + timedelta(minutes=minutes))


def _source_changes(runtime: Runtime) -> None:
    """What the sources say after the close: an update, a retraction, a new fact, a move to February, and a
    change that was reverted (its latest correction is a 'revert': nothing to apply)."""
    _page(runtime, [fact(3, units="5")], minutes=1)
    _page(runtime, [fact(0, units="9"), fact(5, period="2026-02"), fact(99), fact(3)], also_origins=[fact(1)],
          minutes=2)  # fmt: skip


def _state(runtime: Runtime) -> dict[str, tuple[str, str, int]]:
    """fact_key -> (state, period, units) of every fact: what a scoring front end would see."""
    with runtime.db.connect() as conn:
        rows = conn.execute(select(FACT.c.fact_key, FACT.c.state, FACT.c.period, FACT.c.units_scaled))
        return {r.fact_key: (r.state, r.period, r.units_scaled) for r in rows}


def test_reopen_applies_the_corrections_once_and_closing_again_freezes_anew(api: Api, tmp_path: Path) -> None:
    rt = api.runtime
    admin = {"X-API-Key": new_key(rt, "admin", ["SKHCN"], ("admin", "read_facts"))}
    other_admin = {"X-API-Key": new_key(rt, "snv-admin", ["SNV"], ("admin", "read_facts"))}
    reader = {"X-API-Key": new_key(rt, "reader", ["SKHCN"])}
    put(rt, [fact(n) for n in range(6)])
    closed = api.http.post("/v1/periods/SKHCN/2026-01/close", headers=admin).json()
    _source_changes(rt)
    head = api.http.get("/v1/facts/changes", headers=admin, params={"limit": 1000}).json()["next"]
    frozen = api.http.get("/v1/facts", headers=admin, params={"period": "2026-01"}).content

    reason = {"reason": "đóng kỳ sớm: còn văn bản chưa cập nhật"}
    url = "/v1/periods/SKHCN/2026-01/reopen"
    assert api.http.post("/v1/periods/SNV/2026-01/reopen", headers=admin, json=reason).status_code == 403
    assert api.http.post(url, headers=other_admin, json=reason).status_code == 403
    assert api.http.post(url, headers=reader, json=reason).status_code == 403
    assert api.http.post(url, headers=admin, json={}).status_code == 422  # a reason is required
    assert api.http.post("/v1/periods/SKHCN/2026-02/reopen", headers=admin, json=reason).status_code == 404
    assert api.http.get("/v1/facts", headers=admin, params={"period": "2026-01"}).content == frozen  # untouched

    reopened = api.http.post(url, headers=admin, json=reason)
    assert reopened.status_code == 201, reopened.text
    body = reopened.json()
    assert body["corrections_applied"] == 4 and body["digest"] == closed["digest"]  # the revert needs nothing
    assert (body["facts_inserted"], body["facts_updated"], body["facts_retracted"]) == (1, 2, 1)
    assert body["reason"] == reason["reason"] and body["reopened_by"] == "admin"

    # the facts are now what they would be had the month never been closed
    reference = make_runtime(f"sqlite:///{tmp_path / 'reference.db'}", tmp_path)
    put(reference, [fact(n) for n in range(6)])
    _source_changes(reference)
    assert _state(rt) == _state(reference)
    reference.close()
    # ... and the change feed says so, in one commit: the follower mirrors them like any sync
    changes = api.http.get("/v1/facts/changes", headers=admin, params={"after": head}).json()["items"]
    assert sorted(c["op"] for c in changes) == ["insert", "retract", "update", "update"]
    assert len({c["committed_at"] for c in changes}) == 1

    settled = api.http.get("/v1/corrections", headers=reader, params={"period": "2026-01"}).json()["items"]
    assert len(settled) == 6 and {c["settled_by_reopening"] for c in settled} == {body["id"]}
    assert api.http.get("/v1/periods/SKHCN/2026-01", headers=admin).status_code == 404  # open again
    kept = api.http.get("/v1/reopenings", headers=reader, params={"agency": "SKHCN"}).json()
    assert [(r["period"], r["digest"], r["reason"]) for r in kept["items"]] == [
        ("2026-01", closed["digest"], reason["reason"])]
    assert kept["next"] is None
    assert api.http.get("/v1/reopenings", headers=other_admin).json()["items"] == []  # scoped like every read
    assert api.http.get("/v1/reopenings", headers=other_admin, params={"agency": "SKHCN"}).status_code == 403

    # open: a source change goes straight to the facts, no correction
    assert put(rt, [fact(2, units="3")], now=NOW + timedelta(minutes=3)).corrected == 0
    again = api.http.post("/v1/periods/SKHCN/2026-01/close", headers=admin).json()
    assert again["digest"] != closed["digest"]
    check = api.http.get("/v1/periods/SKHCN/2026-01", headers=admin).json()
    assert check["reproducible"] is True
    # a second reopening applies only what was recorded after the first one
    assert put(rt, [fact(4, units="6")], now=NOW + timedelta(minutes=4)).corrected == 1
    pending = api.http.get("/v1/corrections", headers=reader, params={"period": "2026-01"}).json()["items"]
    assert [c["settled_by_reopening"] for c in pending] == [body["id"]] * 6 + [None]
    second = api.http.post(url, headers=admin, json={"reason": "lần hai"}).json()
    final = api.http.get("/v1/corrections", headers=reader, params={"period": "2026-01"}).json()["items"]
    assert final[-1]["settled_by_reopening"] == second["id"]
    assert second["corrections_applied"] == 1 and second["facts_updated"] == 1
    assert second["last_correction_id"] > body["last_correction_id"]
    assert _state(rt)["SKHCN:doc4|P0|lead"][2] == 60_000
    first = api.http.get("/v1/reopenings", headers=reader, params={"limit": 1}).json()  # keyset pages
    rest = api.http.get("/v1/reopenings", headers=reader, params={"limit": 1, "after": first["next"]}).json()
    assert [r["reason"] for r in first["items"] + rest["items"]] == [reason["reason"], "lần hai"]
    assert rest["next"] is None
    with rt.db.connect() as conn:
        logged = [orjson.loads(r.detail) for r in conn.execute(select(AUDIT.c.detail).where(
            AUDIT.c.action == "reopen_period").order_by(AUDIT.c.id))]  # fmt: skip
    assert [(d["reason"], d["corrections_applied"], d["closed_digest"]) for d in logged] == [
        (reason["reason"], 4, closed["digest"]), ("lần hai", 1, again["digest"])]


def test_reopen_keeps_a_move_into_another_closed_month_a_correction(api: Api) -> None:
    rt = api.runtime
    put(rt, [fact(n) for n in range(3)])
    put(rt, [fact(7, period="2026-02")])
    with rt.db.begin() as conn:
        for month in ("2026-01", "2026-02"):
            close_period(conn, agency="SKHCN", period=month, by="t", policy={}, now=NOW)
    assert _page(rt, [fact(1, period="2026-02")], minutes=1).corrected == 1  # January's fact 1 wants February
    before = _state(rt)
    with rt.db.begin() as conn:
        result = reopen_period(conn, agency="SKHCN", period="2026-01", by="t", reason="test", now=NOW)
    # January lets the fact go; February is still closed, so the move lands there as a correction, not a fact
    after = _state(rt)
    assert after["SKHCN:doc1|P1|lead"] == ("retracted", "2026-01", before["SKHCN:doc1|P1|lead"][2])
    assert result["facts_retracted"] == 1 and result["facts_inserted"] == 0
    corrections = api.http.get("/v1/corrections", headers={"X-API-Key": new_key(rt, "r", ["SKHCN"])},
                               params={"period": "2026-02"}).json()["items"]  # fmt: skip
    assert [(c["op"], c["fact_key"]) for c in corrections] == [("insert", "SKHCN:doc1|P1|lead")]
    with rt.db.begin() as conn, pytest.raises(PeriodNotClosed):
        reopen_period(conn, agency="SKHCN", period="2026-01", by="t", reason="twice", now=NOW)


def test_cached_reads_see_a_reopening_and_a_second_closure(store_url: str, tmp_path: Path) -> None:
    """A closure adds a frozen policy and a reopening removes it: the response cache's version must still
    never come back to an earlier value, or a summary cached under the first closure's policy would be served
    after a reopen and a close with another policy."""
    rt = make_runtime(store_url, tmp_path)
    put(rt, [fact(n, on_time=False, delays=1) for n in range(3)])
    seen = []
    with rt.db.begin() as conn:
        seen.append(store_version(conn))
        close_period(conn, agency="SKHCN", period="2026-01", by="t", policy={"late_products": "exclude"}, now=NOW)
    for step in ("reopen", "close"):
        with rt.db.begin() as conn:
            seen.append(store_version(conn))
            if step == "reopen":
                reopen_period(conn, agency="SKHCN", period="2026-01", by="t", reason="policy", now=NOW)
            else:
                close_period(conn, agency="SKHCN", period="2026-01", by="t", policy={"late_products": "deduct"},
                             now=NOW)  # fmt: skip
    with rt.db.connect() as conn:
        seen.append(store_version(conn))
    assert len(set(seen)) == len(seen), seen
    rt.close()
