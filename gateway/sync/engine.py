"""The sync engine: source pages in, facts and cursor out, one transaction per page.

For each stream of a source, from its saved cursor, page by page, in **one transaction**:
archive every record (raw, hashed) -> normalize -> value -> save work items -> write facts (upsert, change
feed, retractions) -> file quarantine entries -> commit the page's checkpoint. A crash anywhere leaves the
store at the previous page boundary; the next run re-reads from the committed cursor, and because writes are
idempotent the outcome equals an uninterrupted run.

The loop has three arms, by the error's next action: a bad record is quarantined and the page goes on; a
transient failure that outlived the retry policy, or a stream error (auth, protocol, config), ends the stream
with the run marked failed and the cursor at the last committed page; other streams still run.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine

from gateway import logs
from gateway.connector import Connector, Page
from gateway.errors import GatewayError, RecordError, StreamError, TransientError
from gateway.metrics import Metrics
from gateway.store import facts as fact_store
from gateway.store import records as rec_store
from gateway.store.db import WalCheckpointer
from gateway.sync.failpoints import Failpoints
from gateway.types import Fact, WorkItem

log = logging.getLogger("kpigw.sync")


class Problem(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def quarantine(self) -> bool: ...


class ValuationLike(Protocol):  # read-only members: a frozen Valuation with list fields matches
    @property
    def facts(self) -> Sequence[Fact]: ...
    @property
    def unmatched(self) -> bool: ...
    @property
    def problems(self) -> Sequence[Problem]: ...


class Valuer(Protocol):
    def value(self, item: WorkItem, *, raw: Mapping[str, str]) -> ValuationLike: ...


@dataclass
class StreamReport:
    stream: str
    pages: int = 0
    read: int = 0
    mapped: int = 0
    unmatched: int = 0
    quarantined: int = 0
    facts_written: int = 0
    facts_retracted: int = 0
    error: str | None = None
    error_kind: str | None = None


@dataclass
class RunReport:
    source: str
    run_id: int
    outcome: str = "running"
    streams: list[StreamReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def read(self) -> int:
        return sum(s.read for s in self.streams)

    @property
    def facts_written(self) -> int:
        return sum(s.facts_written for s in self.streams)


_DONE: Any = object()
_FIRST_ANALYZE = 5_000  # facts inserted by this process before its first ANALYZE (PostgreSQL)
T = TypeVar("T")


def _one_page_ahead(pages: Iterator[T], thread_name: str) -> Generator[T, None, None]:
    """Yield ``pages``, fetching the next one on a worker thread while the caller stores the current one.

    Fetching (network wait, the source's own time, JSON decoding) then overlaps archiving, valuing and the
    commit. At most one page is fetched ahead, so memory stays at two pages whatever the backfill size. A
    fetch error is re-raised here, in the caller's thread, when that page is due: the engine's error arms see
    exactly the exception the connector raised, at the same point of the loop as without the worker. The
    source iterator is only ever advanced by the worker, one step at a time, and closed here once the worker
    is idle.
    """
    context = contextvars.copy_context()  # the worker logs with the run's correlation id

    def fetch() -> T:
        page: T = context.run(next, pages, _DONE)
        return page

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
    ahead: Future[T] | None = None
    try:
        ahead = pool.submit(fetch)
        while True:
            page = ahead.result()  # re-raises the fetch's exception, if any
            if page is _DONE:
                return
            ahead = pool.submit(fetch)
            yield page
    finally:
        if ahead is not None and not ahead.done():  # the caller stopped early: let the fetch finish first
            ahead.exception()
        pool.shutdown(wait=True)
        close = getattr(pages, "close", None)
        if close is not None:
            close()


@dataclass
class _PageWork:
    """A page made ready for the store: everything computed that needs no store access."""

    page: Page
    archived: list[rec_store.ArchivedRecord] = field(default_factory=list)
    items: list[tuple[WorkItem, str, str | None]] = field(default_factory=list)
    item_rows: list[rec_store.EncodedWorkItem] = field(default_factory=list)
    facts: fact_store.PreparedFacts = field(default_factory=dict)
    snapshots: fact_store.SnapshotParts = field(default_factory=dict)
    origins: list[tuple[str, str, str]] = field(default_factory=list)
    clean_keys: list[str] = field(default_factory=list)
    quarantine: list[rec_store.QuarantineEntry] = field(default_factory=list)
    unmatched: int = 0


def _quarantined(a: rec_store.ArchivedRecord, stage: str, error_kind: str, reason: str) -> rec_store.QuarantineEntry:
    rec = a.record
    return rec_store.QuarantineEntry(rec.source, rec.stream, rec.key, a.content_hash, a.payload_json, stage,
                                     error_kind, reason)  # fmt: skip


class SyncEngine:
    """Runs syncs; one engine per process, shared by the scheduler, the API and the CLI."""

    def __init__(
        self,
        *,
        engine: Engine,
        valuer: Callable[[], Valuer],
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        replica: str | None = None,
        failpoints: Failpoints | None = None,
    ) -> None:
        self._db = engine
        self._valuer = valuer  # a getter: a mapping reload swaps what it returns, between pages
        self._metrics = metrics
        self._clock = clock
        self._replica = replica
        self._failpoints = failpoints or Failpoints()
        self._running: set[str] = set()
        self._guard = threading.Lock()
        self._inserted = 0  # facts this process inserted (PostgreSQL: drives :meth:`_refresh_statistics`)
        self._analyze_at = _FIRST_ANALYZE
        self._checkpointer = WalCheckpointer(engine)  # SQLite: checkpoints off the commit path while syncs run

    def run(self, connector: Connector, *, streams: Sequence[str] | None = None, trigger: str = "manual",
            should_continue: Callable[[], bool] | None = None) -> RunReport:
        """Sync ``connector``'s streams; never raises for source problems (they are in the report).

        ``should_continue`` is asked before each page is stored: False (the lease was lost, the replica is
        stopping, the source was paused) ends the stream at the last committed page, error kind ``Cancelled``.
        """
        source = connector.name
        with self._guard:
            if source in self._running:
                raise GatewayError(f"a sync of {source} is already running in this process", source=source)
            self._running.add(source)
        started = time.perf_counter()
        try:
            with self._db.begin() as conn:
                rec_store.abandon_stale_runs(conn, source=source, now=self._clock())
                run_id = rec_store.start_run(
                    conn, source=source, trigger=trigger, replica=self._replica, now=self._clock()
                )
            report = RunReport(source=source, run_id=run_id)
            logs.new_correlation_id(f"run-{run_id}")  # every log line of this run carries it
            health = self._metrics.source(source)
            with self._checkpointer.active():
                for stream in streams or connector.streams():
                    report.streams.append(self._run_stream(connector, stream, run_id, should_continue))
            failed = [s for s in report.streams if s.error]
            quarantined = any(s.quarantined for s in report.streams)
            report.outcome = "failed" if failed else "partial" if quarantined else "success"
            error = "; ".join(f"{s.stream}: {s.error}" for s in failed) or None
            kinds = ",".join(sorted({s.error_kind for s in failed if s.error_kind})) or None
            with self._db.begin() as conn:
                rec_store.finish_run(
                    conn, run_id, outcome=report.outcome, now=self._clock(), error=error, error_kind=kinds
                )
            report.seconds = time.perf_counter() - started
            self._metrics.sync_runs.labels(source, report.outcome).inc()
            self._metrics.sync_duration.labels(source).observe(report.seconds)
            if not failed:
                health.last_success = time.time()
            log.info(
                "sync finished",
                extra={
                    "source": source,
                    "run_id": run_id,
                    "outcome": report.outcome,
                    "records": report.read,
                    "seconds": round(report.seconds, 3),
                },
            )
            return report
        finally:
            logs.correlation_id.set(None)
            with self._guard:
                self._running.discard(source)

    def _run_stream(self, connector: Connector, stream: str, run_id: int,
                    should_continue: Callable[[], bool] | None = None) -> StreamReport:
        report = StreamReport(stream=stream)
        source = connector.name
        if should_continue is not None and not should_continue():
            report.error, report.error_kind = "cancelled before the stream started", "Cancelled"
            return report
        with self._db.connect() as conn:
            cursor = rec_store.get_cursor(conn, source, stream)
        try:
            # closing(): a store error stops the fetch worker now, not when the traceback is collected
            prepared = self._prepared_pages(connector, stream, connector.read(stream, cursor))
            with closing(_one_page_ahead(prepared, f"{source}-{stream}-fetch")) as pages:
                for work in pages:
                    if should_continue is not None and not should_continue():
                        report.error, report.error_kind = "cancelled between pages", "Cancelled"
                        break
                    self._failpoints.hit("page_fetched")
                    self._store_page(connector, stream, work, run_id, report)
                    self._failpoints.hit("page_committed")
        except (TransientError, StreamError) as exc:
            report.error, report.error_kind = str(exc), type(exc).__name__
            body = getattr(exc, "body", None)
            if isinstance(body, bytes):  # a malformed page: keep it, it is evidence
                self._quarantine_page(source, stream, exc, body)
                report.quarantined += 1
            log.warning(
                "stream failed",
                extra={"source": source, "stream": stream, "error_kind": report.error_kind, "error": report.error},
            )
        return report

    def _quarantine_page(self, source: str, stream: str, exc: GatewayError, body: bytes) -> None:
        payload = {"body": body[:1_000_000].decode("utf-8", "replace"), "truncated": len(body) > 1_000_000}
        payload_json, digest = rec_store.encode_payload(payload)
        entry = rec_store.QuarantineEntry(
            source, stream, f"page:{exc.where or '?'}", digest, payload_json, "fetch", type(exc).__name__, str(exc)
        )
        with self._db.begin() as conn:
            rec_store.quarantine(conn, [entry], now=self._clock())

    def _prepared_pages(self, connector: Connector, stream: str,
                        pages: Iterator[Page]) -> Generator[_PageWork, None, None]:  # fmt: skip
        """``pages`` made ready for the store by :meth:`_prepare_page`, as the fetch worker pulls them.

        Encoding, normalizing and valuing need no store access, so they run on the fetch worker while the
        engine's thread writes and commits the previous page (SQLite and the PostgreSQL driver release the GIL
        while they work). A page is still valued with one mapping set, taken when its preparation starts.
        """
        try:
            for page in pages:
                yield self._prepare_page(connector, stream, page)
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    def _prepare_page(self, connector: Connector, stream: str, page: Page) -> _PageWork:
        work = _PageWork(page, rec_store.encode_records(page.records))
        valuer = self._valuer()
        facts: list[Fact] = []
        for a in work.archived:
            rec = a.record
            try:
                items = connector.normalize(rec)
            except RecordError as exc:
                work.quarantine.append(_quarantined(a, "normalize", type(exc).__name__, exc.message))
                continue
            work.origins.append((rec.source, rec.stream, rec.key))
            reasons: list[str] = []
            for item in items:
                valuation = valuer.value(item, raw={"content_hash": a.content_hash})
                facts.extend(valuation.facts)
                problems = [p for p in valuation.problems if p.quarantine]
                reasons.extend(f"{p.kind}: {p.detail}" for p in problems)
                status = "unmatched" if valuation.unmatched else "partial" if problems else "mapped"
                work.unmatched += valuation.unmatched
                detail = "; ".join(f"{p.kind}: {p.detail}" for p in valuation.problems) or None
                work.items.append((item, status, detail))
            if reasons:
                work.quarantine.append(_quarantined(a, "map", "MappingError", "; ".join(reasons)))
            else:
                work.clean_keys.append(rec.key)
        for problem in page.problems:
            payload_json, digest = rec_store.encode_payload(problem.payload)
            work.quarantine.append(
                rec_store.QuarantineEntry(
                    connector.name, stream, problem.key, digest, payload_json, "fetch", problem.error_kind,
                    problem.reason,
                )
            )  # fmt: skip
        work.item_rows = rec_store.encode_work_items(work.items)
        work.facts = fact_store.prepare_facts(facts)
        work.snapshots = fact_store.prepare_snapshot_parts(work.facts)
        return work

    def _store_page(self, connector: Connector, stream: str, work: _PageWork, run_id: int,
                    report: StreamReport) -> None:  # fmt: skip
        source = connector.name
        page = work.page
        now = self._clock()
        with self._db.begin() as conn:
            rec_store.archive_encoded(conn, work.archived, fetched_at=now, run_id=run_id)
            self._failpoints.hit("page_archived")
            rec_store.save_encoded_work_items(conn, work.item_rows, now=now)
            written = fact_store.write_prepared(conn, origins=work.origins, wanted=work.facts, now=now,
                                                snapshot_parts=work.snapshots)
            self._failpoints.hit("facts_written")
            rec_store.quarantine(conn, work.quarantine, now=now)
            rec_store.resolve_quarantine(
                conn, source=source, stream=stream, record_keys=work.clean_keys, status="resolved", now=now
            )
            if page.checkpoint is not None:
                rec_store.set_cursor(conn, source, stream, page.checkpoint, run_id=run_id, now=now)
            rec_store.add_run_counts(
                conn,
                run_id,
                {
                    "pages": 1,
                    "records_read": len(page.records) + len(page.problems),
                    "records_archived": len(work.archived),
                    "records_mapped": len(work.items) - work.unmatched,
                    "records_quarantined": len(work.quarantine),
                    "facts_written": written.written,
                    "facts_retracted": written.retracted,
                },
            )
            self._failpoints.hit("before_commit")
        self._count(source, stream, work, written, report)
        self._refresh_statistics(written.inserted)

    def _refresh_statistics(self, inserted: int) -> None:
        """PostgreSQL: ANALYZE the tables a sync grows, each time this process has doubled what it inserted.

        A first backfill into empty tables outruns autovacuum's analyze (and some servers run without it):
        planned on the statistics of an empty table, the per-page lookups of existing facts filtered every fact
        of the source instead of using the record-key index, and a 30,000-record sync spent 34 of its 42 s
        there. Doubling keeps it to a few ANALYZE runs per backfill, each a sample, with locks that block no
        reads or writes.
        """
        if self._db.dialect.name != "postgresql" or not inserted:
            return
        with self._guard:
            self._inserted += inserted
            if self._inserted < self._analyze_at:
                return
            self._analyze_at = self._inserted * 2
        started = time.perf_counter()
        try:
            with self._db.begin() as conn:
                # never queue behind a VACUUM or index build on the sync's path: skip and try at the next doubling
                conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
                conn.exec_driver_sql("ANALYZE fact, fact_change")  # the tables the per-page plans and the API read
        except Exception as exc:  # an optimization: its failure must not fail a sync whose pages are committed
            log.warning("store statistics not refreshed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        log.info("store statistics refreshed",
                 extra={"facts_inserted": self._inserted, "seconds": round(time.perf_counter() - started, 3)})

    def _count(self, source: str, stream: str, work: _PageWork, written: fact_store.FactWriteResult,
               report: StreamReport) -> None:  # fmt: skip
        m = self._metrics
        page, archived = work.page, work.archived
        mapped = len(work.items) - work.unmatched
        for outcome, n in (
            ("read", len(page.records) + len(page.problems)),
            ("archived", len(archived)),
            ("mapped", mapped),
            ("unmatched", work.unmatched),
            ("quarantined", len(work.quarantine)),
        ):
            if n:
                m.records.labels(source, stream, outcome).inc(n)
        for op, n in (("insert", written.inserted), ("update", written.updated), ("retract", written.retracted)):
            if n:
                m.facts_written.labels(source, op).inc(n)
        if page.checkpoint is not None:
            m.cursor_commits.labels(source, stream).inc()
        report.pages += 1
        report.read += len(page.records) + len(page.problems)
        report.mapped += mapped
        report.unmatched += work.unmatched
        report.quarantined += len(work.quarantine)
        report.facts_written += written.written
        report.facts_retracted += written.retracted
