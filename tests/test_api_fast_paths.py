"""The facts API's fast paths answer exactly what the plain paths answered (no timing here).

- a fact's current public JSON *is* the snapshot its current change row stored (``fact.change_seq ==
  fact_change.seq``), after inserts, updates, retractions and a closed period's correction: this is what lets
  ``/v1/facts`` splice stored snapshots instead of rebuilding each fact;
- ``/v1/facts`` and ``/v1/facts/changes`` return byte for byte the body the dict-building code returned;
- hot reads are still audited (who, filter, rows), one row per request;
- the API-key cache: a hit never accepts a wrong secret or an expired key; a revocation made elsewhere takes
  effect within the TTL, one made through this process's admin API at once;
- the response cache: a hit is byte-identical, audited, never shared across scopes, and any fact change or
  period closure makes every key new; it can be turned off; it stays within its byte bound;
- the plain ASGI middleware still labels every response (request id, sandbox) and counts by route template.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import event, select

from gateway.api import create_app
from gateway.api.audit import AUDIT
from gateway.api.cache import Cached, ResponseCache
from gateway.api.facts import encode_token
from gateway.runtime import Runtime
from gateway.security import Authenticator, Unauthorized
from gateway.standins.server import serve_in_thread
from gateway.store import clients
from gateway.store.facts import CHANGE, FACT, snapshot, write_facts
from gateway.store.periods import close_period
from tests.api_support import NOW, fact, make_runtime, new_key, put, serve


def _history(runtime: Runtime) -> None:
    """Inserts, value updates, a retraction, a re-activation, a second agency and a closed period's correction."""
    put(runtime, [fact(n, units=str(1 + n % 3)) for n in range(12)])
    put(runtime, [fact(n, agency="SNV", unit="SNV.TCCB", period="2026-02") for n in range(12, 16)])
    later = NOW + timedelta(hours=1, microseconds=7)
    put(runtime, [fact(n, units="4", on_time=False, delays=2) for n in range(3)], now=later)  # updates
    with runtime.db.begin() as conn:  # the origins of facts 5 and 6 now produce nothing: retracted
        write_facts(conn, origins=[("eoffice", "docs", "SKHCN-5"), ("eoffice", "docs", "SKHCN-6")], facts=[],
                    now=later)  # fmt: skip
    put(runtime, [fact(5, units="2")], now=later + timedelta(minutes=1))  # back again
    with runtime.db.begin() as conn:
        close_period(conn, agency="SNV", period="2026-02", by="t", policy={"late_products": "deduct"}, now=later)
    put(runtime, [fact(12, agency="SNV", unit="SNV.TCCB", period="2026-02", units="9")], now=later)  # correction


