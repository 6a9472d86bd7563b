"""The national-axis connector (sources/vxp.yaml) against the VXP stand-in: signed calls, edXML status packets
into facts, and acknowledgements that follow the store's commits, never precede them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import Metrics
from gateway.retry import RetryPolicy
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.standins import seed
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.standins.vxp import SANDBOX_SECRET, VxpState, create_vxp_app
from tests.contract import CrashAt, _Crash
from tests.contract.support import ROOT, source_file
from tests.spine_support import count, facts_where, rows


@pytest.fixture
def vxp() -> Iterator[tuple[VxpState, RunningServer]]:
    state = VxpState(start=date(2026, 10, 27), days=3, future_days=2)
    with serve_in_thread(create_vxp_app(state)) as server:
        yield state, server


def runtime(tmp_path: Path, url: str) -> Runtime:
    def small(data: dict[str, Any]) -> None:
        data["page_size"] = 5

    source_file(tmp_path / "sources", "vxp.yaml", small)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/s.db", sources_dir=tmp_path / "sources",
                        mappings_dir=ROOT / "mappings", scheduler=False)  # fmt: skip
    return build_runtime(settings, retry=RetryPolicy.instant(), metrics=Metrics(),
                         env={"VXP_URL": url, "VXP_SECRET": SANDBOX_SECRET})  # fmt: skip


def sync(rt: Runtime, **kwargs: Any) -> Any:
    connector = rt.connector("vxp")
    try:
        return rt.sync.run(connector, **kwargs)
    finally:
        connector.close()


def test_status_packets_become_facts_and_are_acknowledged_after_commit(
    tmp_path: Path, vxp: tuple[VxpState, RunningServer]
) -> None:
    state, server = vxp
    rt = runtime(tmp_path, server.url)
    report = sync(rt)
    assert report.outcome == "success", report
    assert report.read == len(state.ids("status")) + len(state.ids("edoc"))
    # read and committed, but acknowledged only by the next run (from the committed cursor)
    assert set(state.statuses().values()) == {"pending"}
    second = sync(rt)
    assert second.read == 0
    assert Counter(state.statuses().values()) == {"done": len(state.statuses())}
    staff = {p.edxml_staff: p.person_id for p in seed.people()}
    facts = facts_where(rt.db, source="vxp", stream="statuses")
    assert facts and {f["person_id"] for f in facts} <= set(staff.values())
    assert {f["role"] for f in facts} <= {"clerk", "lead", "directing_leader"}
    keys = {r["item_key"] for r in rows(rt.db, "SELECT item_key FROM work_item WHERE stream = 'documents'")}
    assert keys and all(k.startswith("doc:") and ":in:000.00.00.G" in k for k in keys)
    rt.close()


def test_a_crash_before_commit_acknowledges_nothing_and_loses_nothing(
    tmp_path: Path, vxp: tuple[VxpState, RunningServer]
) -> None:
    state, server = vxp
    rt = runtime(tmp_path, server.url)
    rt.sync._failpoints = CrashAt({"before_commit": 2})  # the second page's transaction dies
    with pytest.raises(_Crash):
        sync(rt, streams=["statuses"])
    assert set(state.statuses().values()) == {"pending"}  # nothing was acknowledged
    rt.sync._failpoints = CrashAt()
    assert sync(rt, streams=["statuses"]).outcome == "success"
    stored = {r["record_key"] for r in rows(rt.db, "SELECT record_key FROM raw_record WHERE stream = 'statuses'")}
    assert stored == state.ids("status")
    acked = {k for k, v in state.statuses().items() if v == "done"}
    assert acked and acked < state.ids("status")  # the first run's committed page only, so far
    sync(rt, streams=["statuses"])
    assert {k for k, v in state.statuses().items() if v == "done"} == state.ids("status")
    rt.close()


def test_unreadable_packets_are_quarantined_then_acknowledged_as_fail(
    tmp_path: Path, vxp: tuple[VxpState, RunningServer]
) -> None:
    state, server = vxp
    hostile = state.add_raw("status", '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    garbage = state.add_raw("status", "not xml at all")
    rt = runtime(tmp_path, server.url)
    report = sync(rt, streams=["statuses"])
    assert report.outcome == "partial"
    reasons = {r["record_key"]: r["reason"] for r in rows(rt.db, "SELECT record_key, reason FROM quarantine")}
    assert set(reasons) == {hostile, garbage}
    assert all("unreadable" in reason for reason in reasons.values())
    sync(rt, streams=["statuses"])
    assert state.statuses()[hostile] == state.statuses()[garbage] == "fail"
    assert count(rt.db, "SELECT count(*) FROM raw_record WHERE record_key IN (:a, :b)", a=hostile, b=garbage) == 0
    rt.close()


def test_a_message_arriving_later_is_read_by_the_next_run(tmp_path: Path, vxp: tuple[VxpState, RunningServer]) -> None:
    state, server = vxp
    rt = runtime(tmp_path, server.url)
    sync(rt)
    new = state.add_status("XA_COCSAN", "06", "P0090")
    report = sync(rt, streams=["statuses"])
    assert report.streams[0].read == 1
    assert facts_where(rt.db, source="vxp", record_key=new)
    rt.close()
