"""The connector seam: the protocol every connector implements and how connectors are found.

A connector reads one source system. The gateway builds it from the source's configuration with its I/O
injected (:class:`ConnectorContext`: an HTTP client factory, the retry policy, the clock, secrets), then:

- ``check()`` proves connectivity and credentials (raises ``AuthError`` / ``SourceUnavailable``);
- ``read(stream, cursor)`` yields :class:`Page` objects from the saved cursor, each with the cursor value that
  is safe to commit once the page is stored;
- ``normalize(record)`` turns one source record into work items (raises ``NormalizeError`` for a bad record).

Optionally, ``normalizer_recipe()`` returns a :class:`NormalizerRecipe`: how to build the same ``normalize`` in
another process. With one, the sync engine prepares pages (normalize, value, encode) in worker processes, off
the interpreter lock of the process that fetches and stores (:mod:`gateway.sync.prepare`); without one, a
connector's pages are prepared in the gateway's process, as before.

Connector kinds are registered under the ``kpigw.connectors`` entry-point group; a third-party package adds
one by declaring ``[project.entry-points."kpigw.connectors"] mykind = "pkg.module:MyConnector"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from gateway.errors import ConfigError
from gateway.retry import RetryPolicy
from gateway.types import SourceRecord, WorkItem

ENTRY_POINT_GROUP = "kpigw.connectors"


@dataclass(frozen=True, slots=True)
class RecordProblem:
    """A record that could not even be read into a ``SourceRecord`` (bad shape, failed sub-request)."""

    key: str
    payload: Any
    reason: str
    error_kind: str = "ProtocolError"


@dataclass(frozen=True, slots=True)
class Page:
    records: Sequence[SourceRecord]
    checkpoint: str | None
    problems: Sequence[RecordProblem] = ()


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str
    streams: Sequence[str] = ()


@dataclass
class ConnectorContext:
    """Everything a connector may touch outside itself; tests hand in their own."""

    http_client: Callable[..., httpx.Client]
    retry: RetryPolicy
    now: Callable[[], datetime]
    secrets: Callable[[str], str]
    config_dir: Path
    observe_request: Callable[[str, str, str, float], None] = field(default=lambda *_: None)


Normalize = Callable[[SourceRecord], Sequence[WorkItem]]


@dataclass(frozen=True, slots=True)
class NormalizerRecipe:
    """``build(*args)`` returns a connector's ``normalize``, in any process.

    ``build`` must be a module-level function (it travels by name) and ``args`` plain picklable data: the
    stream configuration, never the connector's clients or credentials. The result must normalize every record
    exactly as the connector's own ``normalize`` does; ``tests/test_prepare_workers.py`` checks this for the
    bundled connectors."""

    build: Callable[..., Normalize]
    args: tuple[Any, ...]
    # The payloads are plain JSON values (decoded from JSON, nothing else): a record may then cross to a worker
    # as JSON (in the source's key order) and be decoded there, instead of as a pickled copy.
    json_payloads: bool = False


@runtime_checkable
class Connector(Protocol):
    name: str

    def streams(self) -> Sequence[str]: ...

    def check(self) -> CheckResult: ...

    def read(self, stream: str, cursor: str | None) -> Iterator[Page]: ...

    def normalize(self, record: SourceRecord) -> Sequence[WorkItem]: ...

    def close(self) -> None: ...


class ConnectorFactory(Protocol):
    def __call__(self, *, name: str, config: Mapping[str, Any], context: ConnectorContext) -> Connector: ...


def connector_kinds() -> dict[str, ConnectorFactory]:
    """Installed connector kinds by name, from the entry-point group."""
    return {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}


def build_connector(kind: str, *, name: str, config: Mapping[str, Any], context: ConnectorContext) -> Connector:
    kinds = connector_kinds()
    if kind not in kinds:
        known = ", ".join(sorted(kinds)) or "none"
        raise ConfigError(f"unknown connector kind {kind!r}; installed kinds: {known}", source=name)
    return kinds[kind](name=name, config=config, context=context)
