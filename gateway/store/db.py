"""Engine construction and versioned schema migrations.

SQLite (the default, a file) runs in WAL mode and opens every write transaction with ``BEGIN IMMEDIATE`` so
two writers queue on the busy timeout instead of failing on lock upgrade; while a sync runs, a
:class:`WalCheckpointer` thread checkpoints the WAL off the commit path. PostgreSQL is used as is; migrations
there run under an advisory lock so replicas starting together migrate once.

Migrations are numbered functions; ``schema_migration`` records which ones ran. A new column or table is a new
migration with explicit DDL, never an edit of an old one.
"""

from __future__ import annotations

import logging
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry

from gateway.store import models as m

log = logging.getLogger("kpigw.store")

MIGRATION_LOCK_KEY = 0x4B5049_0001  # advisory lock id: "KPI" + 1
FACT_WRITE_LOCK_KEY = 0x4B5049_0002  # serializes fact-change numbering (commit order)
SQLITE_PAGE_SIZE = 8192  # for new files only; see _tune_sqlite
SQLITE_CACHE_KIB = 16384
SQLITE_CHECKPOINT_BYTES = 256 * 2**20  # WAL after which a writer checkpoints itself: WalCheckpointer's backstop
PING_AFTER_IDLE_SECONDS = 2.0  # a pooled PostgreSQL connection idle longer is pinged at checkout (_ping_when_idle)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    tables = [
        m.RawRecord,
        m.WorkItemRow,
        m.FactRow,
        m.FactChange,
        m.CursorRow,
        m.SyncRun,
        m.QuarantineRow,
        m.PeriodClosure,
        m.Lease,
        m.AuditLog,
    ]
    m.SQLModel.metadata.create_all(conn, tables=[t.__table__ for t in tables])  # type: ignore[attr-defined]


def _v2_facts_api(conn: Connection) -> None:
    tables = [m.ApiClient, m.ApiKey, m.FactCorrection, m.PeriodPolicy]
    m.SQLModel.metadata.create_all(conn, tables=[t.__table__ for t in tables])  # type: ignore[attr-defined]
    # keyset pages filtered by unit or person, in id order, without a sort
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_fact_unit_period_id ON fact (agency, unit, period, id)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_fact_person_period_id ON fact (person_id, period, id)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_audit_log_actor ON audit_log (actor, id)"))


def _v3_source_control(conn: Connection) -> None:
    m.SQLModel.metadata.create_all(conn, tables=[m.SourceControl.__table__])  # type: ignore[attr-defined]


def _v4_write_path_indexes(conn: Connection) -> None:
    # (person_id, period) and (agency, unit, period) are prefixes of the keyset indexes of v2: every write paid
    # for two indexes no query needed.
    conn.execute(text("DROP INDEX IF EXISTS ix_fact_person_period"))
    conn.execute(text("DROP INDEX IF EXISTS ix_fact_unit_period"))
    # Closing a page's quarantine entries looked them up by (status, source) and scanned every open entry of
    # the source on every page (quadratic over a backfill); the stream and record key now narrow it to the page.
    conn.execute(text("DROP INDEX IF EXISTS ix_quarantine_status"))
    conn.execute(
        text("CREATE INDEX IF NOT EXISTS ix_quarantine_open ON quarantine (status, source, stream, record_key)")
    )


def _v5_rate_window(conn: Connection) -> None:
    m.SQLModel.metadata.create_all(conn, tables=[m.RateWindow.__table__])  # type: ignore[attr-defined]


def _v6_period_reopening(conn: Connection) -> None:
    m.SQLModel.metadata.create_all(conn, tables=[m.PeriodReopening.__table__])  # type: ignore[attr-defined]


def _v7_exempt_facts_index(conn: Connection) -> None:
    # A summary reads its exempt facts one by one (their exemption says what it covers). Without an index of
    # their own that query re-read every fact of the unit-month to find a handful: 1,191 heap pages for 9 rows
    # on the 1M-fact benchmark store (0.54 ms), 13 with it (0.02 ms). Keyed like the unit keyset index, so a
    # planner that underestimates a unit-month (agency and unit are correlated) still prefers it. Exempt facts
    # are rare, so the partial index costs the writes next to nothing.
    # The predicate must be the one the queries' ``exempt.is_(True)`` renders, or SQLite never uses the index.
    exempt = "exempt IS 1" if conn.dialect.name == "sqlite" else "exempt IS TRUE"
    conn.execute(text(f"CREATE INDEX IF NOT EXISTS ix_fact_exempt ON fact (agency, unit, period) WHERE {exempt}"))


