"""The reopening's write-path cases a second review proved: corrections that would repeat on every sync, moves
that change agency, stale corrections, the extra cost of an ordinary re-read, and migration 7's partial index
being usable on both backends. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, select

from gateway.runtime import Runtime
from gateway.store.facts import CORRECTION, FACT
from tests.api_support import close_month as _close
from tests.api_support import fact, make_runtime, put
from tests.api_support import reopen_month as _reopen
from tests.api_support import write_records as _write


def _corrections(rt: Runtime) -> list[tuple[str, str, str]]:
    with rt.db.connect() as conn:
        return [(r.op, r.agency, r.period) for r in conn.execute(
            select(CORRECTION.c.op, CORRECTION.c.agency, CORRECTION.c.period).order_by(CORRECTION.c.id))]  # fmt: skip


def test_a_fact_that_changed_records_does_not_add_corrections_at_every_resync(store_url: str,
                                                                                tmp_path: Path) -> None:  # fmt: skip
    """Fact 0 comes from record A in January (open). The source now gives it from record B, in February (closed):
    retracted in January, an 'insert' correction in February. Nothing changes after that: A keeps yielding
    nothing for it and B keeps yielding the same values. Re-syncing A and B must record nothing more; since
    7b200b3 every re-read of A records a 'retract' (A is not the record that moved the fact) and every re-read
    of B then records the 'insert' again: the correction table grows with every sync while February is closed."""
    rt = make_runtime(store_url, tmp_path)
    try:
        put(rt, [fact(0, record="A")])
        _close(rt, "2026-02")
        moved = fact(0, record="B", period="2026-02")
        assert _write(rt, ["B"], [moved], 1).corrected == 1
        before = _corrections(rt)
        for minute in range(2, 8, 2):  # three ordinary rounds of re-syncs, nothing changed at the source
            _write(rt, ["A"], [], minute)
            _write(rt, ["B"], [moved], minute + 1)
        after = _corrections(rt)
        assert after == before, after
    finally:
        rt.close()


def test_a_fact_moved_into_another_agencys_closed_month_then_dropped_stays_retracted(
    store_url: str, tmp_path: Path
) -> None:
    """7b200b3's case (moved into a closed month, then dropped by its record) when the move also changed the
    agency: record R moves fact 0 from SKHCN January (open) to SNV February (closed for SNV), then yields
    nothing. _moved_in_then_dropped checks (the retracted row's agency, correction period) = (SKHCN, 2026-02),
    not the correction's own agency, so no retract is recorded and reopening SNV February applies the move."""
    rt = make_runtime(store_url, tmp_path)
    key = "SKHCN:doc0|P0|lead"
    try:
        put(rt, [fact(0, record="R")])
        _close(rt, "2026-02", agency="SNV")
        assert _write(rt, ["R"], [fact(0, record="R", agency="SNV", period="2026-02", item_key="SKHCN:doc0",
                                       unit="SNV.VP")], 1).corrected == 1  # fmt: skip
        _write(rt, ["R"], [], 2)  # R now yields nothing
        _reopen(rt, "2026-02", 3, agency="SNV")
        with rt.db.connect() as conn:
            row = conn.execute(select(FACT.c.state, FACT.c.agency, FACT.c.period).where(FACT.c.fact_key == key)).one()
        assert row.state == "retracted", (tuple(row), _corrections(rt))
    finally:
        rt.close()


def test_the_retract_correction_goes_to_the_agency_it_was_moved_to(store_url: str,
                                                                               tmp_path: Path) -> None:  # fmt: skip
    """Same move, with February closed for both agencies: the retract correction is recorded under SKHCN
    (the retracted row's agency), a month where the fact never was; SNV February keeps the move as its last
    word, so reopening SNV February resurrects a fact its record dropped."""
    rt = make_runtime(store_url, tmp_path)
    key = "SKHCN:doc0|P0|lead"
    try:
        put(rt, [fact(0, record="R")])
        _close(rt, "2026-02", agency="SNV")
        _close(rt, "2026-02", agency="SKHCN")
        _write(rt, ["R"], [fact(0, record="R", agency="SNV", period="2026-02", item_key="SKHCN:doc0",
                                unit="SNV.VP")], 1)  # fmt: skip
        _write(rt, ["R"], [], 2)
        recorded = _corrections(rt)
        _reopen(rt, "2026-02", 3, agency="SNV")
        with rt.db.connect() as conn:
            row = conn.execute(select(FACT.c.state).where(FACT.c.fact_key == key)).one()
        assert ("retract", "SNV", "2026-02") in recorded and row.state == "retracted", (recorded, row.state)
    finally:
        rt.close()


def test_an_ordinary_re_read_of_a_retracted_fact_costs_one_lookup_and_records_nothing(store_url: str,
                                                                                       tmp_path: Path) -> None:
    """A record whose fact was retracted long ago (in an open month, no correction anywhere), re-read by an
    ordinary sync: with no month closed nothing extra is read; with some month closed (as every past month is
    in production) one lookup of the fact's corrections per page, and nothing is recorded."""
    rt = make_runtime(store_url, tmp_path)
    try:
        put(rt, [fact(0, record="R", period="2026-03"), fact(1, record="R", period="2026-03")])
        _write(rt, ["R"], [fact(1, record="R", period="2026-03")], 1)  # fact 0 retracted, March open
        seen: list[str] = []

        def listen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement)

        def lookups(minute: int) -> list[str]:
            seen.clear()
            event.listen(rt.db, "before_cursor_execute", listen)
            _write(rt, ["R"], [fact(1, record="R", period="2026-03")], minute)  # nothing changed
            event.remove(rt.db, "before_cursor_execute", listen)
            return [s for s in seen if "fact_correction" in s]

        assert lookups(2) == []
        _close(rt, "2025-12")  # an unrelated month is closed
        assert len(lookups(3)) == 1
        assert _corrections(rt) == []
    finally:
        rt.close()