@pytest.fixture
def runtime(store_url: str, tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(store_url, tmp_path, rate_limit_burst=500)
    _history(rt)
    yield rt
    rt.close()


def test_every_facts_current_snapshot_is_its_current_change_row(runtime: Runtime) -> None:
    with runtime.db.connect() as conn:
        facts = [r._asdict() for r in conn.execute(select(FACT).order_by(FACT.c.id))]
        stored = {r.seq: r.snapshot for r in conn.execute(select(CHANGE.c.seq, CHANGE.c.snapshot))}
    assert len(facts) == 16 and {f["state"] for f in facts} == {"active", "retracted"}
    assert any(f["version"] > 2 for f in facts)  # updated, retracted and re-activated
    for row in facts:
        assert stored[row["change_seq"]] == orjson.dumps(snapshot(row)).decode(), row["fact_key"]


def _plain_facts_body(runtime: Runtime, where: Any, limit: int) -> bytes:
    """What ``/v1/facts`` answered before it spliced snapshots: each row rebuilt with ``snapshot()``."""
    with runtime.db.connect() as conn:
        rows = [r._asdict() for r in conn.execute(select(FACT).where(where).order_by(FACT.c.id).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    token = encode_token("id", rows[-1]["id"]) if more and rows else None
    return orjson.dumps({"items": [snapshot(r) for r in rows], "next": token})


def _plain_changes_body(runtime: Runtime, after: int, limit: int) -> bytes:
    """What ``/v1/facts/changes`` answered before its tuple-based build."""
    with runtime.db.connect() as conn:
        rows = list(conn.execute(select(CHANGE).where(CHANGE.c.seq > after).order_by(CHANGE.c.seq).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{"seq": r.seq, "op": r.op, "fact_id": r.fact_id, "fact_key": r.fact_key, "agency": r.agency,
              "period": r.period, "version": r.version, "committed_at": r.committed_at.isoformat(),
              "fact": orjson.loads(r.snapshot)} for r in rows]  # fmt: skip
    return orjson.dumps({"items": items, "next": encode_token("seq", rows[-1].seq if rows else after),
                         "has_more": more})  # fmt: skip


def test_fact_pages_and_feed_are_byte_identical_to_the_plain_build(runtime: Runtime) -> None:
    key = new_key(runtime, "province", ["*"])
    with serve(runtime) as api:
        page = api.get("/v1/facts", key, limit=5)
        assert page.content == _plain_facts_body(runtime, FACT.c.state == "active", 5)
        assert page.headers["content-type"] == "application/json"
        assert api.get("/v1/facts", key, state="any", limit=100).content == _plain_facts_body(
            runtime, FACT.c.id > 0, 100)  # fmt: skip
        snv = api.get("/v1/facts", key, agency="SNV", period="2026-02")
        assert snv.content == _plain_facts_body(runtime, (FACT.c.agency == "SNV") & (FACT.c.state == "active"), 100)
        for after, limit in ((0, 7), (7, 500), (0, 1000), (10_000, 3)):
            got = api.get("/v1/facts/changes", key, after=encode_token("seq", after), limit=limit)
            assert got.content == _plain_changes_body(runtime, after, limit), (after, limit)


def test_hot_reads_are_audited_one_row_each(runtime: Runtime) -> None:
    key = new_key(runtime, "auditee", ["SKHCN"])
    with serve(runtime) as api:
        assert api.get("/v1/facts", key, period="2026-01", limit=3).status_code == 200
        assert api.get("/v1/facts/changes", key, limit=4).status_code == 200
        assert api.get("/v1/summaries", key, period="2026-01", group_by="person").status_code == 200
        assert api.get("/v1/facts", key, agency="SNV").status_code == 403  # refused before any read
    with runtime.db.connect() as conn:
        rows = list(conn.execute(select(AUDIT).where(AUDIT.c.actor == "auditee").order_by(AUDIT.c.id)))
    assert [r.action for r in rows] == ["read_facts", "read_changes", "read_summaries"]
    details = [orjson.loads(r.detail) for r in rows]
    assert details[0]["filter"] == {"period": "2026-01", "state": "active"} and details[0]["rows"] == 3
    assert details[1]["rows"] == 4 and details[1]["scope"] == ["SKHCN"]
    assert details[2]["filter"]["group_by"] == "person" and details[2]["rows"] == 4  # persons P0..P3


class _Clocks:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def sqlite_runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(f"sqlite:///{tmp_path / 'keys.db'}", tmp_path)
    yield rt
    rt.close()


def test_key_cache_ttl_revocation_expiry_and_wrong_secrets(sqlite_runtime: Runtime) -> None:
    rt, clocks = sqlite_runtime, _Clocks()
    auth = Authenticator(db=rt.db, key_ttl=10, monotonic=lambda: clocks.mono, clock=lambda: clocks.wall)
    with rt.db.begin() as conn:
        clients.create_client(conn, client_id="c", name="c", agencies=["SKHCN"], roles=["read_facts"],
                              rate_per_minute=None, now=clocks.wall)  # fmt: skip
        hour = clocks.wall + timedelta(hours=1)
        record, key = clients.issue_key(conn, client_id="c", now=clocks.wall, expires_at=hour)
    assert auth.authenticate_cached(authorization=None, api_key=key) is None  # nothing verified yet
    assert auth.authenticate(authorization=None, api_key=key).client_id == "c"
    hit = auth.authenticate_cached(authorization=f"Bearer {key}", api_key=None)
    assert hit is not None and hit.scope.allows("SKHCN")
    assert auth.authenticate_cached(authorization=None, api_key=key[:-1] + "x") is None  # a wrong secret: no hit
    with pytest.raises(Unauthorized):
        auth.authenticate(authorization=None, api_key=key[:-1] + "x")

    with rt.db.begin() as conn:  # revoked elsewhere (the CLI, another replica): noticed within the TTL
        clients.revoke_key(conn, client_id="c", key_id=record.key_id, now=clocks.wall)
    clocks.mono += 9.9
    assert auth.authenticate_cached(authorization=None, api_key=key) is not None
    clocks.mono += 0.2
    assert auth.authenticate_cached(authorization=None, api_key=key) is None
    with pytest.raises(Unauthorized, match="revoked"):
        auth.authenticate(authorization=None, api_key=key)

    with rt.db.begin() as conn:  # the key's own expiry is exact, cached or not
        soon = clocks.wall + timedelta(seconds=2)
        _, short = clients.issue_key(conn, client_id="c", now=clocks.wall, expires_at=soon)
    auth.authenticate(authorization=None, api_key=short)
    clocks.wall += timedelta(seconds=2)
    with pytest.raises(Unauthorized, match="expired"):
        auth.authenticate_cached(authorization=None, api_key=short)

    with rt.db.begin() as conn:
        _, third = clients.issue_key(conn, client_id="c", now=clocks.wall)
    auth.authenticate(authorization=None, api_key=third)
    auth.forget_client("c")  # what the admin API does after a change
    assert auth.authenticate_cached(authorization=None, api_key=third) is None
    assert Authenticator(db=rt.db, key_ttl=0).authenticate_cached(authorization=None, api_key=third) is None


def test_admin_revocation_is_immediate_in_this_process(sqlite_runtime: Runtime) -> None:
    admin = new_key(sqlite_runtime, "root", ["*"], ("read_facts", "admin"))
    with serve(sqlite_runtime) as api:
        body = {"id": "app", "name": "A", "agencies": ["SKHCN"], "roles": ["read_facts"]}
        made = api.http.post("/v1/admin/clients", headers={"X-API-Key": admin}, json=body)
        assert made.status_code == 201
        issued = api.http.post("/v1/admin/clients/app/keys", headers={"X-API-Key": admin}).json()
        assert api.get("/v1/facts", issued["key"]).status_code == 200  # now cached
        gone = api.http.delete(f"/v1/admin/clients/app/keys/{issued['key_id']}", headers={"X-API-Key": admin})
        assert gone.status_code == 204
        assert api.get("/v1/facts", issued["key"]).status_code == 401


def test_responses_keep_request_ids_and_route_metrics(sqlite_runtime: Runtime) -> None:
    key = new_key(sqlite_runtime, "m", ["*"])
    with serve(sqlite_runtime) as api:
        r = api.http.get("/v1/facts", headers={"X-API-Key": key, "X-Request-ID": "abc123"})
        assert r.status_code == 200 and r.headers["X-Request-ID"] == "abc123"
        assert api.get("/v1/facts", None).headers["X-Request-ID"]  # problems too
        assert api.get("/v1/facts", key, unit="x" * 5000).headers["X-Request-ID"]  # refused by RequestLimits
    sample = sqlite_runtime.metrics.registry.get_sample_value(
        "kpigw_api_requests_total", {"route": "/v1/facts", "method": "GET", "status": "200"})  # fmt: skip
    assert sample == 1.0


def test_response_cache_is_exact_per_scope_and_store_version(runtime: Runtime) -> None:
    everyone, skhcn = new_key(runtime, "all", ["*"]), new_key(runtime, "sk", ["SKHCN"])
    with serve(runtime) as api:
        first = api.get("/v1/facts", everyone, limit=500)
        again = api.get("/v1/facts", everyone, limit=500)
        assert (first.headers["X-KPIGW-Cache"], again.headers["X-KPIGW-Cache"]) == ("miss", "hit")
        assert again.content == first.content
        mine = api.get("/v1/facts", skhcn, limit=500)  # another scope: its own entry, its own rows
        assert mine.headers["X-KPIGW-Cache"] == "miss" and {f["agency"] for f in mine.json()["items"]} == {"SKHCN"}

        put(runtime, [fact(1, units="7")], now=NOW + timedelta(days=1))  # a fact changes: every key is new
        changed = api.get("/v1/facts", everyone, limit=500)
        assert changed.headers["X-KPIGW-Cache"] == "miss"
        assert changed.content == _plain_facts_body(runtime, FACT.c.state == "active", 500)
        assert next(f for f in changed.json()["items"] if f["item_key"] == "SKHCN:doc1")["units"] == "7.0000"

        query = {"period": "2026-03", "group_by": "unit"}
        put(runtime, [fact(n, period="2026-03", on_time=False, delays=1) for n in range(40, 43)],
            now=NOW + timedelta(days=2))  # fmt: skip
        before = api.get("/v1/summaries", everyone, **query)
        assert api.get("/v1/summaries", everyone, **query).headers["X-KPIGW-Cache"] == "hit"
        with runtime.db.begin() as conn:  # a closure freezes another policy: no fact changes, the key does
            close_period(conn, agency="SKHCN", period="2026-03", by="t", policy={"late_products": "exclude"},
                         now=NOW + timedelta(days=3))  # fmt: skip
        after = api.get("/v1/summaries", everyone, **query)
        assert after.headers["X-KPIGW-Cache"] == "miss"
        assert before.json()["items"][0]["units"]["timeliness"] != after.json()["items"][0]["units"]["timeliness"]
    with runtime.db.connect() as conn:
        actions = [r.action for r in conn.execute(select(AUDIT.c.action).where(AUDIT.c.actor == "all"))]
    assert actions.count("read_facts") == 3 and actions.count("read_summaries") == 3  # hits are audited too
    counted = {(route, outcome): runtime.metrics.registry.get_sample_value(
        "kpigw_api_cache_total", {"route": route, "outcome": outcome})
        for route in ("facts", "summaries") for outcome in ("hit", "miss")}  # fmt: skip
    assert counted == {("facts", "hit"): 1, ("facts", "miss"): 3, ("summaries", "hit"): 1, ("summaries", "miss"): 2}


def test_response_cache_can_be_turned_off(sqlite_runtime: Runtime) -> None:
    key = new_key(sqlite_runtime, "k", ["*"])
    with serve_in_thread(create_app(sqlite_runtime, start_scheduler=False, response_cache_bytes=0)) as server:
        r = httpx.get(server.url + "/v1/facts", headers={"X-API-Key": key})
    assert r.status_code == 200 and "X-KPIGW-Cache" not in r.headers


def test_cache_size_and_key_reuse_come_from_the_settings(sqlite_runtime: Runtime) -> None:
    sqlite_runtime.settings = sqlite_runtime.settings.model_copy(
        update={"api_response_cache_mb": 0, "api_key_cache_seconds": 0})  # fmt: skip
    key = new_key(sqlite_runtime, "k", ["*"])
    app = create_app(sqlite_runtime, start_scheduler=False)
    assert app.state.response_cache.enabled is False
    with serve_in_thread(app) as server:
        r = httpx.get(server.url + "/v1/facts", headers={"X-API-Key": key})
    assert r.status_code == 200 and "X-KPIGW-Cache" not in r.headers
    assert Authenticator.from_settings(sqlite_runtime.settings, sqlite_runtime.db).key_ttl == 0


def test_cache_evicts_least_recently_used_within_its_bound() -> None:
    cache = ResponseCache(max_bytes=800)
    for n in range(8):
        cache.put(n, Cached(b"x" * 100, 1))
    assert cache.get(0) is not None  # 0 is now the most recent
    cache.put(8, Cached(b"y" * 100, 1))
    assert cache.get(1) is None and cache.get(0) is not None and cache.get(8) is not None
    cache.put("huge", Cached(b"z" * 101, 1))  # over an eighth of the bound: never cached
    assert cache.get("huge") is None and (cache.hits, cache.misses) == (3, 2)


def test_a_lookup_racing_a_revocation_does_not_cache_the_revoked_key(
    sqlite_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup reads the key (still live), then the admin revokes it and forgets the client, then the lookup
    would cache what it read: it must not, or the revoked key would pass for ``key_ttl`` more seconds."""
    db = sqlite_runtime.db
    with db.begin() as conn:
        clients.create_client(conn, client_id="c1", name="c1", agencies=["A"], roles=["read_facts"],
                              rate_per_minute=None, now=NOW)  # fmt: skip
        record, secret = clients.issue_key(conn, client_id="c1", now=NOW)
    auth = Authenticator(db=db)
    looked_up, revoked = threading.Event(), threading.Event()
    remember = Authenticator._remember

    def slow_remember(self: Authenticator, *args: Any) -> None:
        looked_up.set()
        revoked.wait(5)
        remember(self, *args)

    monkeypatch.setattr(Authenticator, "_remember", slow_remember)
    lookup = threading.Thread(target=lambda: auth.authenticate(authorization=None, api_key=secret))
    lookup.start()
    assert looked_up.wait(5)
    with db.begin() as conn:  # what the admin route does
        assert clients.revoke_key(conn, client_id="c1", key_id=record.key_id, now=datetime.now(UTC))
    auth.forget_client("c1")
    revoked.set()
    lookup.join()
    assert auth.authenticate_cached(authorization=None, api_key=secret) is None  # not cached: the store decides
    with pytest.raises(Unauthorized):
        auth.authenticate(authorization=None, api_key=secret)


def test_hot_reads_run_at_most_the_configured_number_at_once(sqlite_runtime: Runtime,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """``api_read_concurrency`` bounds the reads on threads; the other requests wait and are all served."""
    import gateway.api.routes_facts as routes

    sqlite_runtime.settings = sqlite_runtime.settings.model_copy(update={"api_read_concurrency": 2})
    key = new_key(sqlite_runtime, "k", ["*"])
    lock, running, most = threading.Lock(), [0], [0]
    plain = routes.list_changes

    def slow_changes(*args: Any, **kwargs: Any) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            threading.Event().wait(0.05)  # long enough for every request to be in flight
            return plain(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(routes, "list_changes", slow_changes)
    with serve_in_thread(create_app(sqlite_runtime, start_scheduler=False)) as server:
        def get(_: int) -> int:
            return httpx.get(server.url + "/v1/facts/changes", headers={"X-API-Key": key}, timeout=30).status_code

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(get, range(8)))
    assert statuses == [200] * 8
    assert most[0] == 2


def test_frozen_policies_are_kept_per_closure_state_only(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A summary that misses the response cache reads the frozen policies of its months once per (closures,
    reopenings) state of the store: a closure, a reopening and a closure with another policy are each seen at
    once, and summaries of other units in between do not ask the store again."""
    import gateway.api.routes_facts as routes
    from gateway.store.periods import reopen_period

    asked: list[tuple[str, tuple[str, ...]]] = []
    plain = routes.frozen_policies

    def spy(conn: Any, *, agency: str, periods: Any) -> Any:
        asked.append((agency, tuple(periods)))
        return plain(conn, agency=agency, periods=periods)

    monkeypatch.setattr(routes, "frozen_policies", spy)
    key = new_key(runtime, "all", ["*"])
    put(runtime, [fact(n, period="2026-03", on_time=False, delays=1, unit=f"SKHCN.U{n % 2}") for n in range(6)])

    def timeliness(unit: str) -> str:
        body = api.get("/v1/summaries", key, period="2026-03", group_by="unit", agency="SKHCN", unit=unit).json()
        return str(body["items"][0]["units"]["timeliness"])

    def close(policy: str, day: int) -> None:
        with runtime.db.begin() as conn:
            close_period(conn, agency="SKHCN", period="2026-03", by="t", policy={"late_products": policy},
                         now=NOW + timedelta(days=day))  # fmt: skip

    with serve(runtime) as api:
        open_u0, open_u1 = timeliness("SKHCN.U0"), timeliness("SKHCN.U1")
        assert len(asked) == 1  # the second unit's summary missed the response cache, not the frozen policies
        close("exclude", 1)
        assert timeliness("SKHCN.U0") != open_u0 and len(asked) == 2
        assert timeliness("SKHCN.U1") != open_u1 and len(asked) == 2
        with runtime.db.begin() as conn:
            reopen_period(conn, agency="SKHCN", period="2026-03", by="t", reason="test", now=NOW + timedelta(days=2))
        assert timeliness("SKHCN.U0") == open_u0 and len(asked) == 3
        close("deduct", 3)  # as many frozen policies as after the first closure, but one more reopening
        assert timeliness("SKHCN.U0") == open_u0 and len(asked) == 4


def test_a_cache_hit_is_checked_and_audited_by_one_statement_on_postgresql(runtime: Runtime) -> None:
    """On PostgreSQL a hit sends one statement, the audit insert that holds only while the entry's version is the
    store's; a stale entry inserts nothing there and the miss writes the one audit row. The version SQL names
    the tables :func:`store_version` reads."""
    from sqlalchemy import event

    from gateway.api.cache import POLICY, REOPENING, VERSION_IS_PG

    assert all(f"FROM {t.name})" in VERSION_IS_PG for t in (CHANGE, POLICY, REOPENING))
    key = new_key(runtime, "all", ["*"])
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    with serve(runtime) as api:
        assert api.get("/v1/facts", key, limit=50).headers["X-KPIGW-Cache"] == "miss"
        event.listen(runtime.db, "before_cursor_execute", count)
        try:
            hit = api.get("/v1/facts", key, limit=50)
            statements = list(sent)
            put(runtime, [fact(1, units="9")], now=NOW + timedelta(days=1))
            sent.clear()
            stale = api.get("/v1/facts", key, limit=50)
        finally:
            event.remove(runtime.db, "before_cursor_execute", count)
    assert hit.headers["X-KPIGW-Cache"] == "hit" and stale.headers["X-KPIGW-Cache"] == "miss"
    assert next(f for f in stale.json()["items"] if f["item_key"] == "SKHCN:doc1")["units"] == "9.0000"
    if runtime.db.dialect.name == "postgresql":
        assert len(statements) == 1 and statements[0].startswith("INSERT INTO audit_log"), statements
    with runtime.db.connect() as conn:
        audited = conn.execute(select(AUDIT.c.detail).where(AUDIT.c.actor == "all")).scalars().all()
    assert len(audited) == 3  # miss, hit, stale -> miss: one row each, none from the stale check


def test_a_body_too_large_to_cache_drops_the_entry_it_supersedes(runtime: Runtime) -> None:
    """The newest read of a key that is too large to keep must not leave the key's older entry behind: that
    entry can never be current again, yet it kept being found (and, being found, never aged out), so on
    PostgreSQL every later request paid the conditional audit insert that fails, then the miss."""
    key = new_key(runtime, "all", ["*"])
    app = create_app(runtime, start_scheduler=False)
    cache: ResponseCache = app.state.response_cache
    with serve_in_thread(app) as server:
        def page() -> httpx.Response:
            return httpx.get(server.url + "/v1/facts", params={"limit": 1000}, headers={"X-API-Key": key}, timeout=30)

        small = page()
        cache.max_bytes = 8 * (len(small.content) + 1000)  # this body fits; one with 40 more facts does not
        assert page().headers["X-KPIGW-Cache"] == "hit"
        put(runtime, [fact(n) for n in range(100, 140)], now=NOW + timedelta(days=2))
        sent: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            sent.append(statement)

        assert page().headers["X-KPIGW-Cache"] == "miss"  # too large to keep
        event.listen(runtime.db, "before_cursor_execute", record)
        try:
            again = page()
        finally:
            event.remove(runtime.db, "before_cursor_execute", record)
    assert again.headers["X-KPIGW-Cache"] == "miss"
    assert not [s for s in sent if s.startswith("INSERT INTO audit_log") and "WHERE" in s], sent
    assert len(cache._entries) == 0


def test_of_two_racing_misses_the_cache_keeps_the_later_read() -> None:
    """Two threads miss one key; the one that read the older store version stores last. Keeping it would cost
    every next request a failed check; the later read stays. A reopening orders after a closure even though it
    leaves fewer frozen policies."""
    cache = ResponseCache(max_bytes=10_000)
    cache.put("k", Cached(b"new", 1, (7, 0, 0)))
    cache.put("k", Cached(b"old", 1, (5, 0, 0)))
    assert cache.get("k") == Cached(b"new", 1, (7, 0, 0))
    cache.put("k", Cached(b"closed", 1, (7, 1, 0)))
    cache.put("k", Cached(b"reopened", 1, (7, 0, 1)))
    cache.put("k", Cached(b"closed again, stale", 1, (7, 1, 0)))
    found = cache.get("k")
    assert found is not None and found.body == b"reopened"