def _v8_summary_index(conn: Connection) -> None:
    # A summary aggregates a unit-month's active facts by (agency, unit, person, period). With only the keyset
    # index it read every fact's heap page: 1,191 rows on 1,200 pages (2.7 ms) on the 1M-fact benchmark store.
    # This index holds every column the aggregate reads, so it is an index-only scan (47 buffers, 0.9 ms), and
    # its order is the GROUP BY's (gateway/api/summaries.py groups in this order), so no sort either. PostgreSQL
    # only: SQLite is the small single-agency store, where a summary reads few rows anyway, while its sync is
    # bound by the store transaction and every fact insert would update one more 12-column index entry.
    if conn.dialect.name != "postgresql":
        return
    conn.execute(text(
        "CREATE INDEX IF NOT EXISTS ix_fact_summary ON fact (agency, period, unit, person_id) INCLUDE "
        "(state, assigned, completed, on_time, delays, failed_reviews, exempt, units_scaled)"))  # fmt: skip


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _v1_initial),
    Migration(2, "facts API: clients, keys, corrections, frozen policies, keyset indexes", _v2_facts_api),
    Migration(3, "operations: source control (pause, trigger) shared by replicas", _v3_source_control),
    Migration(4, "write path: two redundant fact indexes dropped, open quarantine by record", _v4_write_path_indexes),
    Migration(5, "API rate limits shared by replicas: requests per client and minute", _v5_rate_window),
    Migration(6, "closed periods can be reopened: the reopenings, with the corrections they applied",
              _v6_period_reopening),
    Migration(7, "summaries: exempt facts indexed apart (partial index)", _v7_exempt_facts_index),
    Migration(8, "summaries: a covering index for index-only aggregates (PostgreSQL)", _v8_summary_index),
)


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """Build the store's engine; nothing connects until first use."""
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
        _tune_sqlite(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size)
    _ping_when_idle(engine, PING_AFTER_IDLE_SECONDS)
    return engine


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """Ping a pooled connection at checkout only when it may have died: idle for more than ``idle`` seconds,
    or with something to read from the server while no query is running.

    ``pool_pre_ping`` pinged on every checkout: a ``SELECT 1`` round trip per API request, 0.03-0.07 ms of the
    API process's CPU and 0.01-0.02 ms of PostgreSQL's (about 5 % of a cache-hit page). A connection that
    went idle a moment ago is alive unless the server ended it meanwhile, and a server that ends a connection
    (restart, ``pg_terminate_backend``, ``idle_session_timeout``) sends a FATAL message and closes the socket,
    which makes the socket readable: one ``poll`` with no round trip sees it. A connection cut without a word
    (a network partition, a firewall dropping it) is caught by the idle time, as long idle is how that
    happens. A dead connection is replaced, not answered as a 500: raising ``DisconnectionError`` from a
    checkout listener makes the pool discard it and connect anew (SQLAlchemy's pessimistic-disconnect
    pattern, as ``pool_pre_ping`` itself does it)."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        record.info["kpigw_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.get("kpigw_idle_since")
        if since is None:
            return  # just connected
        if time.monotonic() - since <= idle and not _server_spoke(dbapi_conn):
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("a pooled connection was dead; replaced") from exc


def _server_spoke(dbapi_conn: Any) -> bool:
    """Whether an idle psycopg connection has input waiting (or cannot be checked): then it is pinged."""
    try:
        ready, _, _ = select.select([dbapi_conn.pgconn.socket], [], [], 0)
    except Exception:  # closed, not psycopg, or a descriptor select() cannot take: ping to be sure
        return True
    return bool(ready)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        # Before anything creates the file: a new store gets 8 KiB pages (an existing one keeps its own). The
        # sync's rows are 1-2 KiB (change-feed snapshots, work items, raw payloads), of which a 4 KiB page held
        # two at about 70 % fill. Larger pages fill better but every random insert into an index (fact_key,
        # item_key) dirties a whole page in the WAL, which grows with the store: at 200,000 records the sync
        # measured 524 (4 KiB), 480 (8 KiB) and 493-496 (16 KiB) us of CPU per record; 16 KiB led at 50,000.
        cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA temp_store=MEMORY")
        # 16 MiB of page cache per connection (the default is 2 MiB): a page's inserts land all over the fact,
        # change-feed and work-item indexes, and re-reading their pages from the OS cost the store thread about
        # 10 % more CPU. (64 MiB measured no better and costs RSS per pooled connection.)
        cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        # A sync page writes a few MB: checkpointing after ~64 MB of WAL instead of every 4 MB (the default)
        # turned many small fsync'd checkpoints that rewrite the same index pages into a few larger ones (the
        # commit's wall time fell by about a third). While a sync runs, WalCheckpointer checkpoints every
        # quarter second off the commit path, so the writers' limit is only a backstop that bounds the WAL (256
        # MB). It is in pages, so it follows the file's page size.
        page_size = cur.execute("PRAGMA page_size").fetchone()[0]
        cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_BYTES // page_size}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine) -> int:
    """Apply pending migrations; returns the schema version now in force."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        m.SQLModel.metadata.create_all(conn, tables=[m.SchemaMigration.__table__])  # type: ignore[attr-defined]
        applied = {row[0] for row in conn.execute(text("SELECT version FROM schema_migration"))}
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            migration.apply(conn)
            conn.execute(
                m.SchemaMigration.__table__.insert(),  # type: ignore[attr-defined]
                {"version": migration.version, "description": migration.description, "applied_at": datetime.now(UTC)},
            )
        return max((mg.version for mg in MIGRATIONS), default=0)


