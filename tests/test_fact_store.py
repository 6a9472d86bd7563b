"""write_facts directly: identity, idempotency, retraction, and one fact when two systems report one document."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import orjson
from sqlalchemy import Engine, select

from gateway.store.facts import CHANGE, FACT, snapshot, write_facts
from gateway.types import Fact, Role
from tests.spine_support import count, rows

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _fact(person: str = "P0001", role: Role = Role.LEAD, **changes: object) -> Fact:
    base = Fact(
        item_key="doc:SKHCN:in:000.00.00.G22:1/QĐ-UBND", person_id=person, role=role, agency="SKHCN",
        unit="SKHCN-VP", period="2026-10", product_code="KHCN-N1-01", catalog_version="2026.1", rule_id="r1",
        units=Decimal("1.5"), quantity=Decimal(1), assigned=True, completed=True, due_at=None, done_at=NOW,
        on_time=True, delays=0, failed_reviews=0, exempt=False, source="eoffice", stream="incoming",
        record_key="42", lineage={"raw": {"content_hash": "a"}},
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def _write(db: Engine, origins: list[tuple[str, str, str]], facts: list[Fact]):  # type: ignore[no-untyped-def]
    with db.begin() as conn:
        return write_facts(conn, origins=origins, facts=facts, now=NOW)


def test_identity_idempotency_update_and_retraction(db: Engine) -> None:
    origin = [("eoffice", "incoming", "42")]
    first = _write(db, origin, [_fact(), _fact("P0002", Role.CO_HANDLER)])
    assert (first.inserted, first.updated, first.retracted) == (2, 0, 0)
    again = _write(db, origin, [_fact(), _fact("P0002", Role.CO_HANDLER)])
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
    # only the record's bookkeeping changed (a new raw version): no write, no change
    quiet = _write(db, origin, [_fact(lineage={"raw": {"content_hash": "b"}}), _fact("P0002", Role.CO_HANDLER)])
    assert quiet.written == 0
    late = _write(db, origin, [_fact(on_time=False, delays=1)])  # completed late; the co-handler was removed
    assert (late.inserted, late.updated, late.retracted) == (0, 1, 1)
    ops = [r["op"] for r in rows(db, "SELECT op FROM fact_change ORDER BY seq")]
    assert ops == ["insert", "insert", "update", "retract"]
    versions = rows(db, "SELECT fact_key, version, state FROM fact ORDER BY id")
    assert [(v["version"], v["state"]) for v in versions] == [(2, "active"), (2, "retracted")]


def test_the_same_document_from_two_systems_is_one_fact(db: Engine) -> None:
    _write(db, [("eoffice", "incoming", "42")], [_fact()])
    hub = _fact(source="edoc-hub", stream="documents", record_key="000.00.00.G22,2026/10/01,1/QĐ-UBND",
                lineage={"raw": {"content_hash": "hub"}})  # fmt: skip
    second = _write(db, [("edoc-hub", "documents", hub.record_key)], [hub])
    assert second.written == 0
    assert count(db, "SELECT count(*) FROM fact") == 1
    assert count(db, "SELECT count(*) FROM fact_change") == 1


def test_change_feed_snapshots_are_snapshot_of_the_fact_byte_for_byte(db: Engine) -> None:
    """The writer splices prepared snapshot parts: each change must equal ``snapshot()`` of the fact it made."""
    origin = [("eoffice", "incoming", "42")]
    later = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)
    _write(db, origin, [_fact(due_at=None, done_at=None, completed=False, on_time=None),
                        _fact("P0002", Role.CO_HANDLER, item_key='doc:"quoted"\\ và tiếng Việt')])  # fmt: skip
    with db.begin() as conn:  # an update with other dates, units and lineage; the co-handler is retracted
        write_facts(conn, origins=origin, facts=[_fact(due_at=NOW, done_at=later, units=Decimal("-0.25"),
                                                       lineage={"z": 1, "a": ["x", None]})], now=later)  # fmt: skip
    with db.connect() as conn:
        changes: dict[int, str] = dict(conn.execute(select(CHANGE.c.seq, CHANGE.c.snapshot)).all())
        facts = [r._asdict() for r in conn.execute(select(FACT))]
    assert len(facts) == 2
    for fact in facts:
        assert changes[fact["change_seq"]] == orjson.dumps(snapshot(fact)).decode()
    history = [orjson.loads(changes[seq]) for seq in sorted(changes)]
    assert [(h["state"], h["version"]) for h in history] == [("active", 1), ("active", 1), ("active", 2),
                                                             ("retracted", 2)]  # fmt: skip
