"""Re-mapping from the raw archive, explaining facts and records, coverage, and the CLI (SQLite store)."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from gateway.errors import NormalizeError
from gateway.mapping import load_mappings
from gateway.mapping.cli import MappingCliContext, register
from gateway.mapping.coverage import coverage
from gateway.mapping.explain import explain_fact, explain_record, facts_as_of
from gateway.mapping.remap import remap
from gateway.store import make_engine, migrate
from gateway.store.facts import write_facts
from gateway.store.models import FactRow
from gateway.store.records import RAW, archive, save_work_items
from gateway.types import VN_TZ, ItemKind, Participant, Role, SourceRecord, WorkItem

MINI = Path(__file__).parent / "fixtures" / "mapping" / "mini"
NOW = datetime(2026, 3, 1, tzinfo=UTC)
FACT = FactRow.__table__  # type: ignore[attr-defined]


def normalize(record: SourceRecord) -> Sequence[WorkItem]:
    """A stand-in connector's normalize: the payload says kind, type and who did what."""
    p: dict[str, Any] = dict(record.payload)
    if p.get("broken"):
        raise NormalizeError("broken payload", record_key=record.key)
    return [WorkItem(
        key=f"t:{record.key}", kind=ItemKind(p["kind"]), source=record.source, stream=record.stream,
        record_key=record.key, agency="TEST", id_system="ioffice", doc_type=p.get("type"),
        received_at=datetime(2026, 2, 2, 8, tzinfo=VN_TZ), done_at=datetime(2026, 2, 5, 8, tzinfo=VN_TZ),
        participants=tuple(Participant(u, Role(r)) for u, r in p["people"]),
    )]  # fmt: skip


RECORDS = [
    SourceRecord("eoffice", "docs", "1", {"kind": "incoming_document", "type": "CV", "people": [["u2", "lead"]]}),
    SourceRecord("eoffice", "docs", "2", {"kind": "outgoing_document", "type": "TTr",
                                          "people": [["u2", "drafter"], ["u1", "approver"]]}),
    SourceRecord("eoffice", "docs", "3", {"kind": "task", "people": [["ghost", "lead"]]}),
    SourceRecord("eoffice", "docs", "4", {"broken": True}),
]  # fmt: skip


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MINI, target)
    return target


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    return engine


def sync(engine: Engine, mappings_dir: Path) -> None:
    """What the sync engine does for one page (archive, normalize, value, write), in one transaction."""
    ms = load_mappings(mappings_dir)
    with engine.begin() as conn:
        archived = archive(conn, RECORDS, fetched_at=NOW, run_id=None)
        facts, origins, items = [], [], []
        for a in archived:
            try:
                produced = normalize(a.record)
            except NormalizeError:
                continue
            origins.append((a.record.source, a.record.stream, a.record.key))
            for item in produced:
                v = ms.value(item, raw={"content_hash": a.content_hash})
                facts.extend(v.facts)
                items.append((item, v.match_status, "; ".join(f"{p.kind}: {p.detail}" for p in v.problems) or None))
        write_facts(conn, origins=origins, facts=facts, now=NOW)
        save_work_items(conn, items, now=NOW)


def test_remap_dry_run_then_apply(engine: Engine, mini: Path) -> None:
    sync(engine, mini)
    ms = load_mappings(mini)
    with engine.connect() as conn:
        same = remap(conn, mappings=ms, normalizer_for=lambda _s: normalize, now=NOW)
    assert same.records == 4
    assert same.normalize_failed == 1
    assert {a: (d.added, d.changed, d.retracted) for a, d in same.per_agency.items()} == {"TEST": (0, 0, 0)}

    catalog = mini / "catalogs" / "TEST" / "2026.1.yaml"  # the appraisal doubles T-3
    catalog.write_text(catalog.read_text(encoding="utf-8").replace(
        "sub_scores: {difficulty: 40, process: 30, coordination: 20, scope: 30}", "score: 240").replace(
        "group: 2,\n", "group: 3,\n"), encoding="utf-8")  # fmt: skip
    rules = mini / "rules" / "TEST.yaml"  # and approvers are no longer credited
    rules.write_text(rules.read_text(encoding="utf-8").replace(
        "      approver: {product: T-4, share: 0.5}\n", ""), encoding="utf-8")  # fmt: skip
    changed = load_mappings(mini)
    with engine.connect() as conn:
        dry = remap(conn, mappings=changed, normalizer_for=lambda _s: normalize, now=NOW)
        before = conn.execute(select(FACT.c.fact_key, FACT.c.units_scaled, FACT.c.state)).all()
    diff = dry.per_agency["TEST"]
    assert (diff.added, diff.changed, diff.retracted) == (0, 1, 1)
    assert diff.unchanged == 2  # same values under the new mappings version: nothing to write
    with engine.begin() as conn:
        remap(conn, mappings=changed, normalizer_for=lambda _s: normalize, apply=True, now=NOW)
    with engine.connect() as conn:
        after = {r.fact_key: (r.units_scaled, r.state) for r in conn.execute(select(FACT))}
        assert after["t:2|P2|drafter"] == (120_000, "active")
        assert after["t:2|P1|approver"][1] == "retracted"
        assert len(before) == len(after)
        again = remap(conn, mappings=changed, normalizer_for=lambda _s: normalize, now=NOW)
        assert again.per_agency["TEST"].touched == 0
        # the history reproduces the period as it was before the remap
        first_seq = 4  # the first sync wrote facts 1..4 (lead, leader, drafter, approver)
        old = {s["fact_key"]: s["units"] for s in facts_as_of(conn, agency="TEST", period="2026-02", seq=first_seq)}
        assert old["t:2|P2|drafter"] == "6.0000"
        assert "t:2|P1|approver" in old


