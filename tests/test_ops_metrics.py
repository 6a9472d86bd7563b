"""Metrics read from the store at scrape time: open quarantine, facts by state and last success survive a restart
and are the same on every replica; no label ever holds a person or record id."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from gateway.metrics import Metrics
from gateway.metrics_store import StoreMetrics
from gateway.standins.eoffice import EOfficeState
from gateway.store import make_engine
from tests.conftest import RuntimeFactory
from tests.spine_support import count, metric


@pytest.fixture
def eoffice_state() -> EOfficeState:
    return EOfficeState(days=3, token_ttl=300)


def test_store_metrics_survive_a_restart(make_runtime: RuntimeFactory, tmp_path: Path) -> None:
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db", params={"kemNhatKy": "1"})
    connector = runtime.connector("eoffice")
    try:
        report = runtime.sync.run(connector)
    finally:
        connector.close()
    open_entries = count(runtime.db, "SELECT count(*) FROM quarantine WHERE status = 'open'")
    active = count(runtime.db, "SELECT count(*) FROM fact WHERE state = 'active'")
    assert open_entries > 0 and active > 0 and report.outcome == "partial"

    restarted = Metrics()  # a new process: nothing in memory, everything from the store
    StoreMetrics(db=runtime.db, metrics=restarted, sources=runtime.sources, min_interval=0).register()
    registry = restarted.registry
    assert metric(registry, "kpigw_quarantine_open", source="eoffice") == open_entries
    assert metric(registry, "kpigw_facts", state="active") == active
    assert metric(registry, "kpigw_facts", state="retracted") == 0
    last = metric(registry, "kpigw_source_last_success_timestamp_seconds", source="eoffice")
    assert time.time() - 120 < last <= time.time()
    assert 0 <= metric(registry, "kpigw_source_freshness_lag_seconds", source="eoffice") < 120

    # a store outage never breaks the scrape: the last values stay
    StoreMetrics(db=make_engine("postgresql://nobody@127.0.0.1:9/none"), metrics=restarted, sources=["eoffice"],
                 min_interval=0).register()  # fmt: skip
    exposition = generate_latest(registry).decode()
    assert f'kpigw_quarantine_open{{source="eoffice"}} {float(open_entries)}' in exposition


def test_no_label_names_a_person_or_a_record(make_runtime: RuntimeFactory, tmp_path: Path) -> None:
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db", params={"kemNhatKy": "1"})
    connector = runtime.connector("eoffice")
    try:
        runtime.sync.run(connector)
    finally:
        connector.close()
    values = {v for f in runtime.metrics.registry.collect() for s in f.samples for v in s.labels.values()}
    keys = {str(r) for r in range(1, 200)}
    assert not values & keys  # no record ids
    assert not [v for v in values if v.startswith(("doc:", "task:")) or "@" in v]
