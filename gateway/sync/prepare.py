"""Preparing a page for the store, in the gateway's process or in worker processes.

:func:`prepare_records` is most of what lies between a page of archived records (their JSON and content
hash) and its transaction: normalize, value, the work items' rows, the facts' stored values and their
change-feed snapshot parts. It is pure (no store, no network, no metrics, no logging), and it is about half of
a sync's CPU; the store transaction is most of the rest.

In one process that work and the store's share one interpreter lock, so a sync kept one core busy however
many the machine had (the sync benchmark's own stand-in took 21 µs per record of the second). A
:class:`ProcessPreparer` runs :func:`prepare_records` in worker processes instead, while the engine's process
fetches, encodes and stores. What crosses to a worker is the page's records, how to build the connector's
normalize (its :class:`~gateway.connector.NormalizerRecipe`: the streams' field maps, never clients or
credentials) and which mappings to value with (their directory and content digest); what comes back is a
:class:`PreparedPage`. When the connector's payloads are plain JSON, a record crosses as JSON (its archived
JSON, which keeps the source's key order, and its hash) and the worker decodes it: four times cheaper than
unpickling a decoded copy.

Exactness comes first:

- A worker values a page with the mapping set the engine took when the page's preparation started: it loads
  the same directory and compares the set's content digest. If the files changed meanwhile and the engine has
  not reloaded yet, the digests differ and the engine prepares that page itself.
- Anything that goes wrong in a worker (the version check, an exception, a worker killed) makes the engine
  prepare the page itself, with the same mapping set. A bug in a normalizer therefore surfaces exactly as it
  does without workers, and a dead worker costs a warning and a slower page, never a page.
- Each worker is a fresh interpreter started straight into this module (no copy of the engine's threads or
  open store handles, and never the engine's ``__main__`` again, as multiprocessing's spawn does) with a
  socket of its own, of which the engine keeps only its end: a worker that dies, even halfway through writing a
  result, is an end of file there, never a wait. (``concurrent.futures.ProcessPoolExecutor`` was the first
  version: a worker killed while writing its result left the pool's reader waiting forever for the rest,
  since the pool's own process holds the result pipe's write end too; it hung one test run in nine.)
- A worker holds no state but caches keyed by content, and exits when the engine's process does.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import orjson

from gateway.connector import Normalize, NormalizerRecipe
from gateway.errors import RecordError
from gateway.store import facts as fact_store
from gateway.store import records as rec_store
from gateway.types import Fact, SourceRecord, WorkItem

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


@dataclass(slots=True)
class PreparedPage:
    """A page's records made ready for the store (see :func:`prepare_records`); plain data, so it pickles."""

    item_rows: list[rec_store.EncodedWorkItem] = field(default_factory=list)
    facts: fact_store.PreparedFacts = field(default_factory=dict)
    snapshots: fact_store.SnapshotParts = field(default_factory=dict)
    origins: list[tuple[str, str, str]] = field(default_factory=list)
    clean_keys: list[str] = field(default_factory=list)
    quarantine: list[rec_store.QuarantineEntry] = field(default_factory=list)
    items: int = 0  # work items normalized
    unmatched: int = 0  # of which no rule matched


def quarantined(a: rec_store.ArchivedRecord, stage: str, error_kind: str, reason: str) -> rec_store.QuarantineEntry:
    rec = a.record
    return rec_store.QuarantineEntry(rec.source, rec.stream, rec.key, a.content_hash, a.payload_json, stage,
                                     error_kind, reason)  # fmt: skip


