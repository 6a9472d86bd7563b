"""Review of the page-preparing workers (gateway/sync/prepare.py): each test here failed before its fix."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.declarative.config import NormalizeConfig
from connectors.declarative.rest import stream_normalizer
from gateway.connector import NormalizerRecipe, Page
from gateway.mapping import mappingset
from gateway.mapping.mappingset import load_mappings
from gateway.store import records as rec_store
from gateway.sync.engine import SyncEngine
from gateway.sync.prepare import Lease, PackedRecipe, PreparedPage, ProcessPreparer, prepare_records
from gateway.types import SourceRecord
from tests.conftest import ROOT, write_eoffice_source
from tests.test_prepare_workers import _engine, _prepared, _runtime, _stored, _sync, _Wrapped


class _Unpicklable:
    """A payload value a connector may hand over (a parser's object): archived as its str, never pickled."""

    def __str__(self) -> str:
        return "an unpicklable value"

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("cannot pickle this value")


class _Poisoned(_Wrapped):
    """The e-office connector whose first page carries a value that does not pickle, with a recipe that sends
    records pickled (not as their JSON)."""

    def __init__(self, inner: Any, *, recipe: Any = None) -> None:
        super().__init__(inner)
        base = inner.normalizer_recipe()
        self.normalizer_recipe = recipe or (lambda: dataclasses.replace(base, json_payloads=False))
        self.poisoned = 0

    def read(self, stream: str, cursor: str | None) -> Iterator[Page]:
        for n, page in enumerate(self._inner.read(stream, cursor)):
            if n == 0 and page.records:
                first = page.records[0]
                poisoned = SourceRecord(first.source, first.stream, first.key,
                                        {**first.payload, "extra": _Unpicklable()}, first.cursor_value)  # fmt: skip
                self.poisoned += 1
                yield dataclasses.replace(page, records=[poisoned, *page.records[1:]])
            else:
                yield page


def test_closing_an_idle_worker_is_prompt_and_does_not_kill_it() -> None:
    """_Worker.close closed the engine's end while the reader thread sat in recv on it: the socket stayed open
    (the blocked call holds it), the worker never saw an end of file, and close waited 5 s, then SIGKILLed it."""
    preparer = ProcessPreparer(1)
    lease = preparer.lease()
    assert lease is not None
    worker = lease.workers[0]
    lease.release()
    started = time.monotonic()
    preparer.close()
    assert time.monotonic() - started < 2.0
    assert worker.process.returncode == 0


def test_a_page_that_does_not_pickle_keeps_its_worker(
    tmp_path: Path, eoffice_env: dict[str, str]
) -> None:
    """A job that does not pickle is the page's problem, not the worker's: it was marked dead, so the next turn
    closed it (a 5 s wait, then SIGKILL) and spawned another."""
    reference = _runtime(tmp_path, "ref", f"sqlite:///{tmp_path}/ref.db", eoffice_env, workers=0)
    rt = _runtime(tmp_path, "poison", f"sqlite:///{tmp_path}/poison.db", eoffice_env, workers=0)
    preparer = ProcessPreparer(1)
    try:
        _sync(reference, _Poisoned(reference.connector("eoffice")))
        lease = preparer.lease()  # start the worker before timing
        assert lease is not None
        lease.release()
        pids = preparer.worker_pids()
        engine = _engine(rt, preparer)
        started = time.monotonic()
        connector = _Poisoned(rt.connector("eoffice"))
        _sync(dataclasses.replace(rt, sync=engine), connector)
        elapsed = time.monotonic() - started
        assert connector.poisoned >= 2  # a page of each stream
        assert _stored(rt.db) == _stored(reference.db)
        assert _prepared(rt, "engine") == connector.poisoned and _prepared(rt, "worker") > 2
        assert preparer.worker_pids() == pids, "the worker was replaced"
        assert elapsed < 4.0
    finally:
        preparer.close()
        reference.close()
        rt.close()


def _lambda_recipe() -> NormalizerRecipe:
    return NormalizerRecipe(lambda: None, ())  # a build that travels by name cannot be a lambda: no pickle


def test_a_recipe_that_does_not_pickle_falls_back_and_keeps_the_pool(
    tmp_path: Path, eoffice_env: dict[str, str]
) -> None:
    """PackedRecipe.pack ran after the lease, outside the try/finally: the sync raised PicklingError instead of
    preparing its pages itself, and the leased workers never went back to the pool."""
    reference = _runtime(tmp_path, "ref", f"sqlite:///{tmp_path}/ref.db", eoffice_env, workers=0)
    rt = _runtime(tmp_path, "recipe", f"sqlite:///{tmp_path}/recipe.db", eoffice_env, workers=0)
    preparer = ProcessPreparer(1)
    try:
        _sync(reference)
        engine = _engine(rt, preparer)
        connector = _Wrapped(rt.connector("eoffice"))
        connector.normalizer_recipe = _lambda_recipe
        report = _sync(dataclasses.replace(rt, sync=engine), connector)
        assert report.outcome in ("success", "partial")
        assert _stored(rt.db) == _stored(reference.db)
        assert _prepared(rt, "engine") > 2 and _prepared(rt, "worker") == 0
        lease = preparer.lease()
        assert lease is not None, "the failed run kept the pool's workers"
        lease.release()
    finally:
        preparer.close()
        reference.close()
        rt.close()


def _normalize_config() -> NormalizeConfig:
    return NormalizeConfig.model_validate({
        "kind": "incoming_document", "key": "doc:{agency}:in:{id}", "agency": "agency", "title": "subject",
        "unit": "unit", "status": "status",
    })  # fmt: skip


def test_json_records_keep_their_key_order(tmp_path: Path) -> None:
    """Records crossed as their archived canonical JSON, whose keys are sorted: a field map reading an object
    (here the title, an object the source sends with its keys in its own order) then stringified it with the keys
    in another order than the engine's own normalize."""
    mappings = load_mappings(ROOT / "mappings")
    recipe = NormalizerRecipe(stream_normalizer, ({"docs": _normalize_config()}, "ioffice"), json_payloads=True)
    records = [
        SourceRecord("rest", "docs", f"r{i}", {"id": i, "agency": "SKHCN", "unit": "VP", "status": "done",
                                             "subject": {"vi": f"Văn bản {i}", "en": f"Document {i}"}})
        for i in range(3)
    ]  # fmt: skip
    archived = rec_store.encode_records(records)
    here = prepare_records(archived, normalize=recipe.build(*recipe.args), valuer=mappings)
    preparer = ProcessPreparer(1)
    try:
        lease = preparer.lease()
        assert lease is not None
        assert mappings.root is not None and mappings.content_digest is not None
        ticket = lease.submit(PackedRecipe.pack(recipe), mappings.root, mappings.content_digest, archived)

        def fail() -> PreparedPage:
            raise AssertionError("the worker declined the page")

        there, by_worker = lease.resolve(ticket, fail)
        lease.release()
        assert by_worker
        assert there.item_rows == here.item_rows
    finally:
        preparer.close()


_EMBEDDING = """
import os
from pathlib import Path

from gateway.metrics import Metrics
from gateway.runtime import build_runtime
from gateway.settings import Settings

with open(os.environ["RAN"], "a") as ran:
    ran.write(f"{os.getpid()}\\n")
settings = Settings(database_url=os.environ["STORE"], sources_dir=Path(os.environ["SOURCES"]), scheduler=False,
                    prepare_workers=1)
rt = build_runtime(settings, metrics=Metrics(), env=dict(os.environ))
connector = rt.connector("eoffice")
print(rt.sync.run(connector).outcome, flush=True)
connector.close()
rt.close()
"""


def test_a_program_without_a_main_guard_is_not_run_again_by_its_workers(
    tmp_path: Path, eoffice_env: dict[str, str]
) -> None:
    """Workers were started with multiprocessing's spawn, which runs the engine's __main__ again in the child: a
    script embedding the gateway without ``if __name__ == "__main__"`` ran its whole body in each worker, here a
    second sync of the same source into the same store (the worker's own lease failed, so it synced in-process)."""
    write_eoffice_source(tmp_path / "sources", page_size=40)
    script = tmp_path / "embed.py"
    script.write_text(_EMBEDDING, encoding="utf-8")
    env = {**os.environ, **eoffice_env, "RAN": str(tmp_path / "ran"), "STORE": f"sqlite:///{tmp_path}/s.db",
           "SOURCES": str(tmp_path / "sources")}  # fmt: skip
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "ran").read_text().split()) == 1, "a worker ran the program again"
    assert done.stdout.split() in (["success"], ["partial"])


