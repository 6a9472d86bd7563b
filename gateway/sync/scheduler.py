"""The scheduler: which replica syncs a source, and when.

**One replica per source at a time.** A run (scheduled, manual or a backfill) first takes the source's lease
(:mod:`gateway.store.leases`, a row in the shared store); a :class:`LeaseKeeper` renews it every
``lease_seconds / 3`` while the run lasts and releases it at the end. A replica that dies stops renewing and
another takes the source over once the lease expires (at most ``lease_seconds`` later). A run whose lease is
lost (taken after a missed renewal, or not renewed in time) stops writing: the sync engine asks before every
page. On shutdown a replica finishes the page in flight and releases its lease, so another takes over at once.

**When.** The schedule is the store's, not a replica's: a source is due when its newest run, by whichever
replica, started an interval ago (or before the cron expression's latest time), so N replicas still make one
run per interval. Each replica checks that after taking the lease; the first to find the source due runs it.

Per source an interval or a cron expression (``schedule: {interval: 60, jitter: 5}`` or
``{cron: "*/5 7-18 * * 1-6"}``, Vietnam time), plus a random jitter so replicas and sources do not all fire
together. Operators pause, resume and trigger sources through the store (:mod:`gateway.ops.control`), so the
replica that received the request need not be the one that holds the lease. A circuit per source
(:mod:`gateway.sync.circuit`) rests a failing source; a manual trigger runs anyway, as the probe.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, select

from gateway.connector import Connector
from gateway.errors import ConfigError, GatewayError
from gateway.metrics import Metrics
from gateway.ops.control import read_controls
from gateway.ops.cursors import lease_name
from gateway.sources import SourceSpec
from gateway.store import leases
from gateway.store import records as rec_store
from gateway.sync.circuit import Circuit
from gateway.sync.engine import RunReport, SyncEngine
from gateway.types import VN_TZ

log = logging.getLogger("kpigw.scheduler")


@dataclass(frozen=True)
class Schedule:
    """Every ``interval`` seconds, or at the times of a cron expression (Vietnam time); plus up to ``jitter`` s."""

    interval: float = 60.0
    jitter: float = 5.0
    cron: str | None = None

    def __post_init__(self) -> None:
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ConfigError(f"schedule.cron: {self.cron!r} is not a valid cron expression (5 fields)")
        elif self.interval <= 0:
            raise ConfigError(f"schedule.interval must be positive, not {self.interval}")

    @classmethod
    def of(cls, spec: SourceSpec) -> Schedule:
        return cls(interval=spec.interval, jitter=spec.jitter, cron=spec.cron)

    def delay(self, now: datetime, rng: random.Random) -> float:
        """Seconds from ``now`` (aware) until the next run is due."""
        jitter = rng.uniform(0, self.jitter) if self.jitter > 0 else 0.0
        if self.cron is None:
            return self.interval + jitter
        from croniter import croniter

        following: datetime = croniter(self.cron, now.astimezone(VN_TZ)).get_next(datetime)
        return max((following - now).total_seconds(), 0.0) + jitter

    def is_due(self, last_started: datetime | None, now: datetime) -> bool:
        """Whether a run is due, given when the newest run of the source (by any replica) started."""
        if last_started is None:
            return True
        if self.cron is None:
            return (now - last_started).total_seconds() >= self.interval * 0.9  # jitter: a run a bit early is ok
        from croniter import croniter

        latest: datetime = croniter(self.cron, now.astimezone(VN_TZ)).get_prev(datetime)
        return last_started < latest

    def nominal_seconds(self) -> float:
        """The interval between runs (for a cron schedule: between its next two times), for the metrics."""
        if self.cron is None:
            return self.interval
        from croniter import croniter

        it = croniter(self.cron, datetime.now(VN_TZ))
        first: datetime = it.get_next(datetime)
        second: datetime = it.get_next(datetime)
        return (second - first).total_seconds()


def last_started(conn: Connection, source: str) -> datetime | None:
    """When the newest run of ``source`` started, by any replica (the (source, id) index: one row read)."""
    run = rec_store.RUN
    started: datetime | None = conn.execute(
        select(run.c.started_at).where(run.c.source == source).order_by(run.c.id.desc()).limit(1)).scalar()
    return started


class LeaseKeeper:
    """Holds a lease for one run: takes it, renews it every ``ttl / 3`` on a thread, releases it at the end.

    :meth:`may_write` is what the sync engine asks before each page: False once the lease is lost (renewal
    refused: another holder took it) or could not be renewed in time (a margin before it expires).
    """

    def __init__(self, db: Engine, name: str, *, holder: str, ttl: float) -> None:
        self._db, self.name, self.holder, self._ttl = db, name, holder, ttl
        self._held_until = 0.0
        self._lost = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        if not self._renew():
            return False
        self._thread = threading.Thread(target=self._beat, name=f"kpigw-lease-{self.name}", daemon=True)
        self._thread.start()
        return True

    def may_write(self) -> bool:
        return not self._lost.is_set() and time.monotonic() < self._held_until

    def release(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=self._ttl)
        try:
            with self._db.begin() as conn:
                leases.release(conn, self.name, holder=self.holder)
        except Exception:  # it expires on its own
            log.warning("lease release failed", extra={"lease": self.name}, exc_info=True)

    def current_holder(self) -> str | None:
        """Who holds the lease now (None when it is free or expired)."""
        lease = leases.LEASE
        with self._db.connect() as conn:
            return conn.execute(select(lease.c.holder).where(
                lease.c.name == self.name, lease.c.expires_at >= datetime.now(UTC))).scalar()  # fmt: skip

    def _renew(self) -> bool:
        started = time.monotonic()
        with self._db.begin() as conn:
            ok = leases.acquire(conn, self.name, holder=self.holder, ttl=self._ttl, now=datetime.now(UTC))
        if ok:
            self._held_until = started + self._ttl * 0.9  # stop a margin before another replica may take it
        return ok

    def _beat(self) -> None:
        while not self._done.wait(self._ttl / 3):
            try:
                if not self._renew():
                    log.warning("lease lost: another replica took it; stopping writes", extra={"lease": self.name})
                    self._lost.set()
                    return
            except Exception:  # a missed beat is retried on the next one; may_write() covers the gap
                log.warning("lease renewal failed", extra={"lease": self.name}, exc_info=True)


def run_leased(
    *,
    engine: SyncEngine,
    db: Engine,
    connector: Connector,
    holder: str,
    lease_seconds: float,
    trigger: str,
    streams: Sequence[str] | None = None,
    wait_for_lease: float | None = None,
    poll: float | None = None,
) -> RunReport:
    """Run ``connector``'s sync outside the scheduler (the CLI, a backfill) under the source's lease.

    Waits up to ``wait_for_lease`` seconds (default: a bit over one lease period, so the lease of a run that
    was killed expires meanwhile) for another run to end, then gives
    up with :class:`~gateway.ops.Conflict`: two runs of one source never write at the same time, whoever
    started them. The run stops at a page boundary if the lease is lost.
    """
    from gateway.ops._errors import Conflict

    keeper = LeaseKeeper(db, lease_name(connector.name), holder=holder, ttl=lease_seconds)
    poll = min(1.0, lease_seconds / 4) if poll is None else poll
    # by default long enough for the lease of a run that died (a killed process) to expire
    deadline = time.monotonic() + (lease_seconds + 2 * poll if wait_for_lease is None else wait_for_lease)
    waited = False
    while not keeper.acquire():
        if not waited:
            log.warning("waiting for another run of the source to end",
                        extra={"source": connector.name, "holder": keeper.current_holder()})  # fmt: skip
            waited = True
        if time.monotonic() >= deadline:
            raise Conflict(f"{connector.name!r} is being synced by {keeper.current_holder() or 'another replica'}; "
                           "try again when that run ends", source=connector.name)  # fmt: skip
        time.sleep(poll)
    try:
        return engine.run(connector, streams=streams, trigger=trigger, should_continue=keeper.may_write)
    finally:
        keeper.release()


@dataclass
class _SourceState:
    spec: SourceSpec
    schedule: Schedule
    next_due: float
    circuit: Circuit
    paused: bool = False
    manual: bool = False
    trigger_seen: datetime | None = None
    running: Future[RunReport | None] | None = None
    last_report: RunReport | None = None

    @property
    def busy(self) -> bool:
        return self.running is not None and not self.running.done()


class Scheduler:
    def __init__(
        self,
        *,
        sources: dict[str, SourceSpec],
        engine: SyncEngine,
        db: Engine,
        connector_for: Callable[[SourceSpec], Connector],
        metrics: Metrics,
        replica: str,
        lease_seconds: float = 60.0,
        max_concurrent: int = 4,
        tick: float | None = None,
        circuit_factory: Callable[[], Circuit] = Circuit,
        rng: random.Random | None = None,
    ) -> None:
        now = time.monotonic()
        self._rng = rng or random.Random()  # noqa: S311 - spreading load, not crypto
        self._states: dict[str, _SourceState] = {}
        for name, spec in sources.items():
            schedule = Schedule.of(spec)
            first = now + self._rng.uniform(0, spec.jitter) if spec.jitter > 0 else now
            self._states[name] = _SourceState(spec, schedule, next_due=first, circuit=circuit_factory())
            metrics.sync_interval.labels(name).set(schedule.nominal_seconds())
        self._engine, self._db, self._connector_for = engine, db, connector_for
        self._metrics, self._replica, self._lease_seconds = metrics, replica, lease_seconds
        self._tick = tick if tick is not None else min(1.0, lease_seconds / 6)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="kpigw-sync")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kpigw-scheduler", daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop scheduling; running syncs end after their page in flight and release their leases."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def pause(self, source: str) -> None:
        """Pause here at once (tests, the demo); operators pause through the store: :mod:`gateway.ops.control`."""
        self._states[source].paused = True

    def resume(self, source: str) -> None:
        self._states[source].paused = False

    def trigger(self, source: str) -> Future[RunReport | None]:
        """Run ``source`` now on this replica (if no other replica is syncing it); returns the run's future."""
        with self._lock:
            state = self._states[source]
            if state.running is None or state.running.done():
                state.running = self._pool.submit(self._run, state, "manual")
            return state.running

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {"paused": s.paused, "running": s.busy, "circuit": s.circuit.state_name,
                   "seconds_to_next": round(max(s.next_due - time.monotonic(), 0.0), 1)}
            for name, s in self._states.items()
        }  # fmt: skip

    # -- the loop ----------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the loop outlives a store outage; leases lapse on their own
                log.exception("scheduler tick failed")
            self._stop.wait(self._tick)

    def tick(self) -> None:
        """One pass: read the operators' controls, start what is due here. Public for tests."""
        with self._db.connect() as conn:
            controls = read_controls(conn)
        now = time.monotonic()
        for name, state in self._states.items():
            control = controls.get(name)
            state.paused = bool(control and control.paused)
            self._metrics.source_paused.labels(name).set(1 if state.paused else 0)
            requested = control.trigger_requested_at if control else None
            if requested is not None and (state.trigger_seen is None or requested > state.trigger_seen):
                state.manual, state.trigger_seen = True, requested
            if state.paused or not state.spec.enabled or self._stop.is_set():
                continue
            with self._lock:
                if state.busy or not (state.manual or now >= state.next_due):
                    continue
                if not state.manual and not state.circuit.allows():
                    state.next_due = now + self._tick
                    continue
                trigger = "requested" if state.manual else "schedule"
                state.manual = False
                state.running = self._pool.submit(self._run, state, trigger)

    def _may_write(self, state: _SourceState, keeper: LeaseKeeper) -> bool:
        return keeper.may_write() and not state.paused and not self._stop.is_set()

    def _run(self, state: _SourceState, trigger: str) -> RunReport | None:
        name = state.spec.name
        keeper = LeaseKeeper(self._db, lease_name(name), holder=self._replica, ttl=self._lease_seconds)
        try:
            if not keeper.acquire():  # another replica runs it; look again within a lease period (failover)
                log.debug("source is synced by another replica", extra={"source": name})
                retry = min(state.schedule.nominal_seconds(), self._lease_seconds / 2)
                state.next_due = time.monotonic() + retry + self._rng.uniform(0, self._tick)
                return None
        except Exception:
            log.warning("could not take the source's lease", extra={"source": name}, exc_info=True)
            state.next_due = time.monotonic() + self._tick * 2
            return None
        held, running = self._metrics.lease_held.labels(name), self._metrics.sync_running.labels(name)
        held.set(1)
        try:
            if trigger == "schedule" and not self._due_in_store(state):
                return None
            if trigger == "requested" and not self._request_pending(state):
                return None
            running.set(1)
            return self._sync(state, trigger, keeper)
        finally:
            running.set(0)
            keeper.release()
            held.set(0)

    def _request_pending(self, state: _SourceState) -> bool:
        """A manual run asked through the store runs once: not if any replica started one since the request."""
        with self._db.connect() as conn:
            last = last_started(conn, state.spec.name)
        return last is None or state.trigger_seen is None or last < state.trigger_seen

    def _due_in_store(self, state: _SourceState) -> bool:
        """Whether no replica ran the source recently; if one did, wait for its next time."""
        with self._db.connect() as conn:
            last = last_started(conn, state.spec.name)
        now = datetime.now(UTC)
        if state.schedule.is_due(last, now):
            # The replica that runs this time comes back one tick later than the others would: the next run
            # then goes to a replica that did not run this one, so runs rotate instead of racing.
            state.next_due = time.monotonic() + state.schedule.delay(now, self._rng) + self._tick
            return True
        wait = state.schedule.delay(now, self._rng)
        if last is not None and state.schedule.cron is None:
            wait = max((last - now).total_seconds() + state.schedule.interval, 0.0) + self._rng.uniform(
                0, max(state.spec.jitter, 0.0))  # fmt: skip
        state.next_due = time.monotonic() + wait
        return False

    def _sync(self, state: _SourceState, trigger: str, keeper: LeaseKeeper) -> RunReport | None:
        name = state.spec.name
        connector: Connector | None = None
        try:
            connector = self._connector_for(state.spec)
            report = self._engine.run(connector, trigger="manual" if trigger == "requested" else trigger,
                                      should_continue=lambda: self._may_write(state, keeper))  # fmt: skip
            state.last_report = report
            kinds = {s.error_kind for s in report.streams if s.error}
            if kinds != {"Cancelled"}:  # a run stopped on purpose says nothing about the source's health
                state.circuit.record(ok=report.outcome != "failed")
            return report
        except GatewayError as exc:
            log.warning("sync not started", extra={"source": name, "error": str(exc)})
            return None
        except Exception:
            state.circuit.record(ok=False)
            log.exception("sync crashed", extra={"source": name})
            return None
        finally:
            self._metrics.source(name).circuit = state.circuit.state
            if connector is not None:
                connector.close()


__all__ = ["LeaseKeeper", "Schedule", "Scheduler"]
