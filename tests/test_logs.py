"""Structured logs: JSON lines with a correlation id per API request and per sync run; no secrets in them."""

from __future__ import annotations

import logging

import httpx
import orjson

from gateway import logs
from gateway.api import create_app
from gateway.standins.server import serve_in_thread
from tests.conftest import RuntimeFactory


class _Collect(logging.Handler):
    """Formats at emit time, like the production stream handler (the correlation id is read then)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


def test_a_request_gets_a_correlation_id_and_adopts_a_clean_one(make_runtime: RuntimeFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db")
    with (
        serve_in_thread(create_app(runtime, start_scheduler=False)) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        minted = client.get("/healthz").headers["X-Request-ID"]
        assert len(minted) == 32
        assert client.get("/healthz", headers={"X-Request-ID": "fe-42.abc"}).headers["X-Request-ID"] == "fe-42.abc"
        hostile = client.get("/healthz", headers={"X-Request-ID": "<script>" * 20}).headers["X-Request-ID"]
        assert "script" not in hostile and len(hostile) == 32


def test_sync_log_lines_are_json_with_the_run_as_correlation_id(make_runtime: RuntimeFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runtime = make_runtime(f"sqlite:///{tmp_path}/s.db")
    connector = runtime.connector("eoffice")
    collect, logger = _Collect(), logging.getLogger("kpigw.sync")
    logger.addHandler(collect)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        report = runtime.sync.run(connector, streams=["tasks"])
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
        connector.close()
    lines = [line for line in collect.lines if line["msg"] == "sync finished"]
    assert lines and lines[0]["correlation_id"] == f"run-{report.run_id}"
    assert lines[0]["source"] == "eoffice" and lines[0]["level"] == "info"
    password = runtime.sources["eoffice"].config.auth.password.get_secret_value()
    assert all(password not in orjson.dumps(line).decode() for line in collect.lines)
    assert logs.correlation_id.get() is None
