"""Pages prepared in worker processes (gateway/sync/prepare.py) are stored exactly as the pages the engine prepares
itself, and nothing that goes wrong in a worker costs a page: a worker killed mid-sync, mapping files edited
on disk before a reload, a connector without a normalizer recipe, a normalizer that raises."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from gateway.connector import NormalizerRecipe, Page
from gateway.mapping.people import PeopleDirectory
from gateway.metrics import Metrics
from gateway.retry import RetryPolicy
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.standins.edoc_hub import SANDBOX_TOKEN, EdocHubState, create_edoc_hub_app
from gateway.standins.eoffice import EOfficeState, create_eoffice_app
from gateway.standins.server import serve_in_thread
from gateway.sync.engine import SyncEngine
from gateway.sync.prepare import ProcessPreparer
from gateway.types import SourceRecord, WorkItem
from tests.conftest import ROOT, empty_store, write_eoffice_source
from tests.contract.support import source_file
from tests.spine_support import metric, rows


def _runtime(tmp_path: Path, name: str, store: str, env: dict[str, str], *, workers: int,
             mappings: Path = ROOT / "mappings", page_size: int = 40) -> Runtime:  # fmt: skip
    sources = tmp_path / f"sources-{name}"
    write_eoffice_source(sources, page_size=page_size)
    settings = Settings(database_url=store, sources_dir=sources, mappings_dir=mappings, scheduler=False,
                        prepare_workers=workers)  # fmt: skip
    return build_runtime(settings, retry=RetryPolicy.instant(), metrics=Metrics(), env=env)


def _sync(rt: Runtime, connector: Any = None) -> Any:
    connector = connector or rt.connector("eoffice")
    try:
        return rt.sync.run(connector)
    finally:
        connector.close()


def _stored(db: Engine) -> dict[str, Any]:
    """Everything a sync stores that does not depend on the clock: raw archive, work items, facts, change feed,
    quarantine."""

    def feed_row(r: dict[str, Any]) -> tuple[Any, ...]:
        snap = orjson.loads(r["snapshot"])
        snap.pop("updated_at", None)
        return r["seq"], r["fact_id"], r["fact_key"], r["op"], r["version"], snap

    return {
        "raw": rows(db, "SELECT source, stream, record_key, content_hash, payload FROM raw_record ORDER BY id"),
        "items": rows(db, "SELECT source, stream, record_key, item_key, kind, agency, unit, content_hash, body, "
                          "match_status, problems FROM work_item ORDER BY source, stream, record_key"),
        "facts": rows(db, "SELECT id, fact_key, value_hash, state, version, change_seq, lineage FROM fact ORDER BY id"),
        "feed": [feed_row(r) for r in rows(db, "SELECT * FROM fact_change ORDER BY seq")],
        "quarantine": rows(db, "SELECT source, stream, record_key, content_hash, stage, error_kind, reason, status "
                               "FROM quarantine ORDER BY source, stream, record_key"),
    }  # fmt: skip


def _prepared(rt: Runtime, where: str) -> float:
    return metric(rt.metrics.registry, "kpigw_sync_pages_prepared_total", source="eoffice", where=where)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_workers_store_exactly_what_the_engine_stores(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, eoffice_state: EOfficeState,
    eoffice_env: dict[str, str],
) -> None:  # fmt: skip
    if backend == "postgresql":
        here = _runtime(tmp_path, "here", empty_store("postgresql", request, tmp_path), eoffice_env, workers=0)
    else:
        here = _runtime(tmp_path, "here", f"sqlite:///{tmp_path}/here.db", eoffice_env, workers=0)
    workers = _runtime(tmp_path, "workers", f"sqlite:///{tmp_path}/workers.db", eoffice_env, workers=1)
    try:
        for _ in range(2):  # a backfill, then an incremental sync after the source changed
            for rt in (here, workers):
                assert _sync(rt).outcome in ("success", "partial")
            eoffice_state.advance(days=1)  # new documents, late completions, moved deadlines
        assert _stored(workers.db) == _stored(here.db)
        assert _prepared(workers, "worker") > 2 and _prepared(workers, "engine") == 0
        assert _prepared(here, "engine") > 2 and _prepared(here, "worker") == 0
    finally:
        here.close()
        workers.close()


def test_pages_larger_than_a_pipe_buffer_with_two_in_flight(tmp_path: Path) -> None:
    """Pages of 500 records: each job and each answer is far larger than a pipe's buffer, and a worker has two
    pages at once (engine.PAGES_PER_WORKER), so the engine writes a job while the worker writes an answer. Without
    the reader thread of each worker, that was a deadlock (found by the benchmark)."""
    state = EOfficeState(bulk_records=2_400, bulk_span_days=60, days=1)
    with serve_in_thread(create_eoffice_app(state)) as server:
        env = {"EOFFICE_URL": server.url, "EOFFICE_USER": state.username, "EOFFICE_PASSWORD": state.password}
        here = _runtime(tmp_path, "here", f"sqlite:///{tmp_path}/here.db", env, workers=0, page_size=500)
        workers = _runtime(tmp_path, "workers", f"sqlite:///{tmp_path}/workers.db", env, workers=1, page_size=500)
        try:
            for rt in (here, workers):
                assert _sync(rt).outcome in ("success", "partial")
            assert _stored(workers.db) == _stored(here.db)
            assert _prepared(workers, "worker") >= 5 and _prepared(workers, "engine") == 0
        finally:
            here.close()
            workers.close()


def test_mapping_files_edited_before_a_reload_are_not_used_by_workers(
    tmp_path: Path, eoffice_state: EOfficeState, eoffice_env: dict[str, str]
) -> None:
    """A page is valued with the mapping set the engine holds. A worker loads the mappings from their directory;
    when the files there changed and the engine has not reloaded, the versions differ and the engine prepares
    the page itself, with its own set."""
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    reference = _runtime(tmp_path, "ref", f"sqlite:///{tmp_path}/ref.db", eoffice_env, workers=0)
    rt = _runtime(tmp_path, "edited", f"sqlite:///{tmp_path}/edited.db", eoffice_env, workers=1, mappings=mappings)
    try:
        rules = mappings / "rules" / "SKHCN.yaml"
        edited = rules.read_text(encoding="utf-8").replace("      lead: 1\n", "      lead: 2\n")  # twice the units
        assert edited != rules.read_text(encoding="utf-8")
        rules.write_text(edited, encoding="utf-8")
        _sync(reference)
        _sync(rt)
        assert _stored(rt.db) == _stored(reference.db)
        assert _prepared(rt, "worker") == 0 and _prepared(rt, "engine") > 2
        rt.mappings.reload()  # now the workers load the same version as the engine
        eoffice_state.advance(days=1)
        _sync(rt)
        assert _prepared(rt, "worker") > 0
    finally:
        reference.close()
        rt.close()


class _Wrapped:
    """The e-office connector, with hooks: a callback after each page is read, and optionally no recipe."""

    def __init__(self, inner: Any, *, after_page: Any = None, recipe: bool = True) -> None:
        self._inner, self._after_page, self.name = inner, after_page, inner.name
        if recipe:
            self.normalizer_recipe = inner.normalizer_recipe

    def streams(self) -> Sequence[str]:
        return list(self._inner.streams())

    def check(self) -> Any:
        return self._inner.check()

    def read(self, stream: str, cursor: str | None) -> Iterator[Page]:
        for n, page in enumerate(self._inner.read(stream, cursor)):
            yield page
            if self._after_page is not None:
                self._after_page(n)

    def normalize(self, record: SourceRecord) -> Sequence[WorkItem]:
        return list(self._inner.normalize(record))

    def close(self) -> None:
        self._inner.close()


def _engine(rt: Runtime, preparer: ProcessPreparer | None) -> SyncEngine:
    return SyncEngine(engine=rt.db, valuer=lambda: rt.mappings.current, metrics=rt.metrics, preparer=preparer)


def _wait_gone(pid: int, seconds: float = 10.0) -> None:
    """Until ``pid`` has exited (a zombie not reaped yet by its parent counts as exited)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still there")