def test_explain_fact_and_record(engine: Engine, mini: Path) -> None:
    sync(engine, mini)
    ms = load_mappings(mini)
    with engine.connect() as conn:
        fact_id = conn.execute(select(FACT.c.id).where(FACT.c.fact_key == "t:2|P2|drafter")).scalar_one()
        out = explain_fact(conn, fact_id, mappings=ms)
        assert out["rule"]["id"] == "t.di.to-trinh"
        assert out["catalog"]["version"] == "2026.1"
        assert out["person"]["user_id"] == "u2"
        assert out["raw_record"] is not None
        assert [h["op"] for h in out["history"]] == ["insert"]
        assert out["current_rule"]["file"] == "rules/TEST.yaml"
        assert explain_fact(conn, 999_999) == {}
        rec = explain_record(conn, ms, normalize, "eoffice", "docs", "3")
        (item,) = rec["items"]
        assert item["match_status"] == "unmatched"
        rec = explain_record(conn, ms, normalize, "eoffice", "docs", "2")
        assert {f["role"] for f in rec["items"][0]["facts"]} == {"drafter", "approver"}
        assert len(rec["stored_facts"]) == 2


def test_coverage(engine: Engine, mini: Path) -> None:
    sync(engine, mini)
    with engine.connect() as conn:
        report = coverage(conn)
    (row,) = report["by_agency_source"]
    assert (row["total"], row["mapped"], row["unmatched"]) == (3, 2, 1)
    assert report["unmatched_patterns"][0]["pattern"].startswith("TEST task")


def test_cli_commands(engine: Engine, mini: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sync(engine, mini)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    ctx = MappingCliContext(mappings_dir=mini, engine_factory=lambda: engine, normalizer_for=lambda _s: normalize)

    def run(*argv: str) -> int:
        args = parser.parse_args(argv)
        args.ctx = ctx
        return int(args.func(args))

    assert run("mappings", "check") == 0
    assert run("mappings", "test") == 0
    assert run("mappings", "coverage") == 0
    assert run("mappings", "explain", "--record", "eoffice/docs/2") == 0
    assert run("mappings", "schema", "--out", str(tmp_path / "schemas")) == 0
    assert (tmp_path / "schemas" / "mapping-rules.schema.json").exists()
    assert run("mappings", "export-catalog", "TEST", str(tmp_path / "t.xlsx")) == 0
    assert run("remap") == 0
    assert "dry run" in capsys.readouterr().out
    assert run("remap", "--apply") == 0
    broken = "agency: TEST\nrules: [{id: x, match: {kind: task}}]\n"
    (mini / "rules" / "TEST.yaml").write_text(broken, encoding="utf-8")
    assert run("mappings", "check") == 1
    assert "TEST.yaml:2:9: rules.0: Value error, give exactly one of product" in capsys.readouterr().out


def test_the_archive_keeps_the_sources_key_order_and_remap_sees_it(engine: Engine, mini: Path) -> None:
    """A record is archived as the source sent it, keys in its order, under a hash of its canonical (sorted)
    form: the same content in another order is the same version. Re-mapping then hands a normalizer the payload
    a live sync handed it; before, it got sorted keys, and a field map that stringifies an object built a
    different work item there than in the live sync."""
    from gateway.store.records import encode_payload

    sent = {"kind": "task", "people": [["u2", "lead"]], "subject": {"vi": "Văn bản", "en": "Document"}}
    reordered = {"subject": {"en": "Document", "vi": "Văn bản"}, "people": [["u2", "lead"]], "kind": "task"}
    as_sent, digest = encode_payload(sent)
    assert list(orjson.loads(as_sent)) == ["kind", "people", "subject"]
    assert list(orjson.loads(as_sent)["subject"]) == ["vi", "en"]
    assert encode_payload(reordered)[1] == digest

    seen: list[str] = []

    def stringify(record: SourceRecord) -> Sequence[WorkItem]:
        seen.append(orjson.dumps(record.payload["subject"]).decode())
        return normalize(record)

    with engine.begin() as conn:
        archive(conn, [SourceRecord("eoffice", "docs", "9", sent)], fetched_at=NOW, run_id=None)
        archive(conn, [SourceRecord("eoffice", "docs", "9", reordered)], fetched_at=NOW, run_id=None)  # same version
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(RAW)).scalar_one() == 1
        remap(conn, mappings=load_mappings(mini), normalizer_for=lambda _s: stringify, now=NOW)
    assert seen == ['{"vi":"Văn bản","en":"Document"}']
