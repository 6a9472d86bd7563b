"""Shared fixtures: stores (SQLite always, PostgreSQL when reachable), the e-office stand-in, runtimes.

PostgreSQL tests use a fresh database per test session, created on the server at ``KPIGW_TEST_PG_URL``
(default ``postgresql://postgres@127.0.0.1:5432/test``); when it cannot be reached they are skipped with the
reason printed in the summary (``-ra``), never silently.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from sqlalchemy import Engine

from gateway.metrics import Metrics
from gateway.retry import RetryPolicy
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.standins.eoffice import EOfficeState, create_eoffice_app
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.store.db import make_engine, migrate

ROOT = Path(__file__).resolve().parents[1]
PG_BASE = os.environ.get("KPIGW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Commands run in-process (main([... "sync" ...])) must not freeze the test runner's heap (gateway/gctune.py).
os.environ.setdefault("KPIGW_GC_TUNING", "false")


def _pg_reachable() -> str | None:
    parsed = urlparse(PG_BASE)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), timeout=2):
            pass
    except OSError as exc:
        return f"PostgreSQL at {parsed.hostname}:{parsed.port} unreachable ({exc}); PostgreSQL tests NOT run"
    return None


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    reason = _pg_reachable()
    if reason:
        pytest.skip(reason)
    import psycopg

    name = f"kpigw_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_BASE.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset_pg(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def empty_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store: a new SQLite file, or the session's PostgreSQL database with a fresh schema."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    url: str = request.getfixturevalue("pg_server_url")
    _reset_pg(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and, when reachable, on PostgreSQL (an empty schema each time)."""
    return empty_store(request.param, request, tmp_path)


@pytest.fixture
def db(store_url: str) -> Iterator[Engine]:
    """A migrated, empty store on each backend of ``store_url``."""
    engine = make_engine(store_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def eoffice_state() -> EOfficeState:
    """A small e-office (one week of documents) so syncs take well under a second."""
    return EOfficeState(days=7, token_ttl=300)


@pytest.fixture
def eoffice(eoffice_state: EOfficeState) -> Iterator[RunningServer]:
    with serve_in_thread(create_eoffice_app(eoffice_state)) as server:
        yield server


def write_eoffice_source(directory: Path, *, page_size: int = 500, **stream_overrides: Any) -> Path:
    """Copy the shipped e-office source file with a different page size (and stream overrides)."""
    data = yaml.safe_load((ROOT / "sources" / "eoffice.yaml").read_text(encoding="utf-8"))
    for stream in data["streams"].values():
        stream["paginator"]["size"] = page_size
        stream.update(stream_overrides)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "eoffice.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def eoffice_env(eoffice: RunningServer, eoffice_state: EOfficeState) -> dict[str, str]:
    return {
        "EOFFICE_URL": eoffice.url,
        "EOFFICE_USER": eoffice_state.username,
        "EOFFICE_PASSWORD": eoffice_state.password,
    }


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def make_runtime(tmp_path: Path, eoffice_env: dict[str, str]) -> Iterator[RuntimeFactory]:
    """Build runtimes on a store URL with the e-office source (instant retries, own metrics registry)."""
    built: list[Runtime] = []

    def factory(store: str, *, page_size: int = 50, retry: RetryPolicy | None = None, **overrides: Any) -> Runtime:
        sources = tmp_path / "sources"
        write_eoffice_source(sources, page_size=page_size, **overrides)
        settings = Settings(database_url=store, sources_dir=sources, mappings_dir=ROOT / "mappings", scheduler=False)
        runtime = build_runtime(settings, retry=retry or RetryPolicy.instant(), metrics=Metrics(), env=eoffice_env)
        built.append(runtime)
        return runtime

    yield factory
    for runtime in built:
        runtime.close()
