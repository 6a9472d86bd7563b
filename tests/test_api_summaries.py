"""Summaries (25% deductions, exemptions, policy), closed periods with corrections, CSV/XLSX export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.api.summaries import months_of
from gateway.store.facts import write_facts
from tests.api_support import NOW, Api, fact, make_runtime, new_key, put, serve


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    runtime = make_runtime(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    with serve(runtime) as served:
        yield served
    runtime.close()


def _exempt(applies_to: list[str]) -> dict[str, object]:
    return {"exemptions": [{"cause": "flood", "confirmed_by": "GĐ", "applies_to": applies_to}]}


def test_deductions_exemptions_and_reference_score(api: Api) -> None:
    key = new_key(api.runtime, "reader", ["SKHCN"])
    put(api.runtime, [
        fact(1, person="A", units="2"),                                            # on time, clean
        fact(2, person="A", units="1", failed_reviews=2),                          # quality 50%
        fact(3, person="A", units="1", on_time=False, delays=1),                   # timeliness 75%
        fact(4, person="A", units="1", on_time=False, delays=5, failed_reviews=6),  # both floored at 0
        fact(5, person="A", units="1", on_time=False, delays=2, failed_reviews=1, exempt=True,
             lineage=_exempt(["timeliness"])),                                     # timeliness exempt only
        fact(6, person="A", units="3", completed=False, done_at=None, on_time=None),  # assigned, open
        fact(7, person="A", units="0.5", assigned=False),                          # unplanned bonus
        fact(8, person="B", units="1"),
    ])  # fmt: skip
    body = api.get("/v1/summaries", key, period="2026-01", group_by="person").json()
    a = next(s for s in body["items"] if s["person_id"] == "A")
    assert a["units"]["assigned"] == "9.0000"  # 2+1+1+1+1+3
    assert a["units"]["completed"] == "6.5000"  # 2+1+1+1+1+0.5
    # quality: 2 + 0.5 + 1 + 0 + 0.75 (fact 5: 1 review, not quality-exempt) + 0.5
    assert a["units"]["quality"] == "4.750000"
    # timeliness: 2 + 1 + 0.75 + 0 + 1 (exempt) + 0.5
    assert a["units"]["timeliness"] == "5.250000"
    assert a["counts"] == {"facts": 7, "assigned": 6, "completed": 6, "on_time": 3, "late": 3, "delays": 8,
                           "failed_reviews": 9, "facts_with_failed_reviews": 3, "delayed": 3, "exempt": 1}  # fmt: skip
    ref = a["reference"]
    assert ref["label"].startswith("REFERENCE ONLY")
    assert (ref["a_quantity_pct"], ref["b_quality_pct"], ref["c_timeliness_pct"]) == ("72.22", "52.78", "58.33")
    assert ref["task_score_70"] == "42.78"  # (72.22+52.78+58.33)/3 * 0.7
    units = api.get("/v1/summaries", key, period="2026-Q1", group_by="unit").json()["items"]
    assert len(units) == 1 and units[0]["units"]["assigned"] == "10.0000" and units[0]["months"] == ["2026-01"]


def test_excluded_late_products_and_months(api: Api) -> None:
    assert months_of("2026-Q2") == ["2026-04", "2026-05", "2026-06"] and len(months_of("2026")) == 12
    key = new_key(api.runtime, "reader", ["*"])
    assert api.get("/v1/summaries", key, period="2026-13").status_code == 422


def test_closed_period_is_frozen_and_changes_become_corrections(api: Api) -> None:
    rt = api.runtime
    admin = new_key(rt, "admin", ["SKHCN"], ("admin", "read_facts"))
    put(rt, [fact(n) for n in range(6)])
    summary_before = api.get("/v1/summaries", admin, period="2026-01", group_by="person").content
    facts_before = api.get("/v1/facts", admin, period="2026-01").content
    closed = api.http.post("/v1/periods/SKHCN/2026-01/close", headers={"X-API-Key": admin})
    assert closed.status_code == 201 and closed.json()["fact_count"] == 6
    assert api.http.post("/v1/periods/SKHCN/2026-01/close", headers={"X-API-Key": admin}).status_code == 409
    # the source changes: one fact's units, one retraction, one new fact in the closed month, one move out
    page = [fact(0, units="9"), fact(2), fact(3), fact(4), fact(5, period="2026-02"), fact(99)]
    page_origins = [*page, fact(1)]  # fact 1's record now yields nothing: a retraction
    def write() -> object:
        with rt.db.begin() as conn:
            return write_facts(conn, origins=[(f.source, f.stream, f.record_key) for f in page_origins],
                               facts=page, now=NOW)  # fmt: skip

    result = write()
    assert result.corrected == 4 and result.inserted == 0 and result.updated == 0  # type: ignore[attr-defined]
    assert write().corrected == 0  # type: ignore[attr-defined]  # idempotent: re-reading records nothing new
    assert api.get("/v1/summaries", admin, period="2026-01", group_by="person").content == summary_before
    assert api.get("/v1/facts", admin, period="2026-01").content == facts_before
    check = api.get("/v1/periods/SKHCN/2026-01", admin).json()
    assert check["reproducible"] is True and check["digest_now"] == closed.json()["digest"]
    corrections = api.get("/v1/corrections", admin, agency="SKHCN", period="2026-01").json()["items"]
    assert sorted(c["op"] for c in corrections) == ["insert", "retract", "update", "update"]
    moved = next(c for c in corrections if c["proposed"]["period"] == "2026-02")
    assert moved["op"] == "update" and moved["fact_id"] is not None
    detail = api.get(f"/v1/facts/{moved['fact_id']}", admin).json()
    assert detail["closure"]["period"] == "2026-01" and len(detail["corrections"]) == 1
    # the source goes back to the frozen values: a 'revert' correction, once
    with rt.db.begin() as conn:
        back = write_facts(conn, origins=[(f.source, f.stream, f.record_key) for f in [fact(0)]], facts=[fact(0)],
                           now=NOW)  # fmt: skip
    assert back.corrected == 1
    ops = [c["op"] for c in api.get("/v1/corrections", admin, period="2026-01").json()["items"]]
    assert ops.count("revert") == 1
    # a fact moving from an open month into the closed one: retracted where it was, a correction where it goes
    put(rt, [fact(50, period="2026-03")])
    moved_in = put(rt, [fact(50, period="2026-01")])
    assert moved_in.retracted == 1 and moved_in.corrected == 1


def test_export_csv_and_xlsx(api: Api) -> None:
    from openpyxl import load_workbook

    key = new_key(api.runtime, "reader", ["SKHCN"])
    put(api.runtime, [fact(n, person=f"P{n}", record_key=f"r{n}", item_key=f"=HYPERLINK(\"x\")-{n}") for n in range(5)])
    params = {"agency": "SKHCN", "unit": "SKHCN.VP", "period": "2026-01"}
    r = api.get("/v1/export", key, **params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert len(rows) == 5 and rows[0]["units"] == "1.5000"
    assert all(row["item_key"].startswith("'=") for row in rows)  # never a live formula
    assert api.get("/v1/export", key, **params).content == r.content  # deterministic
    summ = api.get("/v1/export", key, table="summaries", **params).content.decode("utf-8-sig")
    assert len(list(csv.DictReader(io.StringIO(summ)))) == 6  # the unit + 5 people
    x = api.get("/v1/export", key, format="xlsx", **params)
    book = load_workbook(io.BytesIO(x.content))
    assert book.sheetnames == ["facts", "summaries"] and book["facts"].max_row == 6


def test_scope_is_enforced_in_sql_when_an_agency_is_named(store_url: str, tmp_path: Path) -> None:
    """A named agency is checked against the scope in SQL too (``:agency IN scope``, not on the column: see
    ``_statements``), so summarize itself, with no route in front, returns nothing outside the scope."""
    from gateway.api.summaries import summarize
    from gateway.security.principal import Scope

    runtime = make_runtime(store_url, tmp_path)
    try:
        put(runtime, [fact(n) for n in range(4)] + [fact(n, agency="SNV", unit="SNV.TCCB") for n in range(4, 8)])
        with runtime.db.connect() as conn:
            def groups(scope: Scope, agency: str | None) -> list[str]:
                return [g["agency"] for g in summarize(conn, scope=scope, group_by="agency", period="2026-01",
                                                       policy_for=lambda _a: {"late_products": "deduct"},
                                                       agency=agency)]  # fmt: skip

            assert groups(Scope(frozenset({"SNV"})), "SKHCN") == []
            assert groups(Scope(frozenset()), "SKHCN") == []
            assert groups(Scope(frozenset({"SNV", "SKHCN"})), "SKHCN") == ["SKHCN"]
            assert groups(Scope(frozenset({"SNV"})), None) == ["SNV"]
            assert groups(Scope(frozenset()), None) == []
            assert groups(Scope(frozenset({"SNV", "SKHCN", "XA_COCSAN"})), None) == ["SKHCN", "SNV"]
            assert groups(Scope(None), None) == ["SKHCN", "SNV"]
    finally:
        runtime.close()