def test_a_worker_killed_mid_sync_costs_no_page(
    tmp_path: Path, eoffice_state: EOfficeState, eoffice_env: dict[str, str]
) -> None:
    reference = _runtime(tmp_path, "ref", f"sqlite:///{tmp_path}/ref.db", eoffice_env, workers=0)
    rt = _runtime(tmp_path, "killed", f"sqlite:///{tmp_path}/killed.db", eoffice_env, workers=0)
    preparer = ProcessPreparer(1)  # its own pool: killing it must not disturb the process's shared one
    killed: list[int] = []

    def kill_once(n: int) -> None:
        if n == 1 and not killed:
            for pid in preparer.worker_pids():
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid)
                killed.append(pid)

    try:
        _sync(reference)
        engine = _engine(rt, preparer)
        connector = _Wrapped(rt.connector("eoffice"), after_page=kill_once)
        report = _sync(dataclasses.replace(rt, sync=engine), connector)
        assert killed, "the test never killed a worker"
        assert report.outcome == reference_outcome(reference)
        assert _stored(rt.db) == _stored(reference.db)
        assert _prepared(rt, "engine") >= 1  # the pages in flight when the worker died
        assert _prepared(rt, "worker") >= 1
        assert set(preparer.worker_pids()).isdisjoint(killed)  # a new pool took the later pages
    finally:
        preparer.close()
        reference.close()
        rt.close()


