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
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine

from gateway import logs
from gateway.connector import Connector, Page
from gateway.errors import GatewayError, StreamError, TransientError
from gateway.metrics import Metrics
from gateway.store import facts as fact_store
from gateway.store import records as rec_store
from gateway.store.db import WalCheckpointer
from gateway.sync.failpoints import Failpoints
from gateway.sync.prepare import Lease, PackedRecipe, PreparedPage, ProcessPreparer, Ticket, Valuer, prepare_records

log = logging.getLogger("kpigw.sync")


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
# Pages handed to each preparing worker at once: while it prepares one, the next waits in its socket, so it never
# idles while the engine takes its last page (3,813-3,921 -> 4,543-4,550 records/s at 50,000 against one page).
PAGES_PER_WORKER = 2
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
    """A page made ready for the store: the page, its records with their archived JSON and hash, and the rest
    of what :func:`~gateway.sync.prepare.prepare_records` computed (the page's own problems added to its
    quarantine)."""

    page: Page
    archived: list[rec_store.ArchivedRecord]
    prepared: PreparedPage

    @classmethod
    def of(cls, connector: Connector, stream: str, page: Page, archived: list[rec_store.ArchivedRecord],
           prepared: PreparedPage) -> _PageWork:  # fmt: skip
        for problem in page.problems:
            payload_json, digest = rec_store.encode_payload(problem.payload)
            prepared.quarantine.append(
                rec_store.QuarantineEntry(
                    connector.name, stream, problem.key, digest, payload_json, "fetch", problem.error_kind,
                    problem.reason,
                )
            )  # fmt: skip
        return cls(page, archived, prepared)


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
        preparer: ProcessPreparer | None = None,
    ) -> None:
        self._db = engine
        self._valuer = valuer  # a getter: a mapping reload swaps what it returns, between pages
        self._metrics = metrics
        self._clock = clock
        self._replica = replica
        self._failpoints = failpoints or Failpoints()
        self._preparer = preparer  # worker processes for :func:`prepare_records`; None: the fetch worker thread
        self._running: set[str] = set()
        self._guard = threading.Lock()
        self._inserted = 0  # facts this process inserted (PostgreSQL: drives :meth:`_refresh_statistics`)
        self._analyze_at = _FIRST_ANALYZE
        self._checkpointer = WalCheckpointer(engine)  # SQLite: checkpoints off the commit path while syncs run

    @property
    def preparer(self) -> ProcessPreparer | None:
        return self._preparer

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
            try:
                with self._checkpointer.active():
                    for stream in streams or connector.streams():
                        report.streams.append(self._run_stream(connector, stream, run_id, should_continue))
            except Exception as exc:
                self._record_crash(source, run_id, exc)
                raise
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

    def _record_crash(self, source: str, run_id: int, exc: Exception) -> None:
        """Finish a run that a bug (not a source problem) ended, then let the bug go on to the caller.

        Without this the run stayed 'running' until the source's next run abandoned it, so ``/v1/sources``
        showed a sync in progress that had died. The error names the exception's type only: its text may hold
        a record's values. A store that cannot take the update (the bug may be its outage) leaves the run to
        be abandoned, as before; the original exception is the one that propagates."""
        error = f"the sync stopped on an unexpected {type(exc).__name__}; the traceback is in the gateway's log"
        try:
            with self._db.begin() as conn:
                rec_store.finish_run(conn, run_id, outcome="failed", now=self._clock(), error=error,
                                     error_kind="InternalError")  # fmt: skip
        except Exception:
            log.warning("could not record the failed run", extra={"source": source, "run_id": run_id},
                        exc_info=True)  # fmt: skip
            return
        self._metrics.sync_runs.labels(source, "failed").inc()

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
        """``pages`` made ready for the store, in order, as the fetch worker pulls them.

        Preparing (:func:`~gateway.sync.prepare.prepare_records`) needs no store access, so it runs off the
        engine's thread while that thread writes and commits the previous page: in worker processes when the
        engine has a :class:`ProcessPreparer` and the connector a normalizer recipe (one page submitted per
        worker beyond the one being handed over, so each is busy while the store commits), otherwise here, on
        the fetch worker thread. Each page is valued with one mapping set, taken when its preparation starts; a
        page a worker cannot prepare exactly is prepared here, with that same set. When reading a page fails,
        the pages read before it are still handed over first, so the store commits them as it would have.
        """
        lease, recipe = self._lease(connector)
        pending: deque[tuple[Page, list[rec_store.ArchivedRecord], Ticket | None, Valuer]] = deque()

        def finish(page: Page, archived: list[rec_store.ArchivedRecord], ticket: Ticket | None,
                   valuer: Valuer) -> _PageWork:  # fmt: skip
            def here() -> PreparedPage:
                return prepare_records(archived, normalize=connector.normalize, valuer=valuer)

            prepared, by_worker = (here(), False) if ticket is None or lease is None else lease.resolve(ticket, here)
            self._metrics.pages_prepared.labels(connector.name, "worker" if by_worker else "engine").inc()
            return _PageWork.of(connector, stream, page, archived, prepared)

        def in_flight() -> int:
            return sum(1 for _, _, ticket, _ in pending if ticket is not None)

        source = iter(pages)
        try:
            while True:
                try:
                    page = next(source)
                except StopIteration:
                    break
                except Exception:  # the pages read before the failing one are still due, in order, first
                    while pending:
                        yield finish(*pending.popleft())
                    raise
                archived = rec_store.encode_records(page.records)  # the archive's bytes, whoever prepares
                valuer = self._valuer()
                root, digest = getattr(valuer, "root", None), getattr(valuer, "content_digest", None)
                ticket = None
                if lease is not None and recipe is not None and isinstance(root, Path) and isinstance(digest, str):
                    while in_flight() >= PAGES_PER_WORKER * len(lease.workers):  # the oldest is due first
                        yield finish(*pending.popleft())
                    ticket = lease.submit(recipe, root, digest, archived)
                pending.append((page, archived, ticket, valuer))
                while pending and pending[0][2] is None:  # prepared here: due now, in order
                    yield finish(*pending.popleft())
            while pending:
                yield finish(*pending.popleft())
        finally:
            if lease is not None:
                for _, _, ticket, _ in pending:  # the stream stopped early: answers nobody will store
                    if ticket is not None:
                        lease.discard(ticket)
                lease.release()
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    def _lease(self, connector: Connector) -> tuple[Lease | None, PackedRecipe | None]:
        """Workers for one stream run and the connector's packed recipe, or (None, None): no preparer, no idle
        worker, a connector without a recipe, or a recipe that does not pickle (then warned, the pool kept)."""
        recipe_of = getattr(connector, "normalizer_recipe", None)
        if self._preparer is None or recipe_of is None:
            return None, None
        lease = self._preparer.lease()
        if lease is None:
            return None, None
        try:
            return lease, PackedRecipe.pack(recipe_of())
        except Exception as exc:  # the pages are prepared here, as without a recipe
            lease.release()
            self._preparer.warn_once(f"the normalizer recipe does not pickle: {type(exc).__name__}: {exc}")
            return None, None

    def _store_page(self, connector: Connector, stream: str, work: _PageWork, run_id: int,
                    report: StreamReport) -> None:  # fmt: skip
        source = connector.name
        page, prep = work.page, work.prepared
        now = self._clock()
        with self._db.begin() as conn:
            rec_store.archive_encoded(conn, work.archived, fetched_at=now, run_id=run_id)
            self._failpoints.hit("page_archived")
            rec_store.save_encoded_work_items(conn, prep.item_rows, now=now)
            written = fact_store.write_prepared(conn, origins=prep.origins, wanted=prep.facts, now=now,
                                                snapshot_parts=prep.snapshots)
            self._failpoints.hit("facts_written")
            rec_store.quarantine(conn, prep.quarantine, now=now)
            rec_store.resolve_quarantine(
                conn, source=source, stream=stream, record_keys=prep.clean_keys, status="resolved", now=now
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
                    "records_mapped": prep.items - prep.unmatched,
                    "records_quarantined": len(prep.quarantine),
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
        page, archived, prep = work.page, work.archived, work.prepared
        mapped = prep.items - prep.unmatched
        for outcome, n in (
            ("read", len(page.records) + len(page.problems)),
            ("archived", len(archived)),
            ("mapped", mapped),
            ("unmatched", prep.unmatched),
            ("quarantined", len(prep.quarantine)),
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
        report.unmatched += prep.unmatched
        report.quarantined += len(prep.quarantine)
        report.facts_written += written.written
        report.facts_retracted += written.retracted
