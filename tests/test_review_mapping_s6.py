"""Session 6 review of the mapping engine: valuation, people, catalog import (each test failed before its fix)."""

from __future__ import annotations

import shutil
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.mapping import load_mappings
from gateway.mapping._cel import Expression, ExpressionError, ItemVars
from gateway.mapping.catalog_io import products_from_rows
from gateway.mapping.people import parse_people
from gateway.types import ItemKind, Participant, Role, WorkItem
from tests.test_mapping_value import MINI, RAW, item


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MINI, target)
    return target


def test_one_person_under_two_ids_is_one_holder(mini: Path) -> None:
    """P2 holds ioffice ids u2 and u2old (a renamed account). Before: P2 got two co_handler facts with one
    natural key and the split share was divided among three ids, so P3 got 1/6 instead of 1/4 of T-2's 0.5."""
    ms = load_mappings(mini)
    v = ms.value(item(participants=(Participant("u2", Role.LEAD), Participant("u3", Role.CO_HANDLER),
                                    Participant("u2", Role.CO_HANDLER), Participant("u2old", Role.CO_HANDLER))),
                 raw=RAW)  # fmt: skip
    keys = [f.natural_key for f in v.facts]
    assert len(keys) == len(set(keys))
    co = {f.person_id: f.units for f in v.facts if f.role is Role.CO_HANDLER}
    assert co == {"P2": Decimal("0.25"), "P3": Decimal("0.25")}


def _task(attrs: dict[str, object]) -> ItemVars:
    return ItemVars(WorkItem(key="k", kind=ItemKind.TASK, source="s", stream="t", record_key="1", agency="TEST",
                             id_system="ioffice", attributes=attrs))  # fmt: skip


def test_condition_memo_tells_true_from_one() -> None:
    """Before: the memo keyed on values that compare equal across types (True == 1 == 1.0), so once an item
    with ``flag: 1`` was seen, an item with ``flag: true`` got the memoized ``false``."""
    condition = Expression("attrs.flag == true")
    assert condition.evaluate(_task({"flag": 1})) is False
    assert condition.evaluate(_task({"flag": True})) is True
    quantity = Expression("attrs.pages / 10")
    assert quantity.evaluate(_task({"pages": 15})) == 1
    with pytest.raises(ExpressionError, match="float"):
        quantity.evaluate(_task({"pages": 15.0}))  # CEL does not divide a double by an int: the fresh answer


def test_people_dangling_reports_to_names_line_and_column() -> None:
    """Before: ``people.csv: reports_to: P2 reports to unknown P9``, without the line and column every other
    problem has (``file:line:column: key: message``, docs/mappings.md), in an HR file of thousands of rows."""
    header = "person_id,full_name,agency,unit,job_position,is_leader,reports_to,ioffice_id,onestop_user,edxml_staff\n"
    with pytest.raises(ConfigError) as info:
        parse_people(header + "P1,A,A,U,J,true,,u1,,\n\nP2,B,A,U,J,false,P9,u2,,\n", path=Path("people.csv"))
    assert str(info.value) == "people.csv:4:7: reports_to: P2 reports to unknown P9"


def test_catalog_import_refuses_a_fractional_group() -> None:
    """Before: group ``2,5`` (or ``2.7``) became group 2 without a word, int() dropping the fraction."""
    rows = [("Mã sản phẩm", "Nhiệm vụ", "Công việc chi tiết", "Sản phẩm đầu ra", "Nhóm", "Điểm"),
            ("X-1", "Soạn thảo", "Dự thảo", "Tờ trình", "2,5", "150"),
            ("X-2", "Soạn thảo", "Dự thảo", "Tờ trình", "2.0", "150"),
            ("X-3", "Soạn thảo", "Dự thảo", "Tờ trình", "Infinity", "150")]  # fmt: skip
    products, problems = products_from_rows(rows, where="dm.csv")
    assert problems == ["dm.csv:R2:C5 (group): '2,5' is not a whole number",
                        "dm.csv:R4:C5 (group): 'Infinity' is not a whole number"]  # before: OverflowError
    assert [p["group"] for p in products if "group" in p] == [2]