def prepare_records(archived: Sequence[rec_store.ArchivedRecord], *, normalize: Normalize,
                    valuer: Valuer) -> PreparedPage:  # fmt: skip
    """Normalize and value the records (encoded by :func:`~gateway.store.records.encode_records`); a record
    that fails to normalize or to map is quarantined."""
    out = PreparedPage()
    items: list[tuple[WorkItem, str, str | None]] = []
    facts: list[Fact] = []
    for a in archived:
        rec = a.record
        try:
            normalized = normalize(rec)
        except RecordError as exc:
            out.quarantine.append(quarantined(a, "normalize", type(exc).__name__, exc.message))
            continue
        out.origins.append((rec.source, rec.stream, rec.key))
        reasons: list[str] = []
        for item in normalized:
            valuation = valuer.value(item, raw={"content_hash": a.content_hash})
            facts.extend(valuation.facts)
            problems = [p for p in valuation.problems if p.quarantine]
            reasons.extend(f"{p.kind}: {p.detail}" for p in problems)
            status = "unmatched" if valuation.unmatched else "partial" if problems else "mapped"
            out.unmatched += valuation.unmatched
            detail = "; ".join(f"{p.kind}: {p.detail}" for p in valuation.problems) or None
            items.append((item, status, detail))
        if reasons:
            out.quarantine.append(quarantined(a, "map", "MappingError", "; ".join(reasons)))
        else:
            out.clean_keys.append(rec.key)
    out.items = len(items)
    out.item_rows = rec_store.encode_work_items(items)
    out.facts = fact_store.prepare_facts(facts)
    out.snapshots = fact_store.prepare_snapshot_parts(out.facts)
    return out


# -- worker processes ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    """One page for a worker: the records, how to normalize them (the recipe, pickled once per stream run, with
    its digest as the cache key) and which mappings to value them with."""

    recipe_key: str
    recipe: bytes
    mappings_root: str
    mappings_digest: str  # the mapping set's content digest (MappingSet.content_digest), not its short version
    archived: Sequence[rec_store.ArchivedRecord] = ()  # the records with their archived JSON and hash, or
    # the same without the decoded payloads: the archived JSON (in the source's key order) and hash
    as_json: Sequence[tuple[str, str, str, str | None, str, str]] = ()

    def records(self) -> Sequence[rec_store.ArchivedRecord]:
        """The page's records; from their JSON for a connector whose payloads are plain JSON (the same records,
        decoded faster than a pickled copy loads)."""
        if not self.as_json:
            return self.archived
        return [
            rec_store.ArchivedRecord(SourceRecord(source, stream, key, orjson.loads(payload), cursor), payload, digest)
            for source, stream, key, cursor, payload, digest in self.as_json
        ]


@dataclass(frozen=True, slots=True)
class _Declined:
    """A worker's answer when it cannot prepare the page exactly as the engine would; the engine then does."""

    reason: str


_CACHE_SIZE = 4  # recipes and mapping sets per worker: one per source and one per mappings version in use
_normalizers: OrderedDict[str, Normalize] = OrderedDict()
_mapping_sets: OrderedDict[tuple[str, str], Any] = OrderedDict()
_collector = {"freeze": False}  # the engine's process froze its start-up objects (gateway/gctune.py): a worker too


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> Any:
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    if _collector["freeze"]:  # a new mapping set or normalizer lives as long as the worker: out of the GC's walks
        gc.collect()
        gc.freeze()
    return value


def _prepare_job(job: _Job) -> PreparedPage | _Declined:
    """In a worker: prepare the page, or decline it (the engine then prepares it itself)."""
    try:
        mappings = _mapping_sets.get((job.mappings_root, job.mappings_digest))
        if mappings is None:
            from gateway.mapping.mappingset import load_mappings

            loaded = load_mappings(Path(job.mappings_root))
            if loaded.content_digest != job.mappings_digest:
                return _Declined("the mapping files changed since the engine loaded them")
            mappings = _remember(_mapping_sets, (job.mappings_root, job.mappings_digest), loaded)
        normalize = _normalizers.get(job.recipe_key)
        if normalize is None:
            recipe: NormalizerRecipe = pickle.loads(job.recipe)  # noqa: S301 - the engine's own bytes
            normalize = _remember(_normalizers, job.recipe_key, recipe.build(*recipe.args))
        return prepare_records(job.records(), normalize=normalize, valuer=mappings)
    except Exception as exc:  # any failure: the engine prepares the page and sees it for itself
        return _Declined(f"{type(exc).__name__}: {exc}")