def reference_outcome(rt: Runtime) -> str:
    return str(rows(rt.db, "SELECT outcome FROM sync_run ORDER BY id DESC LIMIT 1")[0]["outcome"])


def test_a_connector_without_a_recipe_is_prepared_by_the_engine(
    tmp_path: Path, eoffice_env: dict[str, str]
) -> None:
    reference = _runtime(tmp_path, "ref", f"sqlite:///{tmp_path}/ref.db", eoffice_env, workers=0)
    rt = _runtime(tmp_path, "plain", f"sqlite:///{tmp_path}/plain.db", eoffice_env, workers=1)
    try:
        _sync(reference)
        _sync(rt, _Wrapped(rt.connector("eoffice"), recipe=False))
        assert _stored(rt.db) == _stored(reference.db)
        assert _prepared(rt, "worker") == 0 and _prepared(rt, "engine") > 2
    finally:
        reference.close()
        rt.close()


class _NormalizerBug(Exception):
    pass


def _buggy_normalizer(inner: NormalizerRecipe) -> Any:
    """A recipe's build (module level, so it travels by name): the real normalize, but a bug on one record."""
    normalize = inner.build(*inner.args)

    def buggy(record: SourceRecord) -> Sequence[WorkItem]:
        if record.key.endswith("7"):
            raise _NormalizerBug(f"unexpected shape in {record.key}")
        return normalize(record)

    return buggy


@pytest.mark.parametrize("workers", [0, 1])
def test_a_normalizer_bug_surfaces_as_it_does_without_workers(
    workers: int, tmp_path: Path, eoffice_env: dict[str, str]
) -> None:
    """Not a RecordError (which quarantines the record): a bug. A worker cannot prepare the page; the engine then
    prepares it itself and meets the bug there, so the caller sees the same exception either way."""
    rt = _runtime(tmp_path, "bug", f"sqlite:///{tmp_path}/bug.db", eoffice_env, workers=workers)
    inner = rt.connector("eoffice")
    recipe = NormalizerRecipe(_buggy_normalizer, (inner.normalizer_recipe(),))  # type: ignore[attr-defined]
    buggy = _buggy_normalizer(inner.normalizer_recipe())  # type: ignore[attr-defined]
    connector = _Wrapped(inner)
    connector.normalizer_recipe = lambda: recipe
    connector.normalize = buggy  # type: ignore[method-assign]
    try:
        with pytest.raises(_NormalizerBug, match="unexpected shape"):
            _sync(rt, connector)
    finally:
        rt.close()


