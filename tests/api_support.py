"""Shared helpers for the facts-API tests: stores (SQLite file, fresh PostgreSQL database), facts, clients.

Not a conftest: test modules import what they need. PostgreSQL tests skip loudly when the server at
``KPIGW_TEST_PG_URL`` (default postgresql://postgres@127.0.0.1:5432/test) is unreachable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from gateway.api import create_app
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.store import clients
from gateway.store.facts import FACT, FactWriteResult, write_facts
from gateway.store.periods import close_period, reopen_period
from gateway.types import Fact, Role

PG_URL = os.environ.get("KPIGW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 2, 10, 3, 0, tzinfo=UTC)


def _admin_engine() -> Any:
    return create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")


def pg_reachable() -> str | None:
    """None when reachable, else why not."""
    try:
        engine = _admin_engine()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty database for this test session, dropped afterwards. Skips (loudly) without PostgreSQL."""
    why = pg_reachable()
    if why is not None:
        pytest.skip(f"PostgreSQL NOT TESTED: {PG_URL} unreachable ({why}); set KPIGW_TEST_PG_URL")
    name = f"kpigw_api_test_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_runtime(url: str, tmp: Path, **settings: Any) -> Runtime:
    sources = tmp / "no-sources"
    sources.mkdir(exist_ok=True)
    return build_runtime(Settings(database_url=url, sources_dir=sources, scheduler=False, **settings))


def fact(n: int, *, agency: str = "SKHCN", unit: str | None = "SKHCN.VP", person: str | None = None,
         period: str = "2026-01", units: str = "1.5", record: str | None = None, **values: Any) -> Fact:  # fmt: skip
    due = datetime(int(period[:4]), int(period[5:]), 15, 3, tzinfo=UTC)
    base: dict[str, Any] = {
        "item_key": f"{agency}:doc{n}", "person_id": person or f"P{n % 4}", "role": Role.LEAD, "agency": agency,
        "unit": unit, "period": period, "product_code": "VB", "catalog_version": "2026.1", "rule_id": "r-doc",
        "units": Decimal(units), "quantity": Decimal(1), "assigned": True, "completed": True, "due_at": due,
        "done_at": due - timedelta(days=1), "on_time": True, "delays": 0, "failed_reviews": 0, "exempt": False,
        "source": "eoffice", "stream": "docs", "record_key": record or f"{agency}-{n}",
        "lineage": {"raw": {"source": "eoffice", "stream": "docs", "record_key": record or f"{agency}-{n}"},
                    "person": {"system": "ioffice", "user_id": f"u{n}", "person_id": person or f"P{n % 4}"}},
    }  # fmt: skip
    base.update(values)
    return Fact(**base)


def put(runtime: Runtime, facts: list[Fact], *, now: datetime = NOW) -> FactWriteResult:
    """Write facts as a sync page would: each fact's origin replaced by what is given for it."""
    with runtime.db.begin() as conn:
        origins = [(f.source, f.stream, f.record_key) for f in facts]
        return write_facts(conn, origins=origins, facts=facts, now=now)


def close_month(runtime: Runtime, period: str, minutes: int = 0, agency: str = "SKHCN") -> None:
    """Close (agency, period) as an admin would, ``minutes`` after NOW."""
    with runtime.db.begin() as conn:
        close_period(conn, agency=agency, period=period, by="t", policy={}, now=NOW + timedelta(minutes=minutes))


def reopen_month(runtime: Runtime, period: str, minutes: int = 0, agency: str = "SKHCN") -> dict[str, Any]:
    with runtime.db.begin() as conn:
        return reopen_period(conn, agency=agency, period=period, by="t", reason="test",
                             now=NOW + timedelta(minutes=minutes))  # fmt: skip


def write_records(runtime: Runtime, records: list[str], facts: list[Fact], minutes: int) -> FactWriteResult:
    """A sync page of e-office ``records`` (stream docs) that now yield exactly ``facts``."""
    with runtime.db.begin() as conn:
        return write_facts(conn, origins=[("eoffice", "docs", r) for r in records], facts=facts,
                           now=NOW + timedelta(minutes=minutes))  # fmt: skip


def fact_columns(runtime: Runtime, key: str, *columns: str) -> tuple[Any, ...]:
    """The stored ``columns`` of the fact ``key``."""
    with runtime.db.connect() as conn:
        return tuple(conn.execute(select(*(FACT.c[c] for c in columns)).where(FACT.c.fact_key == key)).one())


def new_key(runtime: Runtime, client_id: str, agencies: list[str], roles: tuple[str, ...] = ("read_facts",),
            *, rate_per_minute: int | None = None) -> str:  # fmt: skip
    with runtime.db.begin() as conn:
        clients.create_client(conn, client_id=client_id, name=client_id, agencies=agencies, roles=list(roles),
                              rate_per_minute=rate_per_minute, now=datetime.now(UTC))  # fmt: skip
        return clients.issue_key(conn, client_id=client_id, now=datetime.now(UTC))[1]


@dataclass
class Api:
    runtime: Runtime
    server: RunningServer
    http: httpx.Client

    def get(self, path: str, key: str | None, **params: Any) -> httpx.Response:
        headers = {"X-API-Key": key} if key else {}
        return self.http.get(path, params=params, headers=headers)


@contextmanager
def serve(runtime: Runtime) -> Iterator[Api]:
    """The app on a loopback uvicorn. ``Connection: close``: keep-alive over h11 here meets delayed ACKs (~45 ms
    per request); a fresh loopback connection costs well under a millisecond."""
    with serve_in_thread(create_app(runtime, start_scheduler=False)) as server, \
            httpx.Client(base_url=server.url, timeout=30, headers={"Connection": "close"}) as http:  # fmt: skip
        yield Api(runtime, server, http)
