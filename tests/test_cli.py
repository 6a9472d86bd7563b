"""The command line as an operator uses it: sources list/check/preview, sync, migrate, mappings check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.standins.eoffice import EOfficeState
from tests.conftest import ROOT, write_eoffice_source


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, eoffice_env: dict[str, str]) -> list[str]:
    for key, value in eoffice_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KPIGW_LOG_JSON", "false")
    sources = tmp_path / "sources"
    write_eoffice_source(sources, page_size=100, params={"kemNhatKy": "1"})
    return ["--database-url", f"sqlite:///{tmp_path}/cli.db", "--sources-dir", str(sources)]


def test_sources_list_check_and_preview(cli_env: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*cli_env, "sources", "list"]) == 0
    assert "eoffice\trest" in capsys.readouterr().out
    assert main([*cli_env, "sources", "check", "eoffice"]) == 0
    assert capsys.readouterr().out.startswith("OK: authenticated")
    assert main([*cli_env, "sources", "preview", "eoffice", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    docs = [json.loads(chunk) for chunk in out.replace("}\n{", "}\x00{").split("\x00")]
    assert len(docs) == 2 and docs[0]["work_items"][0]["kind"] == "incoming_document"


def test_check_reports_refused_credentials(cli_env: list[str], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("EOFFICE_PASSWORD", "wrong")
    assert main([*cli_env, "sources", "check", "eoffice"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED (AuthError)") and "wrong" not in out


def test_sync_then_resync(cli_env: list[str], capsys: pytest.CaptureFixture[str], eoffice_state: EOfficeState) -> None:
    assert main([*cli_env, "sync", "eoffice"]) == 0
    first = capsys.readouterr().out
    assert "incoming:" in first and "run 1:" in first
    assert main([*cli_env, "sync", "eoffice", "--stream", "tasks"]) == 0
    assert "0 facts written" in capsys.readouterr().out


def test_sync_waits_for_the_lease_of_a_running_sync(cli_env: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A CLI sync takes the source's lease like a replica's run: it never writes beside one."""
    from datetime import UTC, datetime

    from gateway.store import leases
    from gateway.store.db import make_engine, migrate

    db = make_engine(cli_env[1])
    migrate(db)
    with db.begin() as conn:
        assert leases.acquire(conn, "source:eoffice", holder="replica-7", ttl=60, now=datetime.now(UTC))
    assert main([*cli_env, "sync", "eoffice", "--wait", "0.3"]) == 2
    assert "'eoffice' is being synced by replica-7" in capsys.readouterr().err
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM sync_run").scalar_one() == 0  # it wrote nothing
    with db.begin() as conn:
        leases.release(conn, "source:eoffice", holder="replica-7")
    assert main([*cli_env, "sync", "eoffice", "--wait", "0.3"]) == 0
    with db.connect() as conn:  # and it gave the lease back
        assert conn.exec_driver_sql("SELECT count(*) FROM lease").scalar_one() == 0
    db.dispose()


def test_unknown_source_is_a_clear_error(cli_env: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*cli_env, "sync", "nope"]) == 2
    assert "no source named 'nope'; configured: eoffice" in capsys.readouterr().err


def test_migrate_and_mappings_check(cli_env: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*cli_env, "migrate"]) == 0
    assert "schema at version" in capsys.readouterr().out
    assert main(["mappings", "check", str(ROOT / "mappings")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")
