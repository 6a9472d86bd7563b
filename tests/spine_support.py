"""Small helpers for sync tests: read back what the store holds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

if TYPE_CHECKING:
    from gateway.runtime import Runtime


def fact_state(db: Engine) -> dict[str, tuple[str, str]]:
    """fact_key -> (value_hash, state): what two equivalent syncs must agree on."""
    with db.connect() as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(text("SELECT fact_key, value_hash, state FROM fact"))}


def count(db: Engine, sql: str, **params: Any) -> int:
    with db.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def rows(db: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def facts_where(db: Engine, **equals: Any) -> list[dict[str, Any]]:
    """Typed fact rows (booleans and aware datetimes, through the store's column types)."""
    from sqlalchemy import select

    from gateway.store.facts import FACT

    stmt = select(FACT)
    for column, value in equals.items():
        stmt = stmt.where(FACT.c[column] == value)
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def run_source(runtime: Runtime, source: str) -> Any:
    """Sync ``source`` once with the runtime's engine, closing its connector afterwards; the run's report."""
    connector = runtime.connector(source)
    try:
        return runtime.sync.run(connector)
    finally:
        connector.close()
