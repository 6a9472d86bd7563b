"""Backfill: re-read a source over a time range, resumable, without disturbing the live cursor.

The source's connector is wrapped so that its streams are named ``backfill:<stream>``: the sync engine then
commits the backfill's checkpoints under that cursor key, in the same transaction as each page's facts, exactly
as for a live sync (so a killed backfill resumes at its last committed page, and nothing is lost or doubled),
while the live cursor stays where the schedule left it. Records keep their real stream, so the archive, work
items and facts are the same as a live sync would write.

A stream starts at ``start`` (or where an earlier backfill of the same range stopped) and ends after the first
page whose checkpoint reaches ``end``. The backfill holds the source's lease like any run, so no scheduled
sync of the source runs meanwhile; it waits for a running sync to finish first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, delete

from gateway.connector import CheckResult, Connector, Page
from gateway.ops._errors import Invalid
from gateway.ops.cursors import BACKFILL_PREFIX
from gateway.store import records as rec_store
from gateway.sync.engine import RunReport, SyncEngine
from gateway.sync.scheduler import run_leased
from gateway.types import SourceRecord, WorkItem


class Progress(Protocol):
    def advance(self, stream: str, reached: datetime | None, records: int) -> None: ...

    def close(self) -> None: ...


class _NoProgress:
    def advance(self, stream: str, reached: datetime | None, records: int) -> None:
        return None

    def close(self) -> None:
        return None


class TqdmProgress:
    """One progress bar per stream, in days of the range covered (the checkpoint's position in the range)."""

    def __init__(self, start: datetime, end: datetime, *, file: Any = None) -> None:
        self._start, self._days = start, (end - start).total_seconds() / 86400
        self._file = file
        self._bars: dict[str, Any] = {}

    def advance(self, stream: str, reached: datetime | None, records: int) -> None:
        from tqdm import tqdm

        bar = self._bars.get(stream)
        if bar is None:
            for other in self._bars.values():
                other.close()
            bar = self._bars[stream] = tqdm(total=round(self._days, 2), desc=stream, unit="day", file=self._file,
                                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} days "
                                                       "[{elapsed}<{remaining}] {postfix}")  # fmt: skip
            bar.records = 0
        bar.records += records
        if reached is not None:
            done = min(max((reached - self._start).total_seconds() / 86400, 0.0), self._days)
            bar.update(round(done - bar.n, 2))
        bar.set_postfix_str(f"{bar.records} records", refresh=True)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


class BackfillConnector:
    """``inner`` seen through ``backfill:<stream>`` names, bounded to ``[start, end]``."""

    def __init__(self, inner: Connector, *, start: datetime, end: datetime, progress: Progress) -> None:
        self._inner, self._start, self._end, self._progress = inner, start, end, progress
        self.name = inner.name

    def streams(self) -> Sequence[str]:
        return [BACKFILL_PREFIX + s for s in self._inner.streams()]

    def check(self) -> CheckResult:
        return self._inner.check()

    def read(self, stream: str, cursor: str | None) -> Iterator[Page]:
        inner_stream = stream.removeprefix(BACKFILL_PREFIX)
        resume = datetime.fromisoformat(cursor) if cursor else None
        if resume is not None and resume >= self._end:
            self._progress.advance(inner_stream, resume, 0)  # this stream finished in an earlier backfill
            return
        begin = resume if resume is not None and resume > self._start else self._start
        for page in self._inner.read(inner_stream, begin.isoformat()):
            reached = datetime.fromisoformat(page.checkpoint) if page.checkpoint else None
            yield page
            self._progress.advance(inner_stream, reached, len(page.records))
            if reached is not None and reached >= self._end:
                return

    def normalize(self, record: SourceRecord) -> Sequence[WorkItem]:
        return self._inner.normalize(record)

    def close(self) -> None:
        self._inner.close()


def clear_progress(db: Engine, source: str) -> int:
    """Forget where earlier backfills of ``source`` stopped (``--restart``)."""
    cursor = rec_store.CURSOR
    with db.begin() as conn:
        result = conn.execute(delete(cursor).where(cursor.c.source == source,
                                                   cursor.c.stream.like(BACKFILL_PREFIX + "%")))  # fmt: skip
        return int(result.rowcount or 0)


def run_backfill(
    *,
    engine: SyncEngine,
    db: Engine,
    connector: Connector,
    start: datetime,
    end: datetime,
    holder: str,
    lease_seconds: float,
    progress: Progress | None = None,
    wait_for_lease: float | None = None,
    poll: float | None = None,
) -> RunReport:
    """Backfill ``connector``'s source over ``[start, end]`` under its lease; returns the run's report.

    Waits up to ``wait_for_lease`` seconds (default: one lease period) for a running sync to end, then gives
    up with :class:`~gateway.ops.Conflict`.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise Invalid("backfill bounds must be timezone-aware")
    if start >= end:
        raise Invalid(f"the backfill range is empty: --from {start.isoformat()} is not before --to {end.isoformat()}")
    bar = progress or _NoProgress()
    wrapped = BackfillConnector(connector, start=start, end=end, progress=bar)
    try:
        return run_leased(engine=engine, db=db, connector=wrapped, holder=holder, lease_seconds=lease_seconds,
                          trigger="backfill", wait_for_lease=wait_for_lease, poll=poll)  # fmt: skip
    finally:
        bar.close()