def _serve(conn: Connection, engine_pid: int, gc_thresholds: tuple[int, ...], freeze: bool) -> None:
    """A worker's life: read a job, answer it, until the engine's end closes or the engine's process is gone.
    The collector is set as the engine's (``KPIGW_GC_TUNING``): with the interpreter's defaults a worker spent
    an eighth more CPU per page."""
    gc.set_threshold(*gc_thresholds)
    _collector["freeze"] = freeze

    def watch() -> None:  # a worker busy on a page would not see the pipe close
        while os.getppid() == engine_pid:
            threading.Event().wait(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="kpigw-prepare-engine-watch", daemon=True).start()
    while True:
        try:
            blob = conn.recv_bytes()
        except (EOFError, OSError):
            return
        answer: PreparedPage | _Declined
        try:
            job = pickle.loads(blob)  # noqa: S301 - the engine's own bytes
        except Exception as exc:  # a record that pickles but does not load here: the page's problem, not ours
            answer = _Declined(f"the job did not load in the worker: {type(exc).__name__}: {exc}")
        else:
            answer = _prepare_job(job)
        try:
            conn.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # the engine closed its end (a lease gave this worker up): nobody waits for the answer
            return


# How a worker process starts: with the engine's import path, straight into this module. Not multiprocessing's
# spawn: it runs the engine's ``__main__`` again in the worker (as ``__mp_main__``), and an embedding script
# without a main guard then ran its whole body in every worker, a second sync of the same source included.
_BOOT = ("import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
         "from gateway.sync.prepare import _worker_main; _worker_main()")  # fmt: skip


# What a worker's environment keeps of the engine's: what an interpreter needs to start and to format as the
# engine does. Nothing else: the sources' credentials are ``${ENV}`` references, the store's URL and the
# metrics token are settings, all in the engine's environment, and a worker needs none of them.
_WORKER_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "LD_LIBRARY_PATH", "VIRTUAL_ENV",
               "SYSTEMROOT")  # fmt: skip


def _worker_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items()
            if name in _WORKER_ENV or name.startswith(("LC_", "PYTHON"))}  # fmt: skip


def _worker_main() -> None:
    """A worker process's entry point (:data:`_BOOT`): its end of the pipe, the engine's process id and collector
    settings come as arguments."""
    _, _, fd, engine_pid, thresholds, freeze = sys.argv
    _serve(Connection(int(fd)), int(engine_pid), tuple(json.loads(thresholds)), freeze == "1")


