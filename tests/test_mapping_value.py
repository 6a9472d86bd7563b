"""MappingSet.value(): rules, catalog versions, people, policy variants, exemptions, lineage."""

from __future__ import annotations

import shutil
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.mapping import load_mappings
from gateway.types import VN_TZ, Event, EventKind, ItemKind, Participant, Role, WorkItem

MINI = Path(__file__).parent / "fixtures" / "mapping" / "mini"
SHIPPED = Path(__file__).resolve().parents[1] / "mappings"
RAW = {"content_hash": "abc123"}


def at(day: int, month: int = 2, hour: int = 9) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=VN_TZ)


def item(**kw: object) -> WorkItem:
    base: dict[str, object] = {
        "key": "ioffice:TEST:1", "kind": ItemKind.INCOMING_DOCUMENT, "source": "eoffice", "stream": "documents",
        "record_key": "1", "agency": "TEST", "id_system": "ioffice", "doc_type": "Công văn", "received_at": at(2),
        "due_at": at(10), "participants": (Participant("u2", Role.LEAD),),
    }  # fmt: skip
    base.update(kw)
    return WorkItem(**base)  # type: ignore[arg-type]


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MINI, target)
    return target


def with_policy(directory: Path, text: str) -> Path:
    (directory / "policy.yaml").write_text(text, encoding="utf-8")
    return directory


def test_lineage_and_values(mini: Path) -> None:
    ms = load_mappings(mini)
    v = ms.value(item(done_at=at(9)), raw=RAW)
    assert v.match_status == "mapped"
    lead = next(f for f in v.facts if f.role is Role.LEAD)
    assert (lead.person_id, lead.product_code, lead.units, lead.period) == ("P2", "T-1", Decimal(1), "2026-02")
    assert (lead.completed, lead.on_time, lead.delays, lead.catalog_version) == (True, True, 0, "2026.1")
    assert lead.lineage["raw"] == {"source": "eoffice", "stream": "documents", "record_key": "1",
                                   "content_hash": "abc123"}  # fmt: skip
    assert lead.lineage["rule"] == {"id": "t.den", "file": "rules/TEST.yaml", "line": 3}
    assert lead.lineage["catalog"] == {"agency": "TEST", "version": "2026.1", "effective_from": "2026-01-01"}
    assert lead.lineage["person"] == {"system": "ioffice", "user_id": "u2", "person_id": "P2",
                                      "directory_version": ms.directory.version}  # fmt: skip
    assert lead.lineage["mappings_version"] == ms.version
    leader = next(f for f in v.facts if f.role is Role.DIRECTING_LEADER)
    assert leader.person_id == "P1"
    assert leader.lineage["person"]["system"] == "reports_to"


def test_catalog_version_follows_the_credited_date(mini: Path) -> None:
    ms = load_mappings(mini)
    outgoing = item(kind=ItemKind.OUTGOING_DOCUMENT, doc_type="Tờ trình", due_at=at(10, 7), done_at=at(3, 7),
                    participants=(Participant("u2", Role.DRAFTER), Participant("u1", Role.APPROVER)),
                    attributes={"pages": 25})  # fmt: skip
    july = {f.role: f for f in ms.value(outgoing, raw=RAW).facts}
    assert july[Role.DRAFTER].catalog_version == "2026.2"
    assert july[Role.DRAFTER].units == Decimal("12") * Decimal("2.5")
    assert july[Role.APPROVER].units == Decimal("15") * Decimal("2.5") * Decimal("0.5")
    june = {f.role: f for f in ms.value(item(kind=ItemKind.OUTGOING_DOCUMENT, doc_type="TTr", done_at=at(30, 6),
                                             participants=(Participant("u2", Role.DRAFTER),)), raw=RAW).facts}
    assert june[Role.DRAFTER].catalog_version == "2026.1"
    assert june[Role.DRAFTER].units == Decimal("6")
    assert ms.catalog_for("TEST", date(2025, 12, 31)) is None


def test_revoked_skip_unmatched_and_no_catalog(mini: Path) -> None:
    ms = load_mappings(mini)
    assert ms.value(item(revoked=True), raw=RAW).facts == []
    skipped = ms.value(item(kind=ItemKind.OUTGOING_DOCUMENT, doc_type="TB"), raw=RAW)
    assert (skipped.facts, skipped.unmatched, skipped.rule_id) == ([], False, "t.di.thong-bao")
    unmatched = ms.value(item(kind=ItemKind.TASK), raw=RAW)
    assert unmatched.unmatched
    assert unmatched.match_status == "unmatched"
    assert [p.kind for p in unmatched.problems] == ["no_rule"]
    assert not unmatched.quarantine
    old = ms.value(item(received_at=at(2, 1).replace(year=2025), due_at=None), raw=RAW)
    assert old.facts == []
    assert [p.kind for p in old.problems] == ["no_catalog"]
    assert old.quarantine


def test_unresolved_people_are_reported_never_guessed(mini: Path) -> None:
    ms = load_mappings(mini)
    v = ms.value(item(participants=(Participant("u2", Role.LEAD), Participant("ghost", Role.CO_HANDLER))), raw=RAW)
    assert [f.person_id for f in v.facts if f.role is not Role.DIRECTING_LEADER] == ["P2"]
    (problem,) = v.problems
    assert (problem.kind, problem.quarantine, problem.subject) == ("unresolved_person", True, "ioffice:ghost")
    assert v.match_status == "partial"


