"""The one place where the gateway's resources are built: store engine, metrics, mappings, sources, sync engine
and scheduler. The API, the CLI and the tests all get a :class:`Runtime` and nothing builds its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
from sqlalchemy import Engine

from gateway.connector import Connector, ConnectorContext
from gateway.errors import ConfigError
from gateway.http import make_http_client
from gateway.mapping import MappingHolder
from gateway.metrics import Metrics
from gateway.metrics_store import StoreMetrics
from gateway.retry import RetryPolicy
from gateway.settings import Settings
from gateway.sources import SourceSpec, load_sources
from gateway.store import make_engine, migrate
from gateway.sync.engine import SyncEngine
from gateway.sync.failpoints import Failpoints
from gateway.sync.prepare import default_workers, shared_preparer
from gateway.sync.scheduler import Scheduler

log = logging.getLogger("kpigw")


@dataclass
class Runtime:
    settings: Settings
    db: Engine
    metrics: Metrics
    mappings: MappingHolder
    sources: dict[str, SourceSpec]
    sync: SyncEngine
    transport: httpx.BaseTransport | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    scheduler: Scheduler | None = None

    def context_for(self, source: str) -> ConnectorContext:
        return ConnectorContext(
            http_client=partial(make_http_client, transport=self.transport),
            retry=self.retry.with_observer(self.metrics.retry_observer(source)),
            now=lambda: datetime.now(UTC),
            secrets=_no_secret_store,
            config_dir=self.settings.sources_dir,
            observe_request=self.metrics.observe_request,
        )

    def connector(self, source: str | SourceSpec) -> Connector:
        spec = source if isinstance(source, SourceSpec) else self.source(source)
        return spec.build(self.context_for(spec.name))

    def source(self, name: str) -> SourceSpec:
        if name not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none"
            raise ConfigError(f"no source named {name!r}; configured: {known}")
        return self.sources[name]

    def start_scheduler(self) -> Scheduler:
        self.scheduler = Scheduler(
            sources=self.sources, engine=self.sync, db=self.db, connector_for=self.connector, metrics=self.metrics,
            replica=self.settings.replica_id, lease_seconds=self.settings.lease_seconds,
            max_concurrent=self.settings.max_concurrent_syncs,
        )
        self.scheduler.start()
        return self.scheduler

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        self.db.dispose()


def _no_secret_store(name: str) -> str:
    raise ConfigError(f"secret {name!r} requested but no secret store is configured; use ${{ENV}} references")


def build_runtime(
    settings: Settings,
    *,
    transport: httpx.BaseTransport | None = None,
    retry: RetryPolicy | None = None,
    metrics: Metrics | None = None,
    clock: Callable[[], datetime] | None = None,
    env: dict[str, str] | None = None,
) -> Runtime:
    """Build (and migrate) everything; fails fast with a ConfigError naming the bad file."""
    db = make_engine(settings.database_url)
    migrate(db)
    metrics = metrics or Metrics()
    mappings = MappingHolder(settings.mappings_dir)
    sources = load_sources(settings.sources_dir, env=env)
    kwargs: dict[str, Any] = {"clock": clock} if clock else {}
    workers = settings.prepare_workers if settings.prepare_workers is not None else default_workers()
    sync = SyncEngine(engine=db, valuer=lambda: mappings.current, metrics=metrics, replica=settings.replica_id,
                      failpoints=Failpoints.from_env(), preparer=shared_preparer(workers), **kwargs)
    StoreMetrics(db=db, metrics=metrics, sources=sources).register()  # quarantine, facts, freshness from the store
    return Runtime(settings=settings, db=db, metrics=metrics, mappings=mappings, sources=sources, sync=sync,
                   transport=transport, retry=retry or RetryPolicy())
