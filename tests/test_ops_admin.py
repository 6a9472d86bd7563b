"""Admin operations through the service functions, the CLI and the API: quarantine list, show, replay after a
fix, discard with a reason; cursor view and reset to a time; pause, resume, trigger. Every change audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import Engine

from gateway.api import create_app, routes_ops
from gateway.cli import main
from gateway.metrics import Metrics
from gateway.ops import Conflict, Invalid, NotFound, control, cursors, quarantine
from gateway.retry import RetryPolicy
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.sources import load_sources
from gateway.standins.eoffice import EOfficeState
from gateway.standins.server import serve_in_thread
from gateway.store import leases, make_engine, migrate
from gateway.sync.engine import SyncEngine
from tests.api_support import new_key
from tests.conftest import ROOT, RuntimeFactory
from tests.spine_support import count, fact_state, rows

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
EMBEDDED_LOGS = {"kemNhatKy": "1"}  # activity logs inside the list pages: no sub-request per record


@pytest.fixture
def eoffice_state() -> EOfficeState:
    return EOfficeState(days=3, token_ttl=300)


def _sync(runtime: Runtime, source: str = "eoffice") -> Any:
    connector = runtime.connector(source)
    try:
        return runtime.sync.run(connector)
    finally:
        connector.close()


def _fixed_sources(tmp_path: Path) -> Path:
    """The fix for the drafts the stand-in sends without a number: an outgoing key that does not need it."""
    data = yaml.safe_load((tmp_path / "sources" / "eoffice.yaml").read_text(encoding="utf-8"))
    data["streams"]["outgoing"]["normalize"]["key"] = "doc:{maDonVi}:out:{id}"
    fixed = tmp_path / "fixed"
    fixed.mkdir(exist_ok=True)
    (fixed / "eoffice.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return fixed


def _runtime_on(store: str, sources: Path, env: dict[str, str]) -> Runtime:
    settings = Settings(database_url=store, sources_dir=sources, mappings_dir=ROOT / "mappings", scheduler=False)
    return build_runtime(settings, retry=RetryPolicy.instant(), metrics=Metrics(), env=env)


def _audit(runtime: Runtime) -> list[dict[str, Any]]:
    return rows(runtime.db, "SELECT actor, action, detail FROM audit_log ORDER BY id")


def test_quarantine_replay_after_a_fix_equals_a_clean_sync_and_discard_needs_a_reason(
    make_runtime: RuntimeFactory, eoffice_env: dict[str, str], tmp_path: Path
) -> None:
    runtime = make_runtime(f"sqlite:///{tmp_path}/store.db", params=EMBEDDED_LOGS)
    assert _sync(runtime).outcome == "partial"
    with runtime.db.connect() as conn:
        entries = quarantine.list_entries(conn, source="eoffice")
        first = quarantine.get_entry(conn, entries[0]["id"])
    assert len(entries) >= 3 and {e["stage"] for e in entries} == {"normalize"}
    assert first["payload"]["id"] == int(first["record_key"]) and "payload" not in entries[0]

    # replayed before the fix: fails again, stays open with the reason, audited
    report = quarantine.replay(runtime.db, ids=[entries[0]["id"]], actor="ops-1", now=NOW,
                               connector_for=runtime.connector, valuer=runtime.mappings.current)  # fmt: skip
    assert report.count("failed") == 1
    with runtime.db.begin() as conn:
        assert quarantine.get_entry(conn, entries[0]["id"])["status"] == "open"
        with pytest.raises(Invalid):
            quarantine.discard(conn, entry_id=entries[1]["id"], reason="  ", actor="ops-1", now=NOW)
        discarded = quarantine.discard(conn, entry_id=entries[1]["id"], reason="test draft, never sent",
                                       actor="ops-1", now=NOW)  # fmt: skip
        assert discarded["status"] == "discarded" and discarded["resolution_note"] == "test draft, never sent"
        with pytest.raises(Conflict):
            quarantine.discard(conn, entry_id=entries[1]["id"], reason="again", actor="ops-1", now=NOW)
        with pytest.raises(NotFound):
            quarantine.get_entry(conn, 10**9)

    # the fix: a field map that no longer needs the number; replay every open entry of the source
    fixed = load_sources(_fixed_sources(tmp_path), env=eoffice_env)

    def fixed_connector(name: str) -> Any:
        return fixed[name].build(runtime.context_for(name))

    report = quarantine.replay(runtime.db, source="eoffice", actor="ops-1", now=NOW,
                               connector_for=fixed_connector, valuer=runtime.mappings.current)  # fmt: skip
    # some drafts now normalize but cannot be valued (no approver yet): they stay open with the new reason
    assert report.count("replayed") > 0 and report.count("replayed") + report.count("failed") == len(entries) - 1
    replayed_ids = [o.id for o in report.outcomes if o.outcome == "replayed"]
    replayed = [e["record_key"] for e in entries if e["id"] in replayed_ids]
    still = rows(runtime.db, "SELECT stage, status FROM quarantine WHERE status = 'open'")
    assert len(still) == report.count("failed") and {r["stage"] for r in still} <= {"map"}
    assert count(runtime.db, "SELECT count(*) FROM quarantine WHERE status = 'replayed'") == len(replayed)
    again = quarantine.replay(runtime.db, ids=[entries[0]["id"]], actor="ops-1", now=NOW,
                              connector_for=fixed_connector, valuer=runtime.mappings.current)  # fmt: skip
    assert again.count("skipped") == 1  # already replayed
    ours = {k: v for k, v in fact_state(runtime.db).items() if _origin_in(runtime.db, k, replayed)}

    # the replayed records' facts are exactly those a clean sync with the fix writes
    clean_db = make_engine(f"sqlite:///{tmp_path}/clean.db")
    migrate(clean_db)
    clean = SyncEngine(engine=clean_db, valuer=lambda: runtime.mappings.current, metrics=Metrics())
    connector = fixed_connector("eoffice")
    try:
        clean.run(connector)
        expected = {k: v for k, v in fact_state(clean_db).items() if _origin_in(clean_db, k, replayed)}
    finally:
        connector.close()
        clean_db.dispose()
    assert ours == expected and len(ours) > 0
    actions = [(a["actor"], a["action"], json.loads(a["detail"]).get("outcome")) for a in _audit(runtime)]
    assert ("ops-1", "replay_quarantine", "failed") in actions and ("ops-1", "discard_quarantine", None) in actions
    assert actions.count(("ops-1", "replay_quarantine", "replayed")) == len(replayed)


def _origin_in(db: Engine, fact_key: str, record_keys: list[str]) -> bool:
    found = rows(db, "SELECT stream, record_key FROM fact WHERE fact_key = :k", k=fact_key)
    return bool(found) and found[0]["stream"] == "outgoing" and found[0]["record_key"] in record_keys


def test_cursor_reset_needs_a_paused_source_and_a_free_lease(store_url: str, make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(store_url, params=EMBEDDED_LOGS)
    _sync(runtime)
    names, streams = runtime.sources, ["incoming", "outgoing", "tasks"]
    with runtime.db.begin() as conn:
        shown = cursors.show(conn, source="eoffice", sources=names)
        assert [c["stream"] for c in shown] == streams and all(c["kind"] == "live" for c in shown)
        to = datetime(2026, 1, 2, 8, 0, tzinfo=UTC)
        with pytest.raises(Conflict, match="pause"):
            cursors.reset(conn, source="eoffice", streams=[], known_streams=streams, to=to, actor="ops", now=NOW,
                          sources=names)  # fmt: skip
        control.pause(conn, source="eoffice", sources=names, actor="ops", now=NOW, reason="re-read January")
        leases.acquire(conn, "source:eoffice", holder="replica-b", ttl=60, now=datetime.now(UTC))
        with pytest.raises(Conflict, match="lease"):
            cursors.reset(conn, source="eoffice", streams=[], known_streams=streams, to=to, actor="ops", now=NOW,
                          sources=names)  # fmt: skip
        leases.release(conn, "source:eoffice", holder="replica-b")
        with pytest.raises(NotFound):
            cursors.reset(conn, source="eoffice", streams=["nope"], known_streams=streams, to=to, actor="ops",
                          now=NOW, sources=names)  # fmt: skip
        changes = cursors.reset(conn, source="eoffice", streams=["incoming"], known_streams=streams, to=to,
                                actor="ops", now=NOW, sources=names)  # fmt: skip
        assert changes == [{"stream": "incoming", "old": shown[0]["value"], "new": to.isoformat()}]
        cursors.reset(conn, source="eoffice", streams=["tasks"], known_streams=streams, to=None, actor="ops",
                      now=NOW, sources=names)  # fmt: skip
        after = {c["stream"]: c["value"] for c in cursors.show(conn, source="eoffice", sources=names)}
    assert after == {"incoming": to.isoformat(), "outgoing": shown[1]["value"]}
    report = _sync(runtime)  # re-reads from the reset points: everything again, nothing new written
    by_stream = {s.stream: s for s in report.streams}
    assert by_stream["incoming"].read > 0 and by_stream["tasks"].read > 0 and report.facts_written == 0
    assert [a["action"] for a in _audit(runtime)] == ["pause_source", "reset_cursor", "reset_cursor"]


def test_cli_admin_commands_are_audited(
    make_runtime: RuntimeFactory, eoffice_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    store = f"sqlite:///{tmp_path}/cli.db"
    runtime = make_runtime(store, params=EMBEDDED_LOGS)
    _sync(runtime)
    for key, value in eoffice_env.items():
        monkeypatch.setenv(key, value)
    assert main([*base_args(store, tmp_path), "cursor", "show", "eoffice"]) == 0  # once end to end
    assert "incoming\t" in capsys.readouterr().out
    # then on the same runtime: building one loads every mapping file (seconds); close() only resets its pool
    monkeypatch.setattr("gateway.cli._runtime", lambda _args: runtime)
    base = base_args(store, tmp_path)
    open_ids = [e["id"] for e in rows(runtime.db, "SELECT id FROM quarantine WHERE status = 'open' ORDER BY id")]
    assert main([*base, "quarantine", "list", "--source", "eoffice"]) == 0
    assert f"{len(open_ids)} entries" in capsys.readouterr().out
    assert main([*base, "quarantine", "show", str(open_ids[0])]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == open_ids[0]
    assert main([*base, "quarantine", "discard", str(open_ids[0]), "--reason", "duplicate draft"]) == 0
    assert main([*base, "quarantine", "replay", str(open_ids[1])]) == 1  # not fixed yet: fails again
    assert main([*base, "sources", "pause", "eoffice", "--reason", "planned outage"]) == 0
    assert main([*base, "cursor", "reset", "eoffice", "--stream", "incoming", "--to", "2026-01-05"]) == 0
    assert "2026-01-05T00:00:00+07:00" in capsys.readouterr().out
    assert main([*base, "cursor", "show", "eoffice"]) == 0
    assert "incoming\t2026-01-05T00:00:00+07:00" in capsys.readouterr().out
    assert main([*base, "sources", "resume", "eoffice"]) == 0
    assert main([*base, "sources", "trigger", "eoffice"]) == 0
    assert main([*base, "cursor", "reset", "eoffice", "--to", "not a date"]) == 2
    assert "not an ISO date" in capsys.readouterr().err
    audit = _audit(runtime)
    assert {a["actor"].split(":")[0] for a in audit} == {"cli"}
    assert [a["action"] for a in audit] == ["discard_quarantine", "replay_quarantine", "pause_source",
                                            "reset_cursor", "resume_source", "trigger_source"]  # fmt: skip
    assert count(runtime.db, "SELECT count(*) FROM source_control WHERE trigger_requested_at IS NOT NULL") == 1


def base_args(store: str, tmp_path: Path) -> list[str]:
    return ["--database-url", store, "--sources-dir", str(tmp_path / "sources"), "--mappings-dir",
            str(ROOT / "mappings")]  # fmt: skip


def _app(runtime: Runtime) -> FastAPI:
    app = create_app(runtime, start_scheduler=False)
    if not any(getattr(r, "path", "") == "/v1/admin/quarantine" for r in app.routes):
        app.include_router(routes_ops.router)  # until app.py includes it
    return app


def test_admin_api_operations(make_runtime: RuntimeFactory, tmp_path: Path) -> None:
    runtime = make_runtime(f"sqlite:///{tmp_path}/api.db", params=EMBEDDED_LOGS)
    _sync(runtime)
    admin = {"X-API-Key": new_key(runtime, "ops-console", ["*"], ("admin", "read_facts"))}
    scoped = {"X-API-Key": new_key(runtime, "agency-admin", ["SKHCN"], ("admin",))}
    reader = {"X-API-Key": new_key(runtime, "scorer", ["*"])}
    with serve_in_thread(_app(runtime)) as server, \
            httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as api:  # fmt: skip
        assert api.get("/v1/admin/quarantine", headers=reader).status_code == 403
        assert api.get("/v1/admin/quarantine", headers=scoped).status_code == 403
        page = api.get("/v1/admin/quarantine", headers=admin, params={"limit": 2}).json()
        assert len(page["items"]) == 2 and page["next_after"] == page["items"][-1]["id"]
        entry_id = page["items"][0]["id"]
        assert api.get(f"/v1/admin/quarantine/{entry_id}", headers=admin).json()["payload"]
        assert api.get("/v1/admin/quarantine/999999", headers=admin).status_code == 404
        replay = api.post(f"/v1/admin/quarantine/{entry_id}/replay", headers=admin).json()
        assert replay["failed"] == 1
        assert api.post("/v1/admin/quarantine/replay", headers=admin, json={}).status_code == 422
        assert api.post(f"/v1/admin/quarantine/{entry_id}/discard", headers=admin, json={}).status_code == 422
        done = api.post(f"/v1/admin/quarantine/{entry_id}/discard", headers=admin, json={"reason": "never sent"})
        assert done.json()["status"] == "discarded"
        assert api.post(f"/v1/admin/quarantine/{entry_id}/discard", headers=admin,
                        json={"reason": "again"}).status_code == 409  # fmt: skip
        cur = api.get("/v1/admin/sources/eoffice/cursors", headers=admin).json()["cursors"]
        assert {c["stream"] for c in cur} == {"incoming", "outgoing", "tasks"}
        body = {"to": "2026-01-05T00:00:00+07:00", "streams": ["tasks"]}
        assert api.patch("/v1/admin/sources/eoffice/cursors", headers=admin, json=body).status_code == 409
        assert api.post("/v1/admin/sources/eoffice/pause", headers=admin, json={"reason": "x"}).json()["paused"]
        reset = api.patch("/v1/admin/sources/eoffice/cursors", headers=admin, json=body).json()
        assert reset["changes"][0]["new"] == "2026-01-05T00:00:00+07:00"
        naive = api.patch("/v1/admin/sources/eoffice/cursors", headers=admin, json={"to": "2026-01-05T00:00:00"})
        assert naive.status_code == 422
        assert not api.post("/v1/admin/sources/eoffice/resume", headers=admin).json()["paused"]
        assert api.post("/v1/admin/sources/eoffice/trigger", headers=admin).status_code == 202
        assert api.get("/v1/admin/sources/eoffice/control", headers=admin).json()["trigger_requested_at"]
        assert api.post("/v1/admin/sources/nope/pause", headers=admin).status_code == 404
    audit = _audit(runtime)
    assert {a["actor"] for a in audit if a["action"] != "read"} >= {"ops-console"}
    ops = [a["action"] for a in audit if a["actor"] == "ops-console"]
    for action in ("replay_quarantine", "discard_quarantine", "pause_source", "reset_cursor", "resume_source",
                   "trigger_source"):  # fmt: skip
        assert action in ops
