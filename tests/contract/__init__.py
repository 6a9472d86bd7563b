"""The connector contract: what every connector, built-in or third-party, must do, checked against itself.

Use it from a test module::

    from tests.contract import ConnectorContract, ContractTarget

    class TestMyConnector(ConnectorContract):
        @pytest.fixture
        def make_target(self) -> Iterator[Callable[[], ContractTarget]]:
            ...  # start a fresh source (a stand-in on loopback wrapped in FaultInjector) per call; yield a factory

A :class:`ContractTarget` says how to build the connector (good or bad credentials), which stream to read, which
record keys a full read must yield, how to make the source fail the next calls with an HTTP status
(:class:`tests.contract.faults.FaultInjector`) and how to create a run of records that share one cursor value,
longer than a page. The checks (each a test of :class:`ConnectorContract`):

1. ``check()`` succeeds with good credentials and raises ``AuthError`` with bad ones;
2. ``read`` yields ``SourceRecord`` objects with non-empty keys, the connector's name and the stream, which
   ``normalize`` turns into work items (or refuses with a ``RecordError``);
3. pagination ends: a full read is more than one page, finishes and yields exactly the expected keys;
4. a 503 then 200 is retried: the read still yields every key;
5. a persistent 401 is an ``AuthError`` (not a transient error, not a silent empty read);
6. crash and resume loses nothing: the real sync engine, aborted in the middle of committing a page (an
   in-process stand-in for ``KPIGW_FAILPOINT``'s SIGKILL: the transaction is rolled back exactly as a killed
   process' would be), then run again from the committed cursor, stores exactly the records and facts of an
   uninterrupted run on a fresh, identical source, each fact inserted once;
7. cursors never skip: with a run of equal cursor values across a page boundary, reading again from each
   checkpoint offered by the first page and by the pages around the tie yields at least every key not yet seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from gateway.connector import Connector, Page
from gateway.errors import AuthError, RecordError
from gateway.metrics import Metrics
from gateway.store import make_engine, migrate
from gateway.sync.engine import SyncEngine
from gateway.sync.failpoints import Failpoints
from gateway.types import SourceRecord, WorkItem
from tests.contract.faults import FaultInjector
from tests.spine_support import count, fact_state, rows

__all__ = ["ConnectorContract", "ContractTarget", "FaultInjector"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ContractTarget:
    stream: str
    connector: Callable[..., Connector]  # connector(good=True)
    expected_keys: Callable[[], set[str]]
    faults: FaultInjector
    make_ties: Callable[[], set[str]]  # returns the keys of the records sharing one cursor value
    page_size: int


class _Crash(BaseException):
    """Not an Exception: nothing on the way may catch it, as nothing catches a SIGKILL."""


class CrashAt(Failpoints):
    """Failpoints that abort the run in-process instead of killing the process."""

    def hit(self, name: str) -> None:
        if name in self._plan:
            self._hits[name] += 1
            if self._hits[name] == self._plan[name]:
                raise _Crash(name)


@cache
def _mappings() -> Any:
    from gateway.mapping import MappingHolder

    return MappingHolder(ROOT / "mappings")


def _engine(url: str, failpoints: Failpoints | None = None) -> tuple[SyncEngine, Any]:
    db = make_engine(url)
    migrate(db)
    holder = _mappings()
    return SyncEngine(engine=db, valuer=lambda: holder.current, metrics=Metrics(), failpoints=failpoints), db


def read_all(connector: Connector, stream: str, cursor: str | None = None) -> list[Page]:
    try:
        return list(connector.read(stream, cursor))
    finally:
        connector.close()


def keys_of(pages: list[Page]) -> set[str]:
    return {r.key for p in pages for r in p.records}


class ConnectorContract:
    """The contract tests; a subclass provides the ``make_target`` fixture (a factory of fresh targets)."""

    @pytest.fixture
    def make_target(self) -> Iterator[Callable[[], ContractTarget]]:
        raise NotImplementedError("a contract test class provides make_target")

    @pytest.fixture
    def target(self, make_target: Callable[[], ContractTarget]) -> ContractTarget:
        return make_target()

    def test_check_succeeds_with_good_credentials(self, target: ContractTarget) -> None:
        connector = target.connector(good=True)
        try:
            result = connector.check()
        finally:
            connector.close()
        assert result.ok and target.stream in result.streams

    def test_check_with_bad_credentials_is_an_auth_error(self, target: ContractTarget) -> None:
        connector = target.connector(good=False)
        try:
            with pytest.raises(AuthError):
                connector.check()
        finally:
            connector.close()

    def test_read_yields_records_with_keys_that_normalize(self, target: ContractTarget) -> None:
        connector = target.connector()
        pages = read_all(connector, target.stream)
        records = [r for p in pages for r in p.records]
        assert records, "a full read from no cursor found nothing"
        items: list[WorkItem] = []
        for record in records:
            assert isinstance(record, SourceRecord)
            assert isinstance(record.key, str) and record.key
            assert (record.source, record.stream) == (connector.name, target.stream)
            try:
                items.extend(connector.normalize(record))
            except RecordError:
                continue
        assert items and all(isinstance(i, WorkItem) and i.key for i in items)

    def test_pagination_ends_with_every_key(self, target: ContractTarget) -> None:
        pages = read_all(target.connector(), target.stream)
        assert len([p for p in pages if p.records]) > 1, "the target should span several pages"
        assert len(pages) <= 2 * (len(target.expected_keys()) // target.page_size + 2)  # the loop guard held
        assert keys_of(pages) == target.expected_keys()

    def test_a_503_then_200_is_retried(self, target: ContractTarget) -> None:
        target.faults.fail_next(503, times=1)
        pages = read_all(target.connector(), target.stream)
        assert target.faults.injected == 1
        assert keys_of(pages) == target.expected_keys()

    def test_a_401_is_an_auth_error(self, target: ContractTarget) -> None:
        target.faults.fail_next(401, times=20)
        connector = target.connector()
        with pytest.raises(AuthError):
            read_all(connector, target.stream)
        target.faults.clear()

    def test_crash_and_resume_loses_nothing(self, make_target: Callable[[], ContractTarget], tmp_path: Path) -> None:
        # two crashes in a row: inside the second page's transaction, then just after the next run's first commit
        crash = "before_commit:2,page_committed:1"
        reference_engine, reference_db = _engine(f"sqlite:///{tmp_path}/reference.db")
        reference = make_target()
        connector = reference.connector()
        try:
            assert reference_engine.run(connector, streams=[reference.stream]).outcome in ("success", "partial")
        finally:
            connector.close()
        target = make_target()
        url = f"sqlite:///{tmp_path}/crashed.db"
        for point in crash.split(","):
            name, _, nth = point.partition(":")
            engine, _db = _engine(url, CrashAt({name: int(nth)}))
            connector = target.connector()
            try:
                with pytest.raises(_Crash):
                    engine.run(connector, streams=[target.stream])
            finally:
                connector.close()
        engine, db = _engine(url)
        connector = target.connector()
        try:
            assert engine.run(connector, streams=[target.stream]).outcome in ("success", "partial")
        finally:
            connector.close()
        stored = {r["record_key"] for r in rows(db, "SELECT DISTINCT record_key FROM raw_record")}
        assert stored == target.expected_keys()
        assert fact_state(db) == fact_state(reference_db)
        inserts = count(db, "SELECT count(*) FROM fact_change WHERE op = 'insert'")
        assert inserts == count(db, "SELECT count(*) FROM fact")  # every fact inserted exactly once

    def test_equal_cursor_values_across_a_page_boundary_are_not_skipped(self, target: ContractTarget) -> None:
        tied = target.make_ties()
        assert len(tied) > target.page_size
        expected = target.expected_keys()
        assert tied <= expected
        pages = read_all(target.connector(), target.stream)
        assert keys_of(pages) == expected
        holding = [i for i, p in enumerate(pages) if tied & {r.key for r in p.records}]
        assert len(holding) > 1, "the tie should straddle a page boundary"
        near = {0, *range(max(0, holding[0] - 1), holding[-1] + 1)}  # the first page and around the tie
        seen: set[str] = set()
        resumed = 0
        for index, page in enumerate(pages):
            seen |= {r.key for r in page.records}
            if page.checkpoint is None or seen >= expected or index not in near:
                continue
            again = keys_of(read_all(target.connector(), target.stream, page.checkpoint))
            missing = expected - seen - again
            assert not missing, f"resuming from {page.checkpoint!r} skips {sorted(missing)[:5]}"
            resumed += 1
        assert resumed, "no page offered a checkpoint before the end"