class _Worker:
    """One worker process, the engine's end of its pipe, and a thread that reads the worker's answers as they
    come: the worker never waits to write an answer while the engine writes it the next job (both messages
    are larger than a pipe's buffer; without the reader they would wait for each other for ever)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()  # neither end is inherited by other children
        try:
            collector = (json.dumps(gc.get_threshold()), "1" if gc.get_freeze_count() > 0 else "0")  # the engine's
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-c", _BOOT, json.dumps(sys.path), str(theirs.fileno()), str(os.getpid()), *collector],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=_worker_env(),
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker holds the only other end: its death is an end of file here
        self.conn = Connection(ours.detach())
        self.dead = False
        self._answers: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, name="kpigw-prepare-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                self._answers.put(self.conn.recv_bytes())
            except (EOFError, OSError):  # the worker ended (perhaps halfway through an answer), or we closed
                self._answers.put(None)
                return

    def send(self, blob: bytes) -> None:
        self.conn.send_bytes(blob)

    def receive(self) -> PreparedPage | _Declined:
        """The answer to the oldest job not answered yet; EOFError once the worker has ended."""
        blob = self._answers.get()
        if blob is None:
            self._answers.put(None)  # and for every later job of this worker
            raise EOFError("the worker process ended")
        answer: PreparedPage | _Declined = pickle.loads(blob)  # noqa: S301 - our worker's bytes
        return answer

    def close(self) -> None:
        """End the worker. Closing our end alone would not do: the reader thread, blocked in a read on it, keeps
        the socket open, so the worker would never see an end of file (close waited 5 s, then killed it), and the
        descriptor's number, freed under the reader, could be reused by the next worker's pipe. A shutdown ends
        both reads; the descriptor closes once the reader is gone."""
        self.dead = True
        if self.conn.closed:
            return
        try:
            with socket.fromfd(self.conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as end:  # a duplicate
                end.shutdown(socket.SHUT_RDWR)
        except OSError:  # already shut down
            pass
        self._reader.join(timeout=5)
        self.conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@dataclass(frozen=True, slots=True)
class PackedRecipe:
    """A connector's :class:`NormalizerRecipe`, pickled once per stream run; ``key`` names it in the workers'
    caches (a digest of the bytes, so two connectors with the same field maps share one normalizer)."""

    key: str
    blob: bytes
    json_payloads: bool

    @classmethod
    def pack(cls, recipe: NormalizerRecipe) -> PackedRecipe:
        blob = pickle.dumps(recipe, protocol=pickle.HIGHEST_PROTOCOL)
        return cls(hashlib.blake2b(blob, digest_size=16).hexdigest(), blob, recipe.json_payloads)


@dataclass(slots=True)
class Ticket:
    """A page handed to a worker (or declined before it reached one)."""

    worker: _Worker | None
    declined: str | None = None


class Lease:
    """The workers one stream run has to itself, used in turn (:meth:`submit`, then :meth:`resolve` in the same
    order; a worker answers its jobs in the order it got them). A worker found dead is replaced at its next
    turn."""

    def __init__(self, preparer: ProcessPreparer, workers: list[_Worker]) -> None:
        self._preparer, self.workers, self._turn = preparer, workers, 0

    def submit(self, recipe: PackedRecipe, mappings_root: Path, mappings_digest: str,
               archived: Sequence[rec_store.ArchivedRecord]) -> Ticket:  # fmt: skip
        job = _Job(recipe.key, recipe.blob, str(mappings_root), mappings_digest)
        try:
            if recipe.json_payloads and all(a.plain_json for a in archived):
                # The archived JSON keeps the source's key order (a field map that stringifies an object sees the
                # order the engine's normalize sees), so it is the payload too, decoded in the worker. A page with
                # a value that is not plain JSON (a connector that says json_payloads wrongly) crosses pickled.
                as_json = [(a.record.source, a.record.stream, a.record.key, a.record.cursor_value, a.payload_json,
                            a.content_hash) for a in archived]  # fmt: skip
                job = dataclasses.replace(job, as_json=as_json)
            else:
                job = dataclasses.replace(job, archived=archived)
            blob = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a page that does not pickle: the engine prepares it; the worker is fine
            return Ticket(None, f"the page does not pickle: {type(exc).__name__}: {exc}")
        index = self._turn % len(self.workers)
        self._turn += 1
        try:
            worker = self.workers[index]
            if worker.dead:
                suspended = self._preparer.suspended()
                if suspended:
                    return Ticket(None, suspended)
                worker.close()
                try:
                    fresh = self.workers[index] = _Worker()
                except Exception:  # one that cannot start: a death too (the dead one it replaces is counted)
                    self._preparer.worker_died()
                    raise
                self._preparer.adopt(fresh, replacing=worker)
                worker = fresh
            worker.send(blob)
            return Ticket(worker)
        except Exception as exc:  # a worker gone (a broken pipe), one that cannot start
            self._died(self.workers[index])
            return Ticket(None, f"{type(exc).__name__}: {exc}")

    def resolve(self, ticket: Ticket, fallback: Callable[[], PreparedPage]) -> tuple[PreparedPage, bool]:
        """The worker's page and True, or ``fallback()``'s and False when the worker declined it or died."""
        reason = ticket.declined
        if ticket.worker is not None:
            try:
                answer = ticket.worker.receive()
            except (EOFError, OSError) as exc:  # the worker died, perhaps halfway through its answer
                self._died(ticket.worker)
                answer = _Declined(f"the worker process ended ({type(exc).__name__})")
            else:  # a live worker, whether it prepared the page or declined it (mapping files changed, ...)
                self._preparer.worker_answered()
            if isinstance(answer, PreparedPage):
                return answer, True
            reason = answer.reason
        self._preparer.warn_once(reason or "declined")
        return fallback(), False

    def discard(self, ticket: Ticket) -> None:
        """Wait for a page nobody will store (the stream stopped), so that the worker's next answer is to its
        next job."""
        if ticket.worker is not None and not ticket.worker.dead:
            try:
                ticket.worker.receive()
            except (EOFError, OSError):
                self._died(ticket.worker)

    def _died(self, worker: _Worker) -> None:
        """Mark ``worker`` dead; the pool counts each worker's death once, however many of its pages it took."""
        if not worker.dead:
            worker.dead = True
            self._preparer.worker_died()

    def release(self) -> None:
        self._preparer.give_back(self.workers)


