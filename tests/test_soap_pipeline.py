"""Pipelined join calls (``join_concurrency``): the same pages as one call after another, really concurrent,
and a failed call fails its page before anything of it is committed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.soap import SoapConnector, clear_wsdl_cache
from connectors.soap.config import SoapSourceConfig
from gateway.errors import ProtocolError
from gateway.metrics import Metrics
from gateway.retry import RetryPolicy
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.standins.edoc_hub import SANDBOX_TOKEN, EdocHubState, create_edoc_hub_app
from gateway.standins.server import RunningServer, serve_in_thread
from tests._soap_helpers import ROOT, hub_config, hub_connector
from tests.contract.support import source_file
from tests.spine_support import count, rows


class InFlight:
    """ASGI wrapper counting the hub's concurrent requests (the most seen at once)."""

    def __init__(self, app: Any) -> None:
        self.app, self.now, self.most = app, 0, 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.now -= 1


@pytest.fixture
def state() -> EdocHubState:
    return EdocHubState(days=3, bulk_records=70)


@pytest.fixture
def hub(state: EdocHubState) -> Iterator[tuple[RunningServer, InFlight]]:
    clear_wsdl_cache()
    counter = InFlight(create_edoc_hub_app(state, latency=0.005))
    with serve_in_thread(counter) as server:
        yield server, counter


def small_pages(url: str, concurrency: int, batch: int = 8) -> SoapSourceConfig:
    """The shipped source with pages of 25 documents and joins of ``batch`` ids per call."""
    cfg = hub_config(url, SANDBOX_TOKEN)
    stream = cfg.streams["documents"]
    assert stream.paginator is not None
    joins = [j.model_copy(update={"batch": batch}) for j in stream.joins]
    stream = stream.model_copy(
        update={"paginator": stream.paginator.model_copy(update={"size": 25}), "joins": joins,
                "join_concurrency": concurrency}
    )  # fmt: skip
    return cfg.model_copy(update={"streams": {"documents": stream}})


def read_all(url: str, concurrency: int) -> list[tuple[Any, ...]]:
    cfg = small_pages(url, concurrency)
    connector = hub_connector(url, SANDBOX_TOKEN, streams=cfg.streams)
    try:
        return [
            (
                [(r.key, r.payload, r.cursor_value) for r in page.records],
                page.checkpoint,
                [(p.key, p.reason) for p in page.problems],
            )
            for page in connector.read("documents", None)
        ]
    finally:
        connector.close()


def test_pipelined_joins_read_exactly_what_one_call_after_another_reads(
    hub: tuple[RunningServer, InFlight], state: EdocHubState
) -> None:
    server, counter = hub
    sequential = read_all(server.url, 1)
    assert counter.most == 1
    pipelined = read_all(server.url, 6)
    assert counter.most > 1  # the calls really overlapped
    assert pipelined == sequential  # same records, same order, same attached packets, same checkpoints
    assert len(sequential) > 2
    documents = sum(len(records) for records, _, _ in sequential)
    assert documents == 70 + sum(len(state.documents_of(a)) for a in ("SKHCN", "VPUBND", "XA_COCSAN"))
    assert all(r[1]["document"] and r[1]["statuses"] for records, _, _ in sequential for r in records)


def test_a_failed_join_call_fails_the_read_before_its_page_is_yielded(
    hub: tuple[RunningServer, InFlight], state: EdocHubState
) -> None:
    server, _ = hub
    cfg = small_pages(server.url, 6)
    connector = hub_connector(server.url, SANDBOX_TOKEN, streams=cfg.streams)
    # page 1: one list call and 4 + 4 join calls; page 2's list call passes, one of its join calls fails
    state.fail_next(*["pass"] * 11, "fault_client")
    pages = connector.read("documents", None)
    try:
        first = next(pages)
        assert len(first.records) == 25
        with pytest.raises(ProtocolError, match="soap:Client"):
            next(pages)
    finally:
        pages.close()
        connector.close()


def test_join_concurrency_needs_the_connections_and_joins() -> None:
    cfg = hub_config("http://127.0.0.1:1", SANDBOX_TOKEN).model_dump(mode="json", by_alias=True)
    cfg["auth"]["token"] = "t"
    cfg["streams"]["documents"]["join_concurrency"] = 11  # the default pool has 10 connections
    with pytest.raises(ValueError, match="max_connections"):
        SoapSourceConfig.model_validate(cfg)
    cfg["streams"]["documents"]["join_concurrency"] = 2
    cfg["streams"]["documents"]["joins"] = []
    with pytest.raises(ValueError, match="has none"):
        SoapSourceConfig.model_validate(cfg)


def _runtime(tmp_path: Path, url: str, concurrency: int, db: str) -> Runtime:
    def edit(data: dict[str, Any]) -> None:
        stream = data["streams"]["documents"]
        stream["paginator"]["size"] = 25
        stream["join_concurrency"] = concurrency
        for join in stream["joins"]:
            join["batch"] = 8

    source_file(tmp_path / f"sources-{db}", "edoc-hub.yaml", edit)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/{db}.db", sources_dir=tmp_path / f"sources-{db}",
                        mappings_dir=ROOT / "mappings", scheduler=False)  # fmt: skip
    return build_runtime(settings, retry=RetryPolicy.instant(), metrics=Metrics(),
                         env={"EDOC_HUB_URL": url, "EDOC_HUB_TOKEN": SANDBOX_TOKEN})  # fmt: skip


def _sync(rt: Runtime) -> Any:
    connector: SoapConnector = rt.connector("edoc-hub")  # type: ignore[assignment]
    try:
        return rt.sync.run(connector)
    finally:
        connector.close()


def _facts(rt: Runtime) -> set[tuple[Any, ...]]:
    sql = "SELECT fact_key, value_hash FROM fact WHERE state = 'active'"
    return {tuple(r.values()) for r in rows(rt.db, sql)}


def test_a_failure_mid_page_commits_nothing_of_that_page_and_a_rerun_completes(
    tmp_path: Path, hub: tuple[RunningServer, InFlight], state: EdocHubState
) -> None:
    server, _ = hub
    reference = _runtime(tmp_path, server.url, 1, "reference")
    assert _sync(reference).outcome == "success"

    rt = _runtime(tmp_path, server.url, 6, "pipelined")
    state.fail_next(*["pass"] * 11, "fault_client")  # one join call of page 2 fails
    report = _sync(rt)
    assert report.outcome == "failed"
    assert report.streams[0].pages == 1
    assert count(rt.db, "SELECT count(DISTINCT record_key) FROM raw_record") == 25  # page 1, nothing of page 2
    first_cursor = rows(rt.db, "SELECT value FROM cursor")[0]["value"]

    assert _sync(rt).outcome == "success"
    assert rows(rt.db, "SELECT value FROM cursor")[0]["value"] > first_cursor
    assert _facts(rt) == _facts(reference)
    reference.close()
    rt.close()
