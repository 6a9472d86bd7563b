"""The spine end to end: the e-office stand-in over loopback -> archive -> work items -> facts, on SQLite and
PostgreSQL; incremental sync across source mutations; auth expiry; retries; malformed pages."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta

from pydantic import SecretStr

from gateway.retry import RetryPolicy
from gateway.standins.eoffice import EOfficeState
from gateway.types import VN_TZ
from tests.conftest import RuntimeFactory
from tests.spine_support import count, fact_state, facts_where, metric, rows


def _sync(runtime, **kwargs):  # type: ignore[no-untyped-def]
    connector = runtime.connector("eoffice")
    try:
        return runtime.sync.run(connector, **kwargs)
    finally:
        connector.close()


def test_first_sync_archives_everything_and_writes_explainable_facts(
    store_url: str, make_runtime: RuntimeFactory, eoffice_state: EOfficeState
) -> None:
    runtime = make_runtime(store_url)
    report = _sync(runtime)
    assert report.outcome in ("success", "partial"), report
    expected = sum(len(eoffice_state.ids(kind)) for kind in ("van-ban-den", "van-ban-di", "cong-viec"))
    assert report.read == expected
    db = runtime.db
    assert count(db, "SELECT count(*) FROM raw_record") == expected
    assert count(db, "SELECT count(*) FROM fact WHERE state = 'active'") > expected // 2
    # every record either became a work item or sits in quarantine with its reason: nothing lost
    items = count(db, "SELECT count(*) FROM work_item")
    quarantined = count(db, "SELECT count(*) FROM quarantine WHERE status = 'open'")
    assert items + quarantined == expected
    # lineage: every fact points at an archived record version
    orphans = count(
        db,
        """SELECT count(*) FROM fact f WHERE NOT EXISTS (SELECT 1 FROM raw_record r
           WHERE r.source = f.source AND r.stream = f.stream AND r.record_key = f.record_key)""",
    )
    assert orphans == 0
    fact = rows(db, "SELECT lineage FROM fact LIMIT 1")[0]
    for key in ('"rule"', '"catalog"', '"person"', '"raw"', '"content_hash"'):
        assert key in fact["lineage"]
    cursors = {r["stream"]: r["value"] for r in rows(db, "SELECT stream, value FROM cursor")}
    assert set(cursors) == {"incoming", "outgoing", "tasks"} and all(cursors.values())
    run = rows(db, "SELECT * FROM sync_run")[0]
    assert run["outcome"] == report.outcome and run["records_read"] == expected and run["finished_at"]
    assert metric(runtime.metrics.registry, "kpigw_source_records_total", outcome="read") == expected


def test_resync_writes_nothing_new(store_url: str, make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(store_url)
    _sync(runtime)
    before, changes = fact_state(runtime.db), count(runtime.db, "SELECT count(*) FROM fact_change")
    second = _sync(runtime)
    assert second.facts_written == 0
    assert fact_state(runtime.db) == before
    assert count(runtime.db, "SELECT count(*) FROM fact_change") == changes


def test_incremental_sync_follows_source_mutations(
    store_url: str, make_runtime: RuntimeFactory, eoffice_state: EOfficeState
) -> None:
    runtime = make_runtime(store_url)
    _sync(runtime)
    eoffice_state.advance(days=3)  # new documents, late completions, moved deadlines, stamped with the new clock
    today = eoffice_state.now.date()
    open_docs = [
        r
        for r in eoffice_state.rows("van-ban-den")
        if r["trangThai"] != "DA_HOAN_THANH" and r["hanXuLy"] and r["soKyHieu"] and r["nguoiChuTri"]
    ]
    overdue = [r for r in open_docs if datetime.strptime(r["hanXuLy"], "%d/%m/%Y").date() < today]
    assert overdue and len(open_docs) > 1, "the stand-in should have open and overdue documents"
    late = overdue[0]
    moved = next(r for r in open_docs if r["id"] != late["id"])
    new_due = today + timedelta(days=10)
    eoffice_state.move_deadline(moved["id"], new_due)
    eoffice_state.complete_late(late["id"])
    changes_before = count(runtime.db, "SELECT max(seq) FROM fact_change")

    report = _sync(runtime)
    assert report.outcome in ("success", "partial")
    expected = sum(len(eoffice_state.ids(kind)) for kind in ("van-ban-den", "van-ban-di", "cong-viec"))
    assert count(runtime.db, "SELECT count(DISTINCT record_key) FROM raw_record") == expected  # the new ones too
    done = facts_where(runtime.db, source="eoffice", stream="incoming", record_key=str(late["id"]), role="lead")
    assert done and all(r["completed"] and r["done_at"] is not None for r in done)
    assert all(r["on_time"] is False and r["delays"] >= 1 for r in done), (done, late)
    due = facts_where(runtime.db, source="eoffice", stream="incoming", record_key=str(moved["id"]))
    assert due and all(r["due_at"].astimezone(VN_TZ).date() == new_due for r in due)
    ops = {r["op"] for r in rows(runtime.db, "SELECT op FROM fact_change WHERE seq > :s", s=changes_before)}
    assert {"insert", "update"} <= ops


def test_token_expiry_mid_sync_logs_in_again(
    make_runtime: RuntimeFactory, eoffice_state: EOfficeState, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db", page_size=20)
    connector = runtime.connector("eoffice")
    try:
        pages = connector.read("incoming", None)
        first = next(pages)
        eoffice_state.expire_tokens()  # the source forgets every token between two pages
        rest = list(pages)
    finally:
        connector.close()
    keys = {r.key for p in [first, *rest] for r in p.records}
    assert len(keys) == len(eoffice_state.ids("van-ban-den"))
    logins = metric(runtime.metrics.registry, "kpigw_upstream_request_seconds_count", operation="auth")
    assert logins == 2  # the first login, and exactly one more after the 401


def test_transient_failures_are_retried(make_runtime: RuntimeFactory, eoffice_state: EOfficeState, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db")
    eoffice_state.fail_next(2, status=503, retry_after=1)
    report = _sync(runtime)
    assert report.outcome in ("success", "partial")
    assert metric(runtime.metrics.registry, "kpigw_upstream_retries_total") == 2


def test_a_malformed_page_is_quarantined_the_run_fails_and_the_next_run_recovers(
    make_runtime: RuntimeFactory,
    eoffice_state: EOfficeState,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db", retry=RetryPolicy.instant(attempts=2))
    eoffice_state.malformed_next_page()
    eoffice_state.malformed_next_page()
    failed = _sync(runtime, streams=["incoming"])
    assert failed.outcome == "failed"
    assert failed.streams[0].error_kind == "MalformedResponse"
    entry = rows(runtime.db, "SELECT stage, error_kind, payload FROM quarantine WHERE record_key LIKE 'page:%'")
    assert entry and entry[0]["stage"] == "fetch" and "body" in entry[0]["payload"]
    assert count(runtime.db, "SELECT count(*) FROM cursor") == 0  # nothing committed past the bad page
    recovered = _sync(runtime, streams=["incoming"])
    assert recovered.outcome in ("success", "partial")
    assert count(runtime.db, "SELECT count(*) FROM raw_record") == len(eoffice_state.ids("van-ban-den"))


def test_records_changing_while_paging_are_not_skipped(
    make_runtime: RuntimeFactory,
    eoffice_state: EOfficeState,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """A record updated mid-sync moves to the end of the list; keyset paging must not shift others out."""
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db", page_size=10)
    connector = runtime.connector("eoffice")
    seen: set[str] = set()
    try:
        pages = connector.read("incoming", None)
        first = next(pages)
        seen.update(r.key for r in first.records)
        for record in first.records[:3]:  # three records of page one change: they jump to the end of the list
            eoffice_state.move_deadline(int(record.key), (eoffice_state.now + timedelta(days=5)).date())
        for page in pages:
            seen.update(r.key for r in page.records)
    finally:
        connector.close()
    assert seen == {str(i) for i in eoffice_state.ids("van-ban-den")}


def test_wrong_credentials_fail_the_stream_as_an_auth_error(make_runtime: RuntimeFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db")
    spec = runtime.sources["eoffice"]
    wrong = spec.config.auth.model_copy(update={"password": SecretStr("not-the-password")})
    runtime.sources["eoffice"] = dataclasses.replace(spec, config=spec.config.model_copy(update={"auth": wrong}))
    report = _sync(runtime)
    assert report.outcome == "failed"
    assert {s.error_kind for s in report.streams} == {"AuthError"}
    assert count(runtime.db, "SELECT count(*) FROM fact") == 0


def test_a_sqlite_sync_checkpoints_on_its_own_thread_only_while_it_runs(make_runtime: RuntimeFactory,
                                                                          tmp_path) -> None:  # type: ignore[no-untyped-def]
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db")
    seen: list[bool] = []

    def checkpointer_running() -> bool:  # asked before each page is stored
        seen.append(any(t.name == "kpigw-wal-checkpoint" for t in threading.enumerate()))
        return True

    report = _sync(runtime, should_continue=checkpointer_running)
    assert report.outcome in ("success", "partial"), report
    assert seen and all(seen)
    assert not any(t.name == "kpigw-wal-checkpoint" for t in threading.enumerate())