class ProcessPreparer:
    """Up to ``workers`` worker processes preparing pages, shared by the syncs of the process, started on first
    use and kept. A stream run leases the idle ones (:meth:`lease`); a run that finds none idle, because
    other syncs hold them, prepares its pages in the engine's process, as without workers.

    Workers that keep dying are not started again for ever: after :data:`MAX_DEATHS` deaths in a row (a worker
    that does not start counts as one) with no page answered or declined by a live worker in between (a worker
    that cannot import the project, one killed by a memory limit at each page), the pool is suspended for
    :data:`SUSPEND_SECONDS`, pages are prepared in the engine's process, and the log says why once. Before
    this, each such page cost a new interpreter and a failed hand-over."""

    MAX_DEATHS = 3
    SUSPEND_SECONDS = 300.0

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a ProcessPreparer needs at least one worker")
        self.workers = workers
        self._idle: list[_Worker] = []
        self._live: set[_Worker] = set()  # idle or leased
        self._started = 0
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._deaths = 0  # in a row, with no answer (a page or a decline) from a live worker since
        self._suspended_until = 0.0  # time.monotonic()

    def suspended(self) -> str | None:
        """Why no worker is started now (the reason pages are prepared in the engine's process), or None."""
        if self._suspended_until - time.monotonic() <= 0:
            return None  # the reason below is fixed text: warn_once tells it once, not at every second left
        return f"worker processes suspended for {self.SUSPEND_SECONDS:.0f} s: {self.MAX_DEATHS} died in a row"

    def worker_died(self) -> None:
        with self._lock:
            self._deaths += 1
            if self._deaths < self.MAX_DEATHS:
                return
            self._deaths = 0
            self._suspended_until = time.monotonic() + self.SUSPEND_SECONDS
        log.warning("worker processes keep dying: pages are prepared in the engine's process for a while",
                    extra={"deaths": self.MAX_DEATHS, "seconds": self.SUSPEND_SECONDS})  # fmt: skip

    def worker_answered(self) -> None:
        if self._deaths:
            with self._lock:
                self._deaths = 0

    def lease(self) -> Lease | None:
        if self.suspended():
            return None
        with self._lock:
            taken, self._idle = self._idle, []
            missing = self.workers - self._started
            self._started += missing
        try:
            while missing:
                worker = _Worker()
                missing -= 1
                taken.append(worker)
                with self._lock:
                    self._live.add(worker)
        except Exception as exc:  # a worker cannot start (no resources, no interpreter, a platform without pass_fds)
            with self._lock:
                self._started -= missing
            self.warn_once(f"a worker process could not start: {type(exc).__name__}: {exc}")
            self.worker_died()  # one that never started counts as one that died: enough of them suspend the pool
        return Lease(self, taken) if taken else None

    def adopt(self, worker: _Worker, replacing: _Worker) -> None:
        """A lease replaced a dead worker with a new one."""
        with self._lock:
            self._live.discard(replacing)
            self._live.add(worker)

    def give_back(self, workers: list[_Worker]) -> None:
        for worker in workers:
            if worker.dead:
                worker.close()
        with self._lock:
            alive = [w for w in workers if not w.dead]
            self._live.difference_update(w for w in workers if w.dead)
            self._started -= len(workers) - len(alive)
            self._idle += alive

    def worker_pids(self) -> list[int]:
        """The workers' process ids, idle or leased (none before the first lease): for the benchmark and tests."""
        with self._lock:
            return sorted(w.process.pid for w in self._live)

    def warn_once(self, reason: str) -> None:
        if len(self._warned) >= 256:  # reasons carry exception texts: a bound, then each is told again
            self._warned.clear()
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("a page was prepared in the engine's process instead of a worker",
                        extra={"reason": reason})  # fmt: skip

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._started -= len(idle)
            self._live.difference_update(idle)
        for worker in idle:
            worker.close()


def default_workers() -> int:
    """One worker per core beyond the first, at most four: the engine's own process keeps a core for fetching and
    storing, and beyond four the single store transaction per page is the limit anyway."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores - 1))


_shared: dict[int, ProcessPreparer] = {}
_shared_lock = threading.Lock()


def shared_preparer(workers: int) -> ProcessPreparer | None:
    """The process's pool of ``workers`` preparing processes (None for 0: prepare in the engine's process).
    Shared: engines come and go (tests build many) and the workers' caches are keyed by content; the workers
    end with the interpreter (their pipe closes; a busy one sees its parent gone within a second)."""
    if workers <= 0:
        return None
    with _shared_lock:
        found = _shared.get(workers)
        if found is None:
            found = _shared[workers] = ProcessPreparer(workers)
        return found
