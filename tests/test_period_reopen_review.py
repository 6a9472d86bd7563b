"""Reopening, the hard cases a review found: re-recorded values after a reopening, a retraction beside another
closed month's correction, +07:00 times, a fact that changed records or moved on while the month was closed,
migration 6 on a version-5 store, and a sync waiting on a reopening. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway.runtime import Runtime
from gateway.store.facts import CORRECTION, FACT
from gateway.store.periods import reopen_period
from gateway.types import VN_TZ
from tests.api_support import NOW, fact, fact_columns, make_runtime, put
from tests.api_support import close_month as _close
from tests.api_support import reopen_month as _reopen
from tests.api_support import write_records as _write


def _units(rt: Runtime, key: str) -> tuple[Any, ...]:
    return fact_columns(rt, key, "state", "units_scaled")


def _row(rt: Runtime, key: str) -> tuple[Any, ...]:
    return fact_columns(rt, key, "state", "period")


def test_a_correction_equal_to_one_applied_by_an_earlier_reopening_is_recorded(store_url: str,
                                                                              tmp_path: Path) -> None:  # fmt: skip
    """close; source says 9; reopen (fact -> 9); source says 1 (open, direct); close; source says 9 again.
    The last change must be recorded and applied by the second reopening."""
    rt = make_runtime(store_url, tmp_path)
    key = "SKHCN:doc0|P0|lead"
    put(rt, [fact(0)])
    _close(rt, "2026-01")
    assert put(rt, [fact(0, units="9")], now=NOW + timedelta(minutes=1)).corrected == 1
    _reopen(rt, "2026-01", 2)
    assert _units(rt, key) == ("active", 90_000)
    put(rt, [fact(0, units="1")], now=NOW + timedelta(minutes=3))  # open: written directly
    _close(rt, "2026-01", 4)
    written = put(rt, [fact(0, units="9")], now=NOW + timedelta(minutes=5))
    second = _reopen(rt, "2026-01", 6)
    try:
        assert written.corrected == 1, "source change not recorded: deduplicated against an applied correction"
        assert second["corrections_applied"] == 1
        assert _units(rt, key) == ("active", 90_000)  # what the source says
    finally:
        rt.close()


def test_a_retraction_in_one_closed_month_does_not_erase_a_pending_correction_of_another(
    store_url: str, tmp_path: Path
) -> None:
    """One record yields fact A (January) and fact B (February); both months closed. The source drops A and
    changes B. Reopening January must leave February's pending 'update' of B its latest correction."""
    rt = make_runtime(store_url, tmp_path)
    a = fact(0, record="R")
    b = fact(1, record="R", period="2026-02")
    put(rt, [a, b])
    _close(rt, "2026-01")
    _close(rt, "2026-02")
    assert put(rt, [fact(1, record="R", period="2026-02", units="7")], now=NOW + timedelta(minutes=1)).corrected == 2
    _reopen(rt, "2026-01", 2)
    try:
        with rt.db.connect() as conn:
            ops = [r.op for r in conn.execute(select(CORRECTION.c.op).where(
                CORRECTION.c.period == "2026-02").order_by(CORRECTION.c.id))]  # fmt: skip
        assert ops == ["update"], ops  # a spurious 'revert' erases the pending update
        _reopen(rt, "2026-02", 3)
        assert _units(rt, "SKHCN:doc1|P1|lead") == ("active", 70_000)
    finally:
        rt.close()


def test_a_fact_applied_by_a_reopening_hashes_like_the_source_fact(store_url: str, tmp_path: Path) -> None:
    """Sources give local (+07:00) times. After a reopen applies an update, re-reading the same record (same
    values) must write nothing, as it would had the month never been closed."""

    def local(**values: Any) -> Any:
        f = fact(0, **values)
        assert f.due_at is not None and f.done_at is not None
        return fact(0, due_at=f.due_at.astimezone(VN_TZ), done_at=f.done_at.astimezone(VN_TZ), **values)

    rt = make_runtime(store_url, tmp_path)
    put(rt, [local()])
    _close(rt, "2026-01")
    put(rt, [local(units="9")], now=NOW + timedelta(minutes=1))
    _reopen(rt, "2026-01", 2)
    again = put(rt, [local(units="9")], now=NOW + timedelta(minutes=3))
    rt.close()
    assert (again.unchanged, again.updated) == (1, 0), again


def test_a_retraction_after_a_reopening_reactivated_the_fact_is_recorded(store_url: str, tmp_path: Path) -> None:
    """close; source drops fact 0 (retract correction); reopen (fact retracted); source brings it back (open:
    active again); close; source drops it again. The second retraction must be recorded and applied."""
    rt = make_runtime(store_url, tmp_path)
    key = "SKHCN:doc0|P0|lead"
    put(rt, [fact(0), fact(1, record="SKHCN-0")])  # record SKHCN-0 yields facts 0 and 1
    _close(rt, "2026-01")
    put(rt, [fact(1, record="SKHCN-0")], now=NOW + timedelta(minutes=1))
    _reopen(rt, "2026-01", 2)
    assert _units(rt, key)[0] == "retracted"
    put(rt, [fact(0), fact(1, record="SKHCN-0")], now=NOW + timedelta(minutes=3))
    assert _units(rt, key)[0] == "active"
    _close(rt, "2026-01", 4)
    dropped = put(rt, [fact(1, record="SKHCN-0")], now=NOW + timedelta(minutes=5))
    _reopen(rt, "2026-01", 6)
    state = _units(rt, key)[0]
    rt.close()
    assert dropped.corrected == 1 and state == "retracted", (dropped, state)