def test_summary_deducts_the_delays_of_an_on_time_product(tmp_path: Path) -> None:
    """DOMAIN.md §2: each delay deducts 25% of the product's timeliness points. Under the default policy
    (missed_deadline, on_time_against: final) a deadline that passed before it was extended is a delay while the
    product, done by the extended deadline, is on time. Before: on-time facts got full timeliness whatever their
    delays (fact 1: 1, not 0.75), so the delay the policy counts changed nothing."""
    from tests.api_support import fact, make_runtime, new_key, put, serve

    runtime = make_runtime(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    try:
        with serve(runtime) as api:
            key = new_key(runtime, "reader", ["SKHCN"])
            put(runtime, [
                fact(1, person="A", units="1", delays=1),                       # on time, one missed deadline
                fact(2, person="A", units="1", delays=2, exempt=True,
                     lineage={"exemptions": [{"applies_to": ["quality"]}]}),   # exempt from quality only
                fact(3, person="A", units="1", delays=1, exempt=True,
                     lineage={"exemptions": [{"applies_to": ["timeliness"]}]}),  # exempt from timeliness
                fact(4, person="A", units="1"),                                 # on time, clean
            ])  # fmt: skip
            body = api.get("/v1/summaries", key, period="2026-01", group_by="person").json()
    finally:
        runtime.close()
    (a,) = body["items"]
    assert a["units"]["timeliness"] == "3.250000"  # 0.75 + 0.5 + 1 + 1
    assert a["units"]["timeliness_deducted"] == "0.750000"
    assert a["reference"]["c_timeliness_pct"] == "81.25"


def test_a_file_not_in_utf8_is_a_problem_naming_file_and_line(mini: Path) -> None:
    """Excel saves a CSV in the Windows code page (cp1258 for Vietnamese) unless told otherwise. Before: the
    UnicodeDecodeError escaped load_mappings (not a ConfigError) and ``mappings check`` crashed with a traceback
    naming no file; now it is a problem at the file, line and column of the first undecodable byte."""
    from gateway.mapping.catalog_io import import_catalog
    from gateway.mapping.check import check_mappings
    from gateway.mapping.mappingset import MappingHolder

    holder = MappingHolder(mini)
    good = holder.current
    people = mini / "people.csv"
    people.write_bytes(people.read_text(encoding="utf-8").encode("cp1258", errors="replace"))
    report = check_mappings(mini)
    assert len(report.errors) == 1 and report.errors[0].startswith(f"{people}:2:")
    assert "UTF-8" in report.errors[0]
    with pytest.raises(ConfigError):
        holder.reload()
    assert holder.current is good
    rules = mini / "rules" / "TEST.yaml"
    rules.write_bytes(rules.read_text(encoding="utf-8").encode("cp1258", errors="replace"))
    assert any(e.startswith(f"{rules}:") and "UTF-8" in e for e in check_mappings(mini).errors)
    sheet = mini / "dm.csv"
    sheet.write_bytes(b"M\xe3 s\xe1n ph\xe2m,Nhi\xeam v\xfa\n")  # "Mã sản phẩm,Nhiệm vụ" in a code page
    with pytest.raises(ConfigError, match=r"dm\.csv:1:2: byte 0xe3 .*UTF-8"):
        import_catalog(sheet, agency="TEST", version="2027.1", effective_from=datetime(2027, 1, 1).date(),
                       standard_score=Decimal(10))  # fmt: skip


def test_people_rows_of_empty_cells_are_blank_lines() -> None:
    """A spreadsheet saved as CSV keeps its formatted empty rows as lines of commas. Before: each was
    ``person_id: empty`` and the whole directory was refused; blank lines were skipped only when truly empty."""
    header = "person_id,full_name,agency,unit,job_position,is_leader,reports_to,ioffice_id,onestop_user,edxml_staff\n"
    text = "\ufeff" + header + "P1,Lãnh Đạo Một,A,U,J,có,,u1,,\n,,,,,,,,,\n\r\n , ,,,,,,,,\n"
    directory = parse_people(text, path=Path("people.csv"))
    assert len(directory) == 1 and directory.resolve("ioffice", "u1") is not None
    with pytest.raises(ConfigError, match=r"people.csv:3:1: person_id: empty"):
        parse_people(header + "P1,A,A,U,J,true,,u1,,\n,B,A,U,J,false,,u2,,\n", path=Path("people.csv"))


def test_a_month_closed_before_on_time_delays_deducted_keeps_its_summary(tmp_path: Path) -> None:
    """A closed month's summary is reproducible byte for byte. Its policy was frozen at closing; one frozen
    before on-time products' delays were deducted has no ``on_time_delays`` member, and its month keeps the
    arithmetic it was closed under (full timeliness for an on-time product). An open month, and a month closed
    now, deduct them."""
    from gateway.store.periods import close_period
    from tests.api_support import NOW, fact, make_runtime, new_key, put, serve

    runtime = make_runtime(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    try:
        put(runtime, [fact(n, person="A", units="1", delays=1, period=p) for n, p in ((1, "2026-01"), (2, "2026-02"))])
        legacy = {"scoring_period": "month", "late_products": "deduct", "delay": "missed_deadline",
                  "days_per_delay": 1, "on_time_against": "final", "returns_are_failed_reviews": True,
                  "deduction_per_failed_review": "0.25", "deduction_per_delay": "0.25"}  # fmt: skip
        with runtime.db.begin() as conn:  # as a gateway before this change froze it
            close_period(conn, agency="SKHCN", period="2026-01", by="t", policy=legacy, now=NOW)
        with serve(runtime) as api:
            key = new_key(runtime, "reader", ["SKHCN"])

            def timeliness(period: str) -> str:
                (a,) = api.get("/v1/summaries", key, period=period, group_by="person").json()["items"]
                return str(a["units"]["timeliness"])

            assert timeliness("2026-01") == "1.000000"  # closed under the old arithmetic: unchanged
            assert timeliness("2026-02") == "0.750000"  # open: the delay deducts 25 %
            closed = api.http.post("/v1/periods/SKHCN/2026-02/close", headers={"X-API-Key": new_key(
                runtime, "admin", ["SKHCN"], ("read_facts", "admin"))})  # fmt: skip
            assert closed.status_code in (200, 201), closed.text
            assert timeliness("2026-02") == "0.750000"  # closed now: frozen with the new member
    finally:
        runtime.close()