def test_a_mapping_file_edited_while_the_engine_loads_is_not_mistaken_for_its_version(
    tmp_path: Path, eoffice_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker trusts the version (a digest of the files) to name the mapping set's content. load_mappings parsed
    each file, then read them all again for the digest: a file saved in between gave the engine the old rules
    under the new files' version, and a worker, loading the new files, found the versions equal and valued the
    page with other rules than the engine held."""
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    rules = mappings / "rules" / "SKHCN.yaml"
    edited = rules.read_text(encoding="utf-8").replace("      lead: 1\n", "      lead: 2\n")
    real_load_yaml = mappingset.load_yaml

    def saved_meanwhile(path: Path) -> Any:
        found = real_load_yaml(path)
        if path == rules and rules.read_text(encoding="utf-8") != edited:
            rules.write_text(edited, encoding="utf-8")  # an editor saves right after the loader read the file
        return found

    monkeypatch.setattr(mappingset, "load_yaml", saved_meanwhile)
    rt = _runtime(tmp_path, "workers", f"sqlite:///{tmp_path}/workers.db", eoffice_env, workers=0, mappings=mappings)
    monkeypatch.setattr(mappingset, "load_yaml", real_load_yaml)
    here = _runtime(tmp_path, "here", f"sqlite:///{tmp_path}/here.db", eoffice_env, workers=0)
    preparer = ProcessPreparer(1)
    try:
        held = rt.mappings.current
        _sync(dataclasses.replace(rt, sync=_engine(rt, preparer)))
        in_process = SyncEngine(engine=here.db, valuer=lambda: held, metrics=here.metrics)  # the same set, here
        _sync(dataclasses.replace(here, sync=in_process))
        assert _stored(rt.db) == _stored(here.db)
    finally:
        preparer.close()
        here.close()
        rt.close()


def test_no_credential_reaches_a_worker_through_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipes carry no credentials, but every worker inherited the engine's whole environment: the sources'
    ``${ENV}`` secrets, the store's URL with its password, the metrics token."""
    monkeypatch.setenv("EOFFICE_PASSWORD", "secret-eoffice-password")
    monkeypatch.setenv("KPIGW_DATABASE_URL", "postgresql://kpigw:secret-db-password@db/kpigw")
    preparer = ProcessPreparer(1)
    try:
        lease = preparer.lease()
        assert lease is not None
        (pid,) = preparer.worker_pids()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        lease.release()
        assert b"secret-eoffice-password" not in environ
        assert b"secret-db-password" not in environ
    finally:
        preparer.close()


def test_workers_that_die_at_start_are_not_started_again_for_every_page(
    tmp_path: Path, eoffice_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Review note of session 4, left then.) A worker that cannot start, here one that exits at once, was
    started again at every page's turn: a new interpreter per page. Now three deaths in a row suspend the pool;
    every page is still prepared, by the engine, and the store is the same."""
    from gateway.sync import prepare

    reference = _runtime(tmp_path, "ref", f"sqlite:///{tmp_path}/ref.db", eoffice_env, workers=0)
    rt = _runtime(tmp_path, "dying", f"sqlite:///{tmp_path}/dying.db", eoffice_env, workers=0)
    monkeypatch.setattr(prepare, "_BOOT", "import sys; sys.exit(3)")
    started: list[int] = []
    plain_init = prepare._Worker.__init__

    def counted(self: Any) -> None:
        plain_init(self)
        started.append(self.process.pid)

    monkeypatch.setattr(prepare._Worker, "__init__", counted)
    preparer = ProcessPreparer(1)
    try:
        _sync(reference, reference.connector("eoffice"))
        _sync(dataclasses.replace(rt, sync=_engine(rt, preparer)), rt.connector("eoffice"))
        pages = _prepared(rt, "engine")
        assert pages > ProcessPreparer.MAX_DEATHS + 2  # enough pages to tell "per page" from "a few"
        assert _prepared(rt, "worker") == 0
        assert len(started) == ProcessPreparer.MAX_DEATHS
        assert preparer.suspended() is not None and preparer.lease() is None
        assert _stored(rt.db) == _stored(reference.db)
        monkeypatch.setattr(preparer, "_suspended_until", 0.0)  # the suspension over: workers are tried again
        lease = preparer.lease()
        assert lease is not None and len(started) == ProcessPreparer.MAX_DEATHS + 1
        lease.release()
    finally:
        preparer.close()
        reference.close()
        rt.close()


def _one_page() -> tuple[PackedRecipe, Any, list[rec_store.ArchivedRecord]]:
    mappings = load_mappings(ROOT / "mappings")
    recipe = NormalizerRecipe(stream_normalizer, ({"docs": _normalize_config()}, "ioffice"), json_payloads=True)
    records = [SourceRecord("rest", "docs", "r1", {"id": 1, "agency": "SKHCN", "unit": "VP", "status": "done",
                                                   "subject": "Văn bản"})]  # fmt: skip
    return PackedRecipe.pack(recipe), mappings, rec_store.encode_records(records)


def _lease_with_a_dead_worker(preparer: ProcessPreparer) -> Lease:
    """A lease of ``preparer``'s one worker, killed (not yet seen dead by the lease)."""
    lease = preparer.lease()
    assert lease is not None
    lease.workers[0].process.kill()
    lease.workers[0].process.wait(timeout=10)
    return lease


def test_a_worker_that_cannot_be_started_again_counts_towards_the_suspension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dead worker replaced at its turn by one whose start fails (Popen raising: no processes, no memory, no
    descriptors left) was not counted: the failure marked the old worker dead again, already dead, so no death was
    told and every later page tried to start an interpreter again, for ever. Now a failed start counts as a death
    and the suspension stops the attempts."""
    from gateway.sync import prepare

    recipe, mappings, archived = _one_page()
    preparer = ProcessPreparer(1)
    try:
        lease = _lease_with_a_dead_worker(preparer)
        ticket = lease.submit(recipe, mappings.root, mappings.content_digest, archived)
        lease.resolve(ticket, lambda: prepare_records(archived, normalize=lambda r: [], valuer=mappings))
        assert lease.workers[0].dead
        attempts: list[int] = []

        def no_process(*args: Any, **kwargs: Any) -> Any:
            attempts.append(1)
            raise OSError(11, "Resource temporarily unavailable")

        monkeypatch.setattr(prepare.subprocess, "Popen", no_process)
        for _ in range(10):
            ticket = lease.submit(recipe, mappings.root, mappings.content_digest, archived)
            assert ticket.worker is None
            lease.resolve(ticket, PreparedPage)
        assert preparer.suspended() is not None
        assert len(attempts) == ProcessPreparer.MAX_DEATHS - 1
        lease.release()
    finally:
        preparer.close()


def test_a_suspension_is_told_once_not_once_per_second_left(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A lease taken before the suspension gives its dead worker's pages to the engine with the suspension as the
    reason; the reason carried the seconds left, so warn_once told it again at every new second (and filled its
    set of reasons, which then forgot the others): up to 300 warnings for what the commit said is told once."""
    from gateway.sync import prepare

    recipe, mappings, archived = _one_page()
    preparer = ProcessPreparer(1)
    try:
        lease = _lease_with_a_dead_worker(preparer)
        for _ in range(ProcessPreparer.MAX_DEATHS):
            preparer.worker_died()
        assert preparer.suspended() is not None
        ticket = lease.submit(recipe, mappings.root, mappings.content_digest, archived)
        lease.resolve(ticket, PreparedPage)  # the worker's death seen
        now = [time.monotonic()]
        monkeypatch.setattr(prepare.time, "monotonic", lambda: now[0])
        caplog.clear()
        with caplog.at_level("WARNING", logger="kpigw.sync"):
            for _ in range(20):
                now[0] += 1.5
                ticket = lease.submit(recipe, mappings.root, mappings.content_digest, archived)
                assert ticket.worker is None
                lease.resolve(ticket, PreparedPage)
        told = [r for r in caplog.records if "instead of a worker" in r.getMessage()]
        assert len(told) <= 1
        lease.release()
    finally:
        preparer.close()


def test_a_page_with_values_that_are_not_plain_json_crosses_pickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Review of session 5.) Records of a connector that says its payloads are plain JSON cross as their archived
    JSON. Since the archive keeps ``str()`` of a value JSON cannot hold (a Decimal, a datetime), such a record would
    reach the worker as text while the engine's normalize sees the object; that page crosses pickled instead, and
    the worker prepares exactly what the engine does."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from gateway.sync import prepare

    mappings = load_mappings(ROOT / "mappings")
    recipe = NormalizerRecipe(stream_normalizer, ({"docs": _normalize_config()}, "ioffice"), json_payloads=True)

    def record(i: int, extra: Any) -> SourceRecord:
        return SourceRecord("rest", "docs", f"r{i}", {"id": i, "agency": "SKHCN", "unit": "VP", "status": "done",
                                                      "subject": f"Văn bản {i}", "extra": extra})  # fmt: skip

    plain = rec_store.encode_records([record(1, 1.5)])
    odd = rec_store.encode_records([record(2, Decimal("1.50")), record(3, datetime(2026, 1, 2, tzinfo=UTC))])
    assert plain[0].plain_json and not any(a.plain_json for a in odd)
    assert odd[0].payload_json.endswith('"extra":"1.50"}')  # archived as its text, as before
    sent: list[Any] = []
    dumps = prepare.pickle.dumps

    def spy(obj: Any, *args: Any, **kwargs: Any) -> bytes:
        if isinstance(obj, prepare._Job):
            sent.append(obj)
        return dumps(obj, *args, **kwargs)

    monkeypatch.setattr(prepare.pickle, "dumps", spy)
    preparer = ProcessPreparer(1)
    try:
        lease = preparer.lease()
        assert lease is not None and mappings.root is not None and mappings.content_digest is not None
        for page in (plain, odd):
            ticket = lease.submit(PackedRecipe.pack(recipe), mappings.root, mappings.content_digest, page)
            there, by_worker = lease.resolve(ticket, lambda: pytest.fail("the worker declined the page"))
            here = prepare_records(page, normalize=recipe.build(*recipe.args), valuer=mappings)
            assert by_worker and there.item_rows == here.item_rows
        lease.release()
    finally:
        preparer.close()
    assert [bool(job.as_json) for job in sent] == [True, False]
    assert [a.record.payload["extra"] for a in sent[1].archived] == [Decimal("1.50"), datetime(2026, 1, 2, tzinfo=UTC)]