def test_a_fact_that_changed_record_while_closed_is_not_retracted_by_the_reopening(store_url: str,
                                                                                   tmp_path: Path) -> None:  # fmt: skip
    """Fact 0 read from record R1 (January, closed). The source now yields it from R2, in February (open),
    then R1 is re-read without it. Never closed: the fact moves to February under R2 and R1's re-read does not
    touch it (its origin is R2). Reopened: the latest correction is R1's 'retract', so the fact is lost."""
    rt = make_runtime(store_url, tmp_path)
    key = "SKHCN:doc0|P0|lead"
    put(rt, [fact(0, record="R1")])
    _close(rt, "2026-01")
    put(rt, [fact(0, record="R2", period="2026-02")], now=NOW + timedelta(minutes=1))
    with rt.db.begin() as conn:  # R1 re-read: it yields nothing now
        from gateway.store.facts import write_facts
        write_facts(conn, origins=[("eoffice", "docs", "R1")], facts=[], now=NOW + timedelta(minutes=2))
    _reopen(rt, "2026-01", 3)
    with rt.db.connect() as conn:
        row = conn.execute(select(FACT.c.state, FACT.c.period).where(FACT.c.fact_key == key)).one()
    rt.close()
    assert (row.state, row.period) == ("active", "2026-02"), row


def test_migration_6_on_a_version_5_store(store_url: str, tmp_path: Path, monkeypatch: Any) -> None:
    """A store at version 5 with a closed month and a pending correction: migrating adds period_reopening and
    the month can be reopened. (Expected to pass; checks migration 6 on an existing store.)"""
    import gateway.store.db as dbmod

    engine = dbmod.make_engine(store_url)
    monkeypatch.setattr(dbmod, "MIGRATIONS", dbmod.MIGRATIONS[:5])
    dbmod.migrate(engine)
    from sqlalchemy import inspect
    assert "period_reopening" not in inspect(engine).get_table_names()
    monkeypatch.undo()
    assert dbmod.migrate(engine) == len(dbmod.MIGRATIONS)
    assert dbmod.schema_version(engine) == len(dbmod.MIGRATIONS)
    assert "ix_period_reopening_period" in {i["name"] for i in inspect(engine).get_indexes("period_reopening")}
    engine.dispose()
    rt = make_runtime(store_url, tmp_path)
    put(rt, [fact(0)])
    _close(rt, "2026-01")
    put(rt, [fact(0, units="2")], now=NOW + timedelta(minutes=1))
    assert _reopen(rt, "2026-01", 2)["facts_updated"] == 1
    rt.close()


def test_a_sync_waiting_on_a_reopening_writes_the_open_month_directly(store_url: str, tmp_path: Path) -> None:
    """(Expected to pass.) A sync started while a reopening holds the fact-write lock waits, then sees the
    month open: it writes the fact, records no correction, and its change comes after the reopening's."""
    import threading
    import time

    rt = make_runtime(store_url, tmp_path)
    put(rt, [fact(0), fact(1)])
    _close(rt, "2026-01")
    put(rt, [fact(0, units="9")], now=NOW + timedelta(minutes=1))
    results: list[Any] = []
    entered = threading.Event()

    def sync() -> None:
        entered.wait()
        results.append(put(rt, [fact(1, units="4")], now=NOW + timedelta(minutes=3)))

    t = threading.Thread(target=sync)
    t.start()
    with rt.db.begin() as conn:
        reopen_period(conn, agency="SKHCN", period="2026-01", by="t", reason="race", now=NOW + timedelta(minutes=2))
        entered.set()
        time.sleep(0.5)
    t.join(10)
    assert results and results[0].corrected == 0 and results[0].updated == 1, results
    assert _units(rt, "SKHCN:doc1|P1|lead") == ("active", 40_000)
    rt.close()


def test_a_move_into_a_closed_month_then_back_out_is_not_undone_by_the_reopening(store_url: str,
                                                                                  tmp_path: Path) -> None:  # fmt: skip
    """Fact 0 in February (open). January closed. The source moves it into January (February retracts it,
    January records an 'insert'), then back to February (written directly: active in February again).
    Never closed, the fact ends active in February; reopening January must not pull it back."""
    rt = make_runtime(store_url, tmp_path)
    key = "SKHCN:doc0|P0|lead"
    put(rt, [fact(0, period="2026-02")])
    _close(rt, "2026-01")
    assert _write(rt, ["SKHCN-0"], [fact(0, period="2026-01")], 1).corrected == 1
    _write(rt, ["SKHCN-0"], [fact(0, period="2026-02")], 2)
    assert _row(rt, key) == ("active", "2026-02")
    _reopen(rt, "2026-01", 3)
    row = _row(rt, key)
    rt.close()
    assert row == ("active", "2026-02"), row


def test_a_move_into_a_closed_month_then_dropped_is_not_inserted_by_the_reopening(store_url: str,
                                                                                  tmp_path: Path) -> None:  # fmt: skip
    """Fact 0 in February (open). January closed. The source moves it into January, then drops it. Never
    closed, the fact ends retracted; reopening January must not make it active."""
    rt = make_runtime(store_url, tmp_path)
    key = "SKHCN:doc0|P0|lead"
    put(rt, [fact(0, period="2026-02")])
    _close(rt, "2026-01")
    assert _write(rt, ["SKHCN-0"], [fact(0, period="2026-01")], 1).corrected == 1
    _write(rt, ["SKHCN-0"], [], 2)
    _reopen(rt, "2026-01", 3)
    row = _row(rt, key)
    rt.close()
    assert row[0] == "retracted", row
