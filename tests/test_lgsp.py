"""The LGSP one-stop source (sources/lgsp.yaml, declarative REST + OAuth2) against its stand-in, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import Metrics
from gateway.retry import RetryPolicy
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.standins import seed
from gateway.standins.lgsp import SANDBOX_CLIENT_SECRET, LgspState, create_lgsp_app
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.types import VN_TZ
from tests.contract.support import ROOT, context, source_file
from tests.spine_support import count, facts_where, rows, run_source


@pytest.fixture
def lgsp() -> Iterator[tuple[LgspState, RunningServer]]:
    state = LgspState(days=6)
    with serve_in_thread(create_lgsp_app(state)) as server:
        yield state, server


def runtime(tmp_path: Path, url: str, edit: Any = None, **env: str) -> Runtime:
    source_file(tmp_path / "sources", "lgsp.yaml", edit)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/s.db", sources_dir=tmp_path / "sources",
                        mappings_dir=ROOT / "mappings", scheduler=False)  # fmt: skip
    return build_runtime(settings, retry=RetryPolicy.instant(), metrics=Metrics(),
                         env={"LGSP_URL": url, "LGSP_CLIENT_SECRET": SANDBOX_CLIENT_SECRET, **env})  # fmt: skip


def sync(rt: Runtime) -> Any:
    return run_source(rt, "lgsp")


@pytest.mark.parametrize("client_auth", ["basic", "form"])
def test_dossiers_become_facts_for_the_handling_civil_servants(
    tmp_path: Path, lgsp: tuple[LgspState, RunningServer], client_auth: str
) -> None:
    state, server = lgsp
    rt = runtime(tmp_path, server.url, LGSP_CLIENT_AUTH=client_auth)
    report = sync(rt)
    assert report.outcome == "success", report
    assert report.read == len(state.visible())
    assert state.token_requests == 1  # one token for every page
    person_of = {p.onestop_user: p.person_id for p in seed.people()}
    dossier = next(d for d in state.visible() if d.view(state.now)["FinishedDate"])
    view = dossier.view(state.now)
    facts = facts_where(rt.db, source="lgsp", record_key=dossier.code)
    assert {f["person_id"] for f in facts} == {person_of[u] for u in view["HandlerUserNames"]}
    assert {f["role"] for f in facts} == {"handler"} and all(f["completed"] for f in facts)
    assert count(rt.db, "SELECT count(*) FROM quarantine") == 0
    events = rows(rt.db, "SELECT body FROM work_item WHERE record_key = :k", k=dossier.code)[0]["body"]
    assert '"register"' in events and '"finish"' in events
    rt.close()


def test_supplementary_request_moves_the_due_date_and_a_late_finish_shows(
    tmp_path: Path, lgsp: tuple[LgspState, RunningServer]
) -> None:
    state, server = lgsp
    rt = runtime(tmp_path, server.url)
    sync(rt)
    moved, late = state.open_codes()[:2]
    before = state.find(moved).view(state.now)["DateAppointed"]
    state.stall(late)
    state.advance(1)
    state.request_supplement(moved, days=5)
    state.advance(30)
    state.finish(late)
    report = sync(rt)
    assert report.read < len(state.visible())  # only what changed since the cursor
    due = facts_where(rt.db, source="lgsp", record_key=moved)
    after = state.find(moved).view(state.now)["DateAppointed"]
    assert after != before and all(f["due_at"].astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M:%S") == after
                                   for f in due)  # fmt: skip
    done = facts_where(rt.db, source="lgsp", record_key=late)
    assert done and all(f["completed"] and f["on_time"] is False for f in done)
    rt.close()


def test_traces_are_fetched_per_dossier_when_not_embedded_and_tokens_renewed(
    tmp_path: Path, lgsp: tuple[LgspState, RunningServer]
) -> None:
    state, server = lgsp

    def no_embedding(data: dict[str, Any]) -> None:
        data["streams"]["dossiers"]["params"] = {}
        data["streams"]["dossiers"]["paginator"]["size"] = 10

    rt = runtime(tmp_path, server.url, no_embedding)
    connector = rt.connector("lgsp")
    try:
        pages = connector.read("dossiers", None)
        first = next(pages)
        state.expire_tokens()  # the token dies between two pages: one new token, no failure
        rest = list(pages)
    finally:
        connector.close()
    records = [r for p in [first, *rest] for r in p.records]
    assert len(records) == len(state.visible())
    assert all(r.payload["Traces"] and r.payload["Traces"][0]["Status"] == "TIEP_NHAN" for r in records)
    assert state.token_requests == 2
    rt.close()


def test_monthly_statistics_add_up(lgsp: tuple[LgspState, RunningServer]) -> None:
    state, _server = lgsp
    organ = seed.agency("XA_COCSAN").organ_id
    stats = state.statistics(organ, "2026-09")
    assert stats["Received"] > 0
    assert stats["SolvedOnTime"] + stats["SolvedLate"] + stats["Returned"] + stats["Pending"] == stats["Received"]


def test_the_demo_starts_every_standin_and_their_env_loads_every_shipped_source() -> None:
    from gateway.demo import start_standins
    from gateway.sources import load_sources

    standins = start_standins(vxp_days=1)
    try:
        specs = load_sources(ROOT / "sources", env=standins.env)
        assert {"eoffice", "edoc-hub", "lgsp", "vxp"} <= set(specs)
        for name in ("lgsp", "vxp"):
            connector = specs[name].build(context())
            try:
                assert connector.check().ok
            finally:
                connector.close()
        assert len(standins.advancers) == 4
    finally:
        standins.close()