def schema_version(engine: Engine) -> int | None:
    if not inspect(engine).has_table("schema_migration"):
        return None
    with engine.connect() as conn:
        return conn.execute(text("SELECT MAX(version) FROM schema_migration")).scalar_one_or_none()


def lock_fact_writes(conn: Connection) -> None:
    """Serialize fact writers until this transaction ends, so change numbers follow commit order.

    On SQLite the ``BEGIN IMMEDIATE`` write lock already does this.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": FACT_WRITE_LOCK_KEY})


class WalCheckpointer:
    """Checkpoints a SQLite store's WAL on a thread and connection of its own while syncs write.

    A writer that finds the WAL over its limit after a commit checkpoints it then and there: the page's
    transaction waited for pages copied into the database file and an fsync. Checkpointing from here instead
    (``PASSIVE``: it never blocks a reader or the writer) overlaps that work with the next page; SQLite copies
    with the GIL released. The writers keep their own limit (:data:`SQLITE_CHECKPOINT_BYTES`) as a backstop,
    so the WAL stays bounded if this thread falls behind or no sync runs. Durability is SQLite's: WAL +
    ``synchronous=NORMAL`` either way. ``active()`` is re-entrant across threads: the thread runs while at
    least one sync is inside it. A no-op on PostgreSQL and for in-memory SQLite.
    """

    def __init__(self, engine: Engine, *, interval: float = 0.25) -> None:
        self._engine = engine
        self._interval = interval
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._enabled = bool(database) and database != ":memory:" and "mode=memory" not in str(engine.url)
        self._guard = threading.Lock()
        self._users = 0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # checkpoints run over a non-empty WAL (for tests)

    @contextmanager
    def active(self) -> Iterator[None]:
        if not self._enabled:
            yield
            return
        with self._guard:
            self._users += 1
            if self._users == 1:
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name="kpigw-wal-checkpoint",
                                                daemon=True)  # fmt: skip
                self._thread.start()
        try:
            yield
        finally:
            with self._guard:
                self._users -= 1
                stop, thread = (self._stop, self._thread) if self._users == 0 else (None, None)
                if stop is not None:
                    stop.set()
                    self._stop = self._thread = None
            if thread is not None:
                thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def _run(self, stop: threading.Event) -> None:
        try:
            conn = self._engine.raw_connection()  # WAL, busy timeout: set by _tune_sqlite's connect hook
        except Exception as exc:  # the writers' own limit still checkpoints
            log.warning("WAL checkpointer not started", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        try:
            driver = conn.driver_connection  # sqlite3's own connection: PRAGMA results without a transaction
            while not stop.wait(self._interval):
                try:
                    # union-attr: typed as any DBAPI connection, which need not have execute(); sqlite3's does
                    _busy, frames, _copied = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()  # type: ignore[union-attr]
                except sqlite3.Error as exc:
                    log.warning("WAL checkpoint failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                    continue
                if frames > 0:
                    self.checkpoints += 1
        finally:
            conn.close()