def test_soap_pages_prepared_by_workers_are_stored_as_the_engine_stores_them(tmp_path: Path) -> None:
    """The SOAP connector's recipe (edXML field maps, records crossing pickled, not as JSON) against its own
    normalize: the eDoc hub stand-in synced with and without a worker."""
    state = EdocHubState(days=3, bulk_records=60)
    with serve_in_thread(create_edoc_hub_app(state)) as server:
        env = {"EDOC_HUB_URL": server.url, "EDOC_HUB_TOKEN": SANDBOX_TOKEN}
        def small_pages(data: dict[str, Any]) -> None:
            data["streams"]["documents"]["paginator"]["size"] = 20

        built = []
        for workers in (0, 1):
            sources = tmp_path / f"sources-{workers}"
            source_file(sources, "edoc-hub.yaml", small_pages)
            settings = Settings(database_url=f"sqlite:///{tmp_path}/soap-{workers}.db", sources_dir=sources,
                                mappings_dir=ROOT / "mappings", scheduler=False, prepare_workers=workers)  # fmt: skip
            built.append(build_runtime(settings, retry=RetryPolicy.instant(), metrics=Metrics(), env=env))
        here, there = built
        try:
            for rt in built:
                connector = rt.connector("edoc-hub")
                try:
                    assert rt.sync.run(connector).outcome in ("success", "partial")
                finally:
                    connector.close()
            assert _stored(there.db) == _stored(here.db)
            assert metric(there.metrics.registry, "kpigw_sync_pages_prepared_total", source="edoc-hub",
                          where="worker") > 1  # fmt: skip
        finally:
            for rt in built:
                rt.close()


def test_bundled_connectors_recipes_carry_no_credential_and_build(tmp_path: Path) -> None:
    """Each bundled connector's recipe pickles without its clients or credentials and builds a normalize in a
    fresh unpickling (what each does is compared whole for REST and SOAP in the tests above)."""
    env = {"EOFFICE_URL": "http://127.0.0.1:9", "EOFFICE_PASSWORD": "secret-eoffice", "EDOC_HUB_URL": "http://127.0.0.1:9",
           "EDOC_HUB_TOKEN": "secret-hub", "LGSP_URL": "http://127.0.0.1:9", "LGSP_CLIENT_SECRET": "secret-lgsp",
           "VXP_URL": "https://127.0.0.1:9", "VXP_SECRET": "secret-vxp"}  # fmt: skip
    settings = Settings(database_url=f"sqlite:///{tmp_path}/x.db", sources_dir=ROOT / "sources",
                        mappings_dir=ROOT / "mappings", scheduler=False, prepare_workers=0)  # fmt: skip
    rt = build_runtime(settings, metrics=Metrics(), env=env)
    try:
        for name in rt.sources:
            connector = rt.connector(name)
            recipe = connector.normalizer_recipe()  # type: ignore[attr-defined]
            blob = pickle.dumps(recipe)
            for secret in env.values():
                if secret.startswith("secret"):
                    assert secret.encode() not in blob, f"{name}: the recipe carries a credential"
            assert callable(pickle.loads(blob).build(*recipe.args))
            connector.close()
    finally:
        rt.close()


_ORPHAN_PROBE = """
import os, sys, time
from gateway.sync.prepare import ProcessPreparer
if __name__ == "__main__":
    preparer = ProcessPreparer(2)
    lease = preparer.lease()  # the workers start on first use
    print(*preparer.worker_pids(), flush=True)
    time.sleep(60)
"""


def test_workers_exit_when_the_engine_process_is_killed(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(_ORPHAN_PROBE, encoding="utf-8")
    with subprocess.Popen([sys.executable, str(probe)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                          text=True) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            workers = [int(pid) for pid in proc.stdout.readline().split()]
            assert workers
        finally:
            proc.send_signal(signal.SIGKILL)
    for pid in workers:
        _wait_gone(pid)


def test_a_mapping_set_with_another_people_directory_is_prepared_by_the_engine(
    tmp_path: Path, eoffice_env: dict[str, str]
) -> None:
    """``MappingSet.with_directory`` keeps the root and the short version but resolves people elsewhere: a worker
    loading the directory would resolve them from the file, so such a set carries no content digest and its
    pages stay in the engine's process."""
    rt = _runtime(tmp_path, "people", f"sqlite:///{tmp_path}/people.db", eoffice_env, workers=1)
    try:
        loaded = rt.mappings.current
        assert loaded.content_digest is not None and len(loaded.content_digest) == len("m-") + 64
        nobody = loaded.with_directory(PeopleDirectory.empty())
        assert nobody.content_digest is None
        engine = SyncEngine(engine=rt.db, valuer=lambda: nobody, metrics=rt.metrics, preparer=rt.sync.preparer)
        _sync(dataclasses.replace(rt, sync=engine))
        assert _prepared(rt, "worker") == 0 and _prepared(rt, "engine") > 2
        assert rows(rt.db, "SELECT count(*) AS n FROM fact")[0]["n"] == 0  # nobody resolved: no fact
    finally:
        rt.close()