def _exempt_sql(conn: Any) -> str:
    from gateway.api.summaries import _statements

    stmt = _statements(("agency", "unit"), (), 1, None)[1].params(m0="2026-01")
    return str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))


def test_the_summary_exempt_query_can_use_ix_fact_exempt(store_url: str, tmp_path: Path) -> None:
    """Migration 7's partial index is WHERE exempt IS TRUE. SQLAlchemy renders c.exempt.is_(True) as
    'exempt IS 1' on SQLite, which SQLite's planner does not take as implying 'exempt IS TRUE' (they differ:
    2 IS TRUE, not 2 IS 1): the index can never be used there. INDEXED BY makes that an error to see."""
    rt = make_runtime(store_url, tmp_path)
    try:
        put(rt, [fact(n, exempt=n % 5 == 0) for n in range(20)])
        with rt.db.connect() as conn:
            sql = _exempt_sql(conn)
            if conn.dialect.name == "sqlite":
                forced = sql.replace("FROM fact", "FROM fact INDEXED BY ix_fact_exempt", 1)
                conn.exec_driver_sql(forced).fetchall()  # "no query solution" when the index cannot be used
            else:
                conn.exec_driver_sql("SET enable_seqscan = off")
                plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
                assert "ix_fact_exempt" in plan, plan
    finally:
        rt.close()


def test_feed_committed_at_under_other_session_time_zones(store_url: str, tmp_path: Path) -> None:
    """(Expected to pass: a check, not a suspicion.) committed_at with microseconds, and a session TimeZone
    with a 5:45 offset, give the same text as the datetime written."""
    from datetime import UTC, datetime

    from gateway.api.facts import list_changes
    from gateway.security.principal import Scope

    rt = make_runtime(store_url, tmp_path)
    try:
        at = [datetime(2026, 2, 10, 3, 0, 0, 120000, tzinfo=UTC), datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC)]
        put(rt, [fact(0)], now=at[0])
        put(rt, [fact(1)], now=at[1])
        with rt.db.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TIME ZONE 'Asia/Kathmandu'")
            items, _, _ = list_changes(conn, scope=Scope(None), after=None, limit=10)
        assert [i["committed_at"] for i in items] == [a.isoformat() for a in at]
    finally:
        rt.close()


def test_a_long_retracted_fact_gets_no_retract_correction_in_a_month_it_left(store_url: str,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    """Record A moves fact 0 from January (open) into February (closed): an 'insert' correction there. A then
    moves it back to January (written directly; February's correction is now stale) and later drops it
    (retracted directly in January). From then on the fact is neither in February nor proposed there by its
    record's last word, yet the next ordinary re-read of A records a 'retract' correction in February."""
    rt = make_runtime(store_url, tmp_path)
    try:
        put(rt, [fact(0, record="A")])
        _close(rt, "2026-02")
        _write(rt, ["A"], [fact(0, record="A", period="2026-02")], 1)  # -> February: correction
        _write(rt, ["A"], [fact(0, record="A", units="3")], 2)  # back to January, open: written
        _write(rt, ["A"], [], 3)  # dropped in January, open: retracted directly
        before = _corrections(rt)
        _write(rt, ["A"], [], 4)  # an ordinary re-read, nothing new at the source
        assert _corrections(rt) == before, _corrections(rt)
    finally:
        rt.close()
