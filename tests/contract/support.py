"""Helpers for contract targets: a loopback context, a stand-in served behind a FaultInjector, source files."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from gateway.connector import Connector, ConnectorContext
from gateway.http import make_http_client
from gateway.retry import RetryPolicy
from gateway.sources import load_source
from gateway.standins.server import RunningServer, serve_in_thread
from tests.contract.faults import FaultInjector

ROOT = Path(__file__).resolve().parents[2]


def context(config_dir: Path = ROOT / "sources", attempts: int = 3) -> ConnectorContext:
    return ConnectorContext(
        http_client=make_http_client,
        retry=RetryPolicy.instant(attempts),
        now=lambda: datetime.now(UTC),
        secrets=lambda name: name,
        config_dir=config_dir,
    )


def serve(stack: ExitStack, app: Any, *, skip: tuple[str, ...] = ()) -> tuple[RunningServer, FaultInjector]:
    faults = FaultInjector(app, skip=skip)
    server = stack.enter_context(serve_in_thread(faults))
    return server, faults


def source_file(directory: Path, shipped: str, edit: Any = None) -> Path:
    """A copy of a shipped source file (``sources/<shipped>``), changed by ``edit(data)``."""
    data = yaml.safe_load((ROOT / "sources" / shipped).read_text(encoding="utf-8"))
    if edit is not None:
        edit(data)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / shipped
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def build(path: Path, env: Mapping[str, str]) -> Connector:
    """Load a source file and build its connector through the ``kpigw.connectors`` entry point."""
    return load_source(path, env=dict(env)).build(context(path.parent))
