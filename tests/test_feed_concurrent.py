"""The change feed under concurrent writers (SQLite and PostgreSQL): a follower polling while several
writers commit sees every change exactly once, in commit order, and its mirror equals the store; keyset
pages of the facts list have no gap and no duplicate while facts change (hypothesis)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.api.facts import FactFilter, list_changes, list_facts
from gateway.runtime import Runtime
from gateway.security import Scope
from gateway.store.facts import FACT, write_facts
from tests.api_support import NOW, fact, fresh_pg_database, make_runtime, put

ALL = Scope(None)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def runtime(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    tmp: Path = tmp_path_factory.mktemp("feed")
    if request.param == "sqlite":
        rt = make_runtime(f"sqlite:///{tmp / 'feed.db'}", tmp)
        yield rt
        rt.close()
        return
    with fresh_pg_database() as url:
        rt = make_runtime(url, tmp)
        yield rt
        rt.close()


def _follow(rt: Runtime, token: str | None, mirror: dict[str, dict[str, object]], seqs: list[int]) -> str:
    while True:
        with rt.db.connect() as conn:
            items, token, more = list_changes(conn, scope=ALL, after=token, limit=50)
        for change in items:
            seqs.append(change["seq"])
            mirror[change["fact_key"]] = orjson.loads(orjson.dumps(change["fact"]))  # a Fragment: JSON as stored
        if not more:
            return token


def test_follower_sees_every_change_once_in_commit_order(runtime: Runtime) -> None:
    with runtime.db.connect() as conn:
        _, start, _ = list_changes(conn, scope=ALL, after=None, limit=1000)
    mirror: dict[str, dict[str, object]] = {}
    seqs: list[int] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for rnd in range(12):
                # inserts, then updates of the same records, then some retractions (origins that yield nothing)
                batch = [fact(1000 * w + n, agency=f"W{w}", units=str(1 + rnd), record=f"w{w}-{n}")
                         for n in range(8) if not (rnd % 4 == 3 and n % 3 == 0)]  # fmt: skip
                with runtime.db.begin() as conn:
                    write_facts(conn, origins=[("eoffice", "docs", f"w{w}-{n}") for n in range(8)], facts=batch,
                                now=NOW)  # fmt: skip
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()

    def stop_when_done() -> None:
        for t in threads:
            t.join()
        done.set()

    threading.Thread(target=stop_when_done).start()
    token = start
    while not done.is_set():
        token = _follow(runtime, token, mirror, seqs)
    token = _follow(runtime, token, mirror, seqs)
    assert not errors, errors
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap: commit order is seq order
    with runtime.db.connect() as conn:
        rows = {r.fact_key: r for r in conn.execute(select(FACT).where(FACT.c.agency.like("W%")))}
    assert set(mirror) == set(rows)
    for key, row in rows.items():
        assert mirror[key]["version"] == row.version and mirror[key]["state"] == row.state


EDITS = st.lists(st.tuples(st.integers(0, 39), st.sampled_from(["update", "retract", "insert"])), max_size=12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=st.integers(1, 9), edits=EDITS)
def test_pages_have_no_gap_and_no_duplicate_while_facts_change(runtime: Runtime, page: int,
                                                                edits: list[tuple[int, str]]) -> None:  # fmt: skip
    agency = f"H{abs(hash((page, tuple(edits)))) % 10**8}"
    put(runtime, [fact(n, agency=agency, record=f"{agency}-{n}") for n in range(40)])
    with runtime.db.connect() as conn:
        before = {f["id"] for f in list_facts(conn, scope=ALL, filters=FactFilter(agency=agency, state=None),
                                              limit=1000, after=None)[0]}  # fmt: skip
    seen: list[int] = []
    token: str | None = None
    step = 0
    while True:
        with runtime.db.connect() as conn:
            items, token = list_facts(conn, scope=ALL, filters=FactFilter(agency=agency, state=None), limit=page,
                                      after=token)  # fmt: skip
        seen += [f["id"] for f in items]
        if step < len(edits):  # the store changes between pages
            n, op = edits[step]
            record = f"{agency}-{n}"
            if op == "update":
                put(runtime, [fact(n, agency=agency, record=record, units="7")])
            elif op == "retract":
                with runtime.db.begin() as conn:
                    write_facts(conn, origins=[("eoffice", "docs", record)], facts=[], now=NOW)
            else:
                put(runtime, [fact(100 + n, agency=agency, record=f"{agency}-new{n}")])
            step += 1
        if token is None:
            break
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    assert before <= set(seen)  # every fact that existed when paging began is seen exactly once
