"""The store's tables (sqlmodel), one per noun of the pipeline.

- ``raw_record``: append-only archive of every source record version (payload + content hash); re-mapping reads
  from here, never from the source.
- ``work_item``: the latest normalized form of each source record.
- ``fact``: KPI facts, natural key ``fact_key`` (item key | person | role), values compared by ``value_hash``
  so an unchanged re-read writes nothing. Standard units are integers of 1/10,000 (``*_scaled``).
- ``fact_change``: the change feed and the facts' history: one row per insert, update or retraction, with the
  fact's snapshot, numbered in commit order (see :mod:`gateway.store.facts`).
- ``cursor``, ``sync_run``, ``quarantine``: the sync engine's state.
- ``period_closure``, ``lease``, ``audit_log``: closed periods, replica leases and admin/audit trail.

Timestamps are stored as UTC and come back timezone-aware (:class:`UtcDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; attach a timezone first")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime(), nullable=nullable, index=index))


def _bigint_pk() -> Any:
    # BigInteger on PostgreSQL, INTEGER (rowid alias, autoincrement) on SQLite.
    return Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    )


def _text(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(Text, nullable=nullable))


class RawRecord(SQLModel, table=True):
    __tablename__ = "raw_record"
    __table_args__ = (
        UniqueConstraint("source", "stream", "record_key", "content_hash", name="uq_raw_version"),
        Index("ix_raw_key", "source", "stream", "record_key", "id"),
    )
    id: int | None = _bigint_pk()
    source: str
    stream: str
    record_key: str
    content_hash: str
    payload: str = _text(nullable=False)
    fetched_at: datetime = _ts()
    run_id: int | None = None


class WorkItemRow(SQLModel, table=True):
    __tablename__ = "work_item"
    __table_args__ = (Index("ix_work_item_key", "item_key"), Index("ix_work_item_agency", "agency"))
    source: str = Field(primary_key=True)
    stream: str = Field(primary_key=True)
    record_key: str = Field(primary_key=True)
    item_key: str
    kind: str
    agency: str
    unit: str | None = None
    content_hash: str
    body: str = _text(nullable=False)
    match_status: str = "mapped"  # mapped | unmatched | partial (some participants unresolved)
    problems: str | None = _text()
    updated_at: datetime = _ts()


class FactRow(SQLModel, table=True):
    __tablename__ = "fact"
    __table_args__ = (
        UniqueConstraint("fact_key", name="uq_fact_key"),
        Index("ix_fact_agency_period", "agency", "period", "id"),
        Index("ix_fact_origin", "source", "stream", "record_key"),
    )
    id: int | None = _bigint_pk()
    fact_key: str
    item_key: str
    person_id: str
    role: str
    agency: str
    unit: str | None = None
    period: str
    product_code: str
    catalog_version: str
    rule_id: str
    units_scaled: int = Field(sa_column=Column(BigInteger, nullable=False))
    quantity_scaled: int = Field(sa_column=Column(BigInteger, nullable=False))
    assigned: bool
    completed: bool
    due_at: datetime | None = _ts(nullable=True)
    done_at: datetime | None = _ts(nullable=True)
    on_time: bool | None = None
    delays: int
    failed_reviews: int
    exempt: bool
    source: str
    stream: str
    record_key: str
    lineage: str = _text(nullable=False)
    state: str = "active"  # active | retracted
    value_hash: str
    version: int = 1
    change_seq: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class FactChange(SQLModel, table=True):
    __tablename__ = "fact_change"
    __table_args__ = (Index("ix_fact_change_agency_seq", "agency", "seq"), Index("ix_fact_change_fact", "fact_id"))
    seq: int | None = _bigint_pk()
    fact_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    fact_key: str
    op: str  # insert | update | retract
    agency: str
    period: str
    version: int
    committed_at: datetime = _ts()
    snapshot: str = _text(nullable=False)


class CursorRow(SQLModel, table=True):
    __tablename__ = "cursor"
    source: str = Field(primary_key=True)
    stream: str = Field(primary_key=True)
    value: str | None = None
    run_id: int | None = None
    updated_at: datetime = _ts()


class SyncRun(SQLModel, table=True):
    __tablename__ = "sync_run"
    __table_args__ = (Index("ix_sync_run_source", "source", "id"),)
    id: int | None = _bigint_pk()
    source: str
    trigger: str = "manual"  # manual | schedule | backfill | replay
    replica: str | None = None
    started_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)
    outcome: str = "running"  # running | success | failed | partial
    pages: int = 0
    records_read: int = 0
    records_archived: int = 0
    records_mapped: int = 0
    records_quarantined: int = 0
    facts_written: int = 0
    facts_retracted: int = 0
    error: str | None = _text()
    error_kind: str | None = None


class QuarantineRow(SQLModel, table=True):
    __tablename__ = "quarantine"
    __table_args__ = (
        UniqueConstraint("source", "stream", "record_key", "content_hash", name="uq_quarantine_version"),
        Index("ix_quarantine_open", "status", "source", "stream", "record_key"),
    )
    id: int | None = _bigint_pk()
    source: str
    stream: str
    record_key: str
    content_hash: str
    stage: str  # fetch | normalize | map
    error_kind: str
    reason: str = _text(nullable=False)
    payload: str = _text(nullable=False)
    first_seen_at: datetime = _ts()
    last_seen_at: datetime = _ts()
    seen_count: int = 1
    status: str = "open"  # open | replayed | discarded
    resolved_at: datetime | None = _ts(nullable=True)
    resolved_by: str | None = None
    resolution_note: str | None = _text()


class PeriodClosure(SQLModel, table=True):
    __tablename__ = "period_closure"
    agency: str = Field(primary_key=True)
    period: str = Field(primary_key=True)
    closed_at: datetime = _ts()
    closed_by: str
    closed_at_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    digest: str


class Lease(SQLModel, table=True):
    __tablename__ = "lease"
    name: str = Field(primary_key=True)
    holder: str
    acquired_at: datetime = _ts()
    expires_at: datetime = _ts()


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"
    id: int | None = _bigint_pk()
    at: datetime = _ts(index=True)
    actor: str
    action: str
    detail: str = _text(nullable=False)


class SchemaMigration(SQLModel, table=True):
    __tablename__ = "schema_migration"
    version: int = Field(primary_key=True)
    description: str
    applied_at: datetime = _ts()


# --- migration 2 (facts API): API clients and keys, corrections to closed periods, frozen policies -----------


class ApiClient(SQLModel, table=True):
    """A caller of the facts API: the agencies it may read (``*`` = all) and its roles (read_facts, admin)."""

    __tablename__ = "api_client"
    id: str = Field(primary_key=True)
    name: str
    agencies: str = _text(nullable=False)  # JSON list of agency codes, or ["*"]
    roles: str = _text(nullable=False)  # JSON list: read_facts | admin
    rate_per_minute: int | None = None  # None: the gateway's default
    disabled: bool = False
    created_at: datetime = _ts()


class ApiKey(SQLModel, table=True):
    """An API key: only its SHA-256 hash is stored; the secret is shown once, when issued."""

    __tablename__ = "api_key"
    __table_args__ = (Index("ix_api_key_client", "client_id"),)
    key_id: str = Field(primary_key=True)
    client_id: str
    secret_hash: str
    created_at: datetime = _ts()
    expires_at: datetime | None = _ts(nullable=True)
    revoked_at: datetime | None = _ts(nullable=True)


class FactCorrection(SQLModel, table=True):
    """A source change that touches a closed (agency, period): recorded here, the frozen fact is left as it was."""

    __tablename__ = "fact_correction"
    __table_args__ = (
        Index("ix_fact_correction_period", "agency", "period", "id"),
        Index("ix_fact_correction_key", "fact_key", "id"),
    )
    id: int | None = _bigint_pk()
    fact_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    fact_key: str
    agency: str
    period: str  # the closed period the change touches
    op: str  # insert | update | retract | revert
    proposed_hash: str
    proposed: str = _text(nullable=False)  # JSON of the values the source now gives (snapshot shape)
    detected_at: datetime = _ts()


class PeriodReopening(SQLModel, table=True):
    """A closed period opened again: the closure it ended, who reopened it and why, and the corrections applied."""

    __tablename__ = "period_reopening"
    __table_args__ = (Index("ix_period_reopening_period", "agency", "period", "id"),)
    id: int | None = _bigint_pk()
    agency: str
    period: str
    closed_at: datetime = _ts()
    closed_by: str
    closed_at_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    digest: str  # the digest of the closure that ended
    reopened_at: datetime = _ts()
    reopened_by: str
    reason: str = _text(nullable=False)
    last_correction_id: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))  # applied up to here
    facts_inserted: int = 0
    facts_updated: int = 0
    facts_retracted: int = 0


class PeriodPolicy(SQLModel, table=True):
    """The scoring policy in force when a period was closed, so its summaries stay reproducible."""

    __tablename__ = "period_policy"
    agency: str = Field(primary_key=True)
    period: str = Field(primary_key=True)
    policy: str = _text(nullable=False)
    fact_count: int = 0


# --- migration 3 (operations): per-source control shared by every replica ------------------------------------


class SourceControl(SQLModel, table=True):
    """A source's operator state: paused (every replica skips it) and a pending manual trigger."""

    __tablename__ = "source_control"
    source: str = Field(primary_key=True)
    paused: bool = False
    reason: str | None = _text()
    updated_by: str | None = None
    updated_at: datetime = _ts()
    trigger_requested_at: datetime | None = _ts(nullable=True)


class RateWindow(SQLModel, table=True):
    """Requests per API client and minute, summed over every replica (:mod:`gateway.security.shared_rate`)."""

    __tablename__ = "rate_window"
    client_id: str = Field(primary_key=True)
    minute: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))  # since the epoch
    count: int = 0