def test_missed_deadlines_extensions_and_days_late(mini: Path) -> None:
    events = (
        Event(EventKind.ASSIGN, at(2), "u1", "u2", due_at=at(5)),
        Event(EventKind.DEADLINE_CHANGE, at(6), "u1", None, due_at=at(10)),
    )
    late = item(events=events, due_at=at(10), done_at=at(20))
    policies = {
        "missed_deadline": 2,  # the first deadline passed before the extension; the second before done
        "extension": 2,  # one extension + the final late finish
        "days_late": 2,  # 10 days late / 5 per delay
    }
    for count, expected in policies.items():
        ms = load_mappings(with_policy(mini, f"default: {{delay: {{count: {count}}}}}\n"))
        lead = next(f for f in ms.value(late, raw=RAW).facts if f.role is Role.LEAD)
        assert lead.delays == expected, count
        assert lead.on_time is False


def test_on_time_against_the_original_deadline(mini: Path) -> None:
    events = (Event(EventKind.ASSIGN, at(2), target="u2", due_at=at(5)),
              Event(EventKind.DEADLINE_CHANGE, at(4), due_at=at(10)))  # fmt: skip
    done = item(events=events, due_at=at(10), done_at=at(8))
    final = load_mappings(mini).value(done, raw=RAW).facts[0]
    assert (final.on_time, final.delays) == (True, 0)
    ms = load_mappings(with_policy(mini, "default: {on_time_against: original}\n"))
    original = ms.value(done, raw=RAW).facts[0]
    assert original.on_time is False


def test_returns_as_failed_reviews_is_a_policy(mini: Path) -> None:
    draft = item(kind=ItemKind.OUTGOING_DOCUMENT, doc_type="Tờ trình", done_at=at(9),
                 participants=(Participant("u2", Role.DRAFTER), Participant("u1", Role.APPROVER)),
                 attributes={"returns": 2})  # fmt: skip
    facts = {f.role: f for f in load_mappings(mini).value(draft, raw=RAW).facts}
    assert (facts[Role.DRAFTER].failed_reviews, facts[Role.APPROVER].failed_reviews) == (2, 0)
    ms = load_mappings(with_policy(mini, "default: {returns_are_failed_reviews: false}\n"))
    assert all(f.failed_reviews == 0 for f in ms.value(draft, raw=RAW).facts)


def test_credit_month_and_scoring_period_per_agency(mini: Path) -> None:
    ms = load_mappings(with_policy(mini, (
        "default: {credit_date: {completed: [due_at, done_at]}}\n"
        "agencies:\n  TEST: {scoring_period: quarter}\n"
    )))  # fmt: skip
    fact = ms.value(item(due_at=at(27, 2), done_at=at(2, 3)), raw=RAW).facts[0]
    assert fact.period == "2026-02"
    assert ms.policy_for("TEST").scoring_period == "quarter"
    assert ms.policy_for("OTHER").scoring_period == "month"
    assert fact.lineage["policy"]["scoring_period"] == "quarter"
    default = load_mappings(with_policy(mini, "default: {}\n")).value(item(due_at=at(27, 2), done_at=at(2, 3)),
                                                                       raw=RAW).facts[0]
    assert default.period == "2026-03"


def test_unplanned_work_can_be_a_bonus(mini: Path) -> None:
    ms = load_mappings(with_policy(mini, "default: {unplanned: {assigned: false}}\n"))
    fact = ms.value(item(attributes={"unplanned": True}), raw=RAW).facts[0]
    assert fact.assigned is False


def test_exemptions_mark_facts(mini: Path) -> None:
    (mini / "exemptions.yaml").write_text(
        "exemptions:\n  - {item_key: 'ioffice:TEST:1', person_id: P2, cause: Mất điện diện rộng,\n"
        "     confirmed_by: P1 Giám đốc, confirmed_at: 2026-02-11, applies_to: [timeliness]}\n",
        encoding="utf-8",
    )
    facts = {f.person_id: f for f in load_mappings(mini).value(item(), raw=RAW).facts}
    assert facts["P2"].exempt is True
    assert facts["P2"].lineage["exemptions"][0]["confirmed_by"] == "P1 Giám đốc"
    assert facts["P1"].exempt is False


def test_quantity_expression_failure_is_a_problem_not_an_exception(mini: Path) -> None:
    ms = load_mappings(mini)
    bad = item(kind=ItemKind.OUTGOING_DOCUMENT, doc_type="TTr", participants=(Participant("u2", Role.DRAFTER),),
               attributes={"pages": "many"})  # fmt: skip
    v = ms.value(bad, raw=RAW)
    assert v.facts == []
    assert [p.kind for p in v.problems] == ["invalid_value"]
    assert v.quarantine


def test_shipped_mappings_value_realistic_items() -> None:
    ms = load_mappings(SHIPPED)
    person = next(p for p in _people_rows() if p["agency"] == "SKHCN" and p["ioffice_id"])
    doc = WorkItem(
        key="ioffice:SKHCN:156/QĐ-UBND", kind=ItemKind.INCOMING_DOCUMENT, source="eoffice", stream="documents",
        record_key="156", agency="SKHCN", id_system="ioffice", doc_type="Quyết định", number_symbol="156/QĐ-UBND",
        received_at=at(2), due_at=at(12), done_at=at(11),
        participants=(Participant(person["ioffice_id"], Role.LEAD),), attributes={"urgency": "thường"},
    )  # fmt: skip
    v = ms.value(doc, raw=RAW)
    assert v.rule_id == "skhcn.den.chi-dao"
    assert any(f.person_id == person["person_id"] and f.product_code == "KHCN-N2-01" for f in v.facts)
    urgent = ms.value(WorkItem(**{**_fields(doc), "attributes": {"urgency": "hỏa tốc"}}), raw=RAW)
    assert urgent.rule_id == "skhcn.den.khan"


def _fields(w: WorkItem) -> dict[str, object]:
    return {name: getattr(w, name) for name in w.__dataclass_fields__}


def _people_rows() -> list[dict[str, str]]:
    import csv

    with (SHIPPED / "people.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