def test_workers_that_cannot_start_at_lease_suspend_the_pool_and_declines_reset_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(Review notes of session 5.) A worker that does not even start when a stream run leases the pool counts as
    a death, so a machine that cannot start one stops trying after three runs; and an answer from a live worker,
    even one declining its page, ends a run of deaths."""
    from gateway.sync import prepare

    attempts: list[int] = []

    def cannot_start(self: Any) -> None:
        attempts.append(1)
        raise OSError("no processes left")

    preparer = ProcessPreparer(1)
    monkeypatch.setattr(prepare._Worker, "__init__", cannot_start)
    for _ in range(ProcessPreparer.MAX_DEATHS + 3):
        assert preparer.lease() is None
    assert len(attempts) == ProcessPreparer.MAX_DEATHS and preparer.suspended() is not None

    monkeypatch.undo()
    recipe, mappings, page = _one_page()
    alive = ProcessPreparer(1)
    try:
        lease = alive.lease()
        assert lease is not None
        for _ in range(ProcessPreparer.MAX_DEATHS - 1):
            alive.worker_died()
        ticket = lease.submit(recipe, mappings.root, "not-the-files-digest", page)
        _, by_worker = lease.resolve(ticket, lambda: prepare_records(page, normalize=lambda r: [], valuer=mappings))
        assert not by_worker  # declined: the mapping files are not the ones named
        alive.worker_died()
        assert alive.suspended() is None  # the decline came from a live worker: the run of deaths had ended
        lease.release()
    finally:
        alive.close()
