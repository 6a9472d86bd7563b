"""``/v1/facts``, ``/v1/facts/changes``, ``/v1/facts/{id}``, ``/v1/summaries`` and ``/v1/export``.

Routes are thin: they check the caller's role and any explicitly named agency (403), call a query function
that applies the caller's scope in SQL (so an unchecked route still cannot leak), write the audit log entry
and serialize with orjson.

The three hot reads (a page of facts, the change feed, summaries) are ``async`` routes that hand their whole
store work (connection, query, audit entry, JSON body) to a worker thread in **one** hop (:func:`_read`): a
``def`` route with a ``ConnDep`` made three (open the connection, run the route, close it), and under 50
concurrent clients those hops cost more CPU than the query. They still declare ``response_model``, so the
OpenAPI contract is the one the models describe, and return a pre-built ``Response`` (no re-validation).
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Hashable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from gateway.api import audit
from gateway.api.cache import Cached, ResponseCache, Version, store_version
from gateway.api.deps import HotReaderDep, ReaderDep, RuntimeDep, SnapshotConnDep, one_snapshot
from gateway.api.export import FACT_COLUMNS, SUMMARY_COLUMNS, fact_rows, summary_rows, to_csv, to_xlsx
from gateway.api.facts import BadPageToken, FactFilter, get_fact, list_changes, list_fact_json, list_facts
from gateway.api.problems import ApiError, problem_responses
from gateway.api.query import openapi_parameters, parse_query
from gateway.api.schemas import ChangePage, FactDetail, FactPage, SummaryPage
from gateway.api.summaries import SUMMARY_PERIOD, FrozenFor, policy_summary, summarize
from gateway.mapping.mappingset import MappingSet
from gateway.runtime import Runtime
from gateway.security import Principal
from gateway.store.periods import frozen_policies
from gateway.types import VN_TZ

MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"
Status = Literal["assigned", "completed", "open", "on_time", "late", "exempt", "failed_review", "delayed"]
log = logging.getLogger("kpigw.api")
router = APIRouter(prefix="/v1", responses=problem_responses(400, 401, 403, 422, 429))


def json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def _cached_json(request: Request, route: str, body: bytes, outcome: str | None) -> Response:
    """The response, its ``X-KPIGW-Cache`` header and the ``kpigw_api_cache_total`` count (when the cache is on)."""
    if not outcome:
        return Response(body, media_type="application/json")
    runtime: Runtime = request.app.state.runtime
    runtime.metrics.api_cache.labels(route, outcome).inc()
    return Response(body, media_type="application/json", headers={"X-KPIGW-Cache": outcome})


def _serve_cached(request: Request, conn: Connection, caller: Principal, *, route: str,
                  parts: tuple[Hashable, ...], action: str, filters: Mapping[str, Any],
                  build: Callable[[Version | None], Cached]) -> Response:  # fmt: skip
    """A cacheable read: the app's response cache answers while its entry is current, else ``build(version)``
    reads it (``version`` None when the cache is off); audited either way. See :mod:`.cache`.

    ``conn`` comes from :func:`_read`, set for one snapshot and not yet in a transaction. On PostgreSQL a cached
    entry is checked by the audit insert itself, in autocommit; when it is stale, the connection goes back to
    one snapshot for the miss."""
    cache: ResponseCache = request.app.state.response_cache
    if not cache.enabled:
        entry = build(None)
        audit.record_read(conn, caller, action=action, filters=filters, rows=entry.rows)
        return _cached_json(request, route, entry.body, None)
    key = (route, tuple(caller.scope.listing()), *parts)
    found = cache.get(key)
    if found is not None and found.version is not None and conn.dialect.name == "postgresql":
        level = conn.get_execution_options().get("isolation_level")
        conn.execution_options(isolation_level="AUTOCOMMIT")
        current = audit.record_read_if_current(conn, caller, action=action, filters=filters, rows=found.rows,
                                               version=found.version)  # fmt: skip
        conn.commit()  # SQLAlchemy's own bookkeeping: the statement committed by itself
        if current:
            return _cached_json(request, route, found.body, "hit")
        conn.execution_options(isolation_level=level or "REPEATABLE READ")
        found = None  # stale: versions never repeat, so no later read can find it current
    version = store_version(conn)
    if found is not None and found.version == version:
        entry, outcome = found, "hit"
    else:
        entry, outcome = build(version), "miss"
        cache.put(key, entry)
    audit.record_read(conn, caller, action=action, filters=filters, rows=entry.rows)
    return _cached_json(request, route, entry.body, outcome)


async def _read(request: Request, work: Callable[[Connection], Response]) -> Response:
    """Run ``work`` with a store connection on a worker thread: one hop for the whole read.

    At most ``api_read_concurrency`` reads run at once per process (:func:`_read_limiter`); the others wait
    on the event loop, which costs nothing."""
    runtime: Runtime = request.app.state.runtime

    def run() -> Response:
        try:
            with runtime.db.connect() as conn:
                return work(one_snapshot(conn))  # the store version of a cache key and the data: one snapshot
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        # The connection died under the read (a server restart, a terminated backend) after the checkout found
        # it alive. The read runs once more on a new one rather than answer 500, as the client would only ask
        # again. A read in a transaction left nothing behind; an autocommit audit entry (a cache hit's check,
        # the feed's) may have committed before the socket closed, so the log may hold one entry more than
        # the reads served, never one fewer.
        log.warning("a store connection died during a read; reading again on a new connection")
        with runtime.db.connect() as conn:
            return work(one_snapshot(conn))

    return await anyio.to_thread.run_sync(run, limiter=_read_limiter(request))


def _read_limiter(request: Request) -> anyio.CapacityLimiter:
    """The app's bound on concurrent store reads (made on first use, inside the event loop).

    The bound is small on purpose: a read holds the GIL for most of its time, so beyond the few that keep the
    process busy while others wait on the store, more threads only queue for the GIL, and the event loop, which
    takes requests in and writes responses out, queues with them. With ``bench/api_bench.py`` (1,000,000 facts,
    50 clients, 2 processes on 2 cores), going from 10 to 3 raised the page of facts from 941-1,008 to
    1,176-1,203 requests/s and lowered the p99 of every request kind: page 98-106 -> 74 ms, unit-month summary
    211 -> 160 ms, change feed 265 -> 194 ms. One (no overlap with the store's own time) was worse than two.
    Never more than the pool's steady size, so a read never waits for an overflow connection."""
    state = request.app.state
    limiter: anyio.CapacityLimiter | None = getattr(state, "read_limiter", None)
    if limiter is None:
        runtime: Runtime = state.runtime
        wanted = runtime.settings.api_read_concurrency
        size = getattr(runtime.db.pool, "size", None)  # QueuePool.size() is a method; some pools have an int
        size = size() if callable(size) else size
        limiter = state.read_limiter = anyio.CapacityLimiter(
            min(wanted, size) if isinstance(size, int) and size > 0 else wanted
        )
    return limiter


def _cap(request: Request, limit: int) -> int:
    runtime: Runtime = request.app.state.runtime
    return min(limit, runtime.settings.max_page_size)


def _rule(runtime: Runtime) -> Any:
    def find(agency: str, rule_id: str) -> dict[str, Any] | None:
        rule = runtime.mappings.current.rule(agency, rule_id)
        if rule is None:
            return None
        version = runtime.mappings.current.version
        return {"id": rule.id, "file": rule.file, "line": rule.line, "agency": rule.agency, "mappings_version": version}

    return find


def policy_for(mappings: MappingSet) -> Any:
    """Current policies of one mapping set: a summary never mixes two sets when the mappings reload meanwhile."""
    return lambda agency: policy_summary(mappings.policy_for(agency))


def _check_agency(principal: Principal, agency: str | None) -> None:
    if agency is not None:
        principal.require_agency(agency)


def _moment(value: datetime, name: str) -> datetime:
    """``value`` made aware (naive = Vietnam time), refused with a 422 when it has no UTC equivalent: the store
    binds moments in UTC, and 0001-01-01 in Vietnam or 9999-12-31 west of Greenwich overflowed there (a 500)."""
    moment = value if value.tzinfo else value.replace(tzinfo=VN_TZ)
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ApiError(422, "Invalid request", f"query.{name}: {value.isoformat()} is outside the years 1-9999 "
                       "in UTC") from None  # fmt: skip
    return moment


CODE = Annotated[str | None, Field(max_length=200)]  # an agency, unit, person, product or source code


class FactQuery(BaseModel):
    """The query of ``GET /v1/facts``, validated in one call (see :mod:`gateway.api.query`)."""

    agency: CODE = None
    unit: CODE = None
    person: CODE = None
    period: Annotated[str | None, Field(pattern=MONTH, description="YYYY-MM")] = None
    product: CODE = None
    source: CODE = None
    status: Annotated[Status | None, Field(description="work status of the fact")] = None
    state: Literal["active", "retracted", "any"] = "active"
    changed_since: Annotated[datetime | None, Field(description="updated at or after (naive = Vietnam time)")] = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    after: Annotated[str | None, Field(max_length=64, description="the `next` of the previous page")] = None


@router.get("/facts", tags=["facts"], response_model=FactPage, summary="List facts (filters, keyset pages)",
            openapi_extra=openapi_parameters(FactQuery))  # fmt: skip
async def get_facts(request: Request, caller: HotReaderDep) -> Response:
    q = parse_query(FactQuery, request)
    _check_agency(caller, q.agency)
    since = None if q.changed_since is None else _moment(q.changed_since, "changed_since")
    filters = FactFilter(agency=q.agency, unit=q.unit, person=q.person, period=q.period, product=q.product,
                         source=q.source, status=q.status, state=None if q.state == "any" else q.state,
                         changed_since=since)  # fmt: skip
    limit, after = q.limit, q.after
    size = _cap(request, limit)

    def work(conn: Connection) -> Response:
        def build(version: Version | None) -> Cached:
            items, next_token = list_fact_json(conn, scope=caller.scope, filters=filters, limit=size, after=after)
            return Cached(orjson.dumps({"items": items, "next": next_token}), len(items), version)

        return _serve_cached(request, conn, caller, route="facts", parts=(filters, size, after), action="read_facts",
                             filters=filters.public(), build=build)  # fmt: skip

    return await _read(request, work)


class ChangeQuery(BaseModel):
    """The query of ``GET /v1/facts/changes`` (see :mod:`gateway.api.query`)."""

    after: Annotated[str | None, Field(max_length=64, description="the `next` of the previous call")] = None
    agency: CODE = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 500


@router.get("/facts/changes", tags=["facts"], response_model=ChangePage,
            summary="Change feed: inserts, updates, retractions in commit order",
            openapi_extra=openapi_parameters(ChangeQuery))  # fmt: skip
async def get_changes(request: Request, caller: HotReaderDep) -> Response:
    q = parse_query(ChangeQuery, request)
    after, agency, limit = q.after, q.agency, q.limit
    _check_agency(caller, agency)
    size = _cap(request, limit)

    def work(conn: Connection) -> Response:
        if conn.dialect.name == "postgresql":
            # One statement reads the page, so it is one snapshot by itself; the audit row is its own transaction,
            # committed before the response leaves. Two round trips instead of four (BEGIN, COMMIT).
            conn.execution_options(isolation_level="AUTOCOMMIT")
        items, token, more = list_changes(conn, scope=caller.scope, after=after, limit=size, agency=agency)
        audit.record_read(conn, caller, action="read_changes", filters={"after": after, "agency": agency},
                          rows=len(items))  # fmt: skip
        return json({"items": items, "next": token, "has_more": more})

    return await _read(request, work)


@router.get("/facts/{fact_id}", tags=["facts"], response_model=FactDetail, responses=problem_responses(404),
            summary="One fact with its full lineage, history, closure and corrections")  # fmt: skip
def get_one_fact(
    rt: RuntimeDep, conn: SnapshotConnDep, caller: ReaderDep, fact_id: Annotated[int, Path(ge=1, le=2**62)],
) -> Response:
    found = get_fact(conn, scope=caller.scope, fact_id=fact_id, rule_source=_rule(rt))
    audit.record_read(conn, caller, action="read_fact", filters={"id": fact_id}, rows=int(found is not None))
    if found is None:
        raise ApiError(404, "Not found", f"no fact {fact_id} among the agencies you may read")
    return json(found)


def _group_token(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def _after_group(token: str) -> list[Any]:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise BadPageToken("the page token is not one this API issued; start without one") from exc
    if not isinstance(key, list) or not all(part is None or isinstance(part, str) for part in key):
        # a group key is text (or null): anything else would meet the groups' text in a comparison (TypeError)
        raise BadPageToken("the page token is not one this API issued; start without one")
    return key


class SummaryQuery(BaseModel):
    """The query of ``GET /v1/summaries`` (see :mod:`gateway.api.query`)."""

    period: Annotated[str, Field(pattern=SUMMARY_PERIOD, description="YYYY-MM, YYYY-Qn or YYYY")]
    group_by: Literal["person", "unit", "agency"] = "unit"
    agency: CODE = None
    unit: CODE = None
    person: CODE = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 1000
    after: Annotated[str | None, Field(max_length=400)] = None


@router.get("/summaries", tags=["summaries"], response_model=SummaryPage,
            summary="Inputs of criteria a, b, c per person, unit or agency, with a reference score",
            openapi_extra=openapi_parameters(SummaryQuery))  # fmt: skip
async def get_summaries(request: Request, caller: HotReaderDep) -> Response:
    q = parse_query(SummaryQuery, request)
    period, group_by, agency, unit, person, after = q.period, q.group_by, q.agency, q.unit, q.person, q.after
    _check_agency(caller, agency)
    mark = [x or "" for x in _after_group(after)] if after else None
    size = _cap(request, q.limit)

    def work(conn: Connection) -> Response:
        runtime: Runtime = request.app.state.runtime
        mappings = runtime.mappings.current  # once: the cache key and the computation must name the same set

        def build(version: Version | None) -> Cached:
            frozen = _frozen_policies(request, version) if version is not None else None
            return _summary_page(conn, mappings, caller, group_by=group_by, period=period, agency=agency, unit=unit,
                                 person=person, mark=mark, size=size, frozen=frozen, version=version)  # fmt: skip

        return _serve_cached(request, conn, caller, route="summaries",
                             parts=(mappings.version, group_by, period, agency, unit, person, size, after),
                             action="read_summaries", build=build, filters={
                                 "period": period, "group_by": group_by, "agency": agency, "unit": unit,
                                 "person": person})  # fmt: skip

    return await _read(request, work)


def _frozen_policies(request: Request, version: Version) -> FrozenFor:
    """:func:`~gateway.store.periods.frozen_policies`, kept per process for the store version's (frozen
    policies, reopenings) pair, which every closure and every reopening changes (see :mod:`.cache`): a summary
    that misses the response cache then asks the store for its aggregate alone."""
    state = request.app.state
    kept: dict[tuple[Any, ...], dict[str, dict[str, Any]]] | None = getattr(state, "frozen_policies", None)
    if kept is None:
        kept = state.frozen_policies = {}
    stamp = version[1:]

    def frozen_for(conn: Connection, agency: str, months: list[str]) -> dict[str, dict[str, Any]]:
        key = (stamp, agency, tuple(months))
        found = kept.get(key)
        if found is None:
            found = frozen_policies(conn, agency=agency, periods=months)
            if len(kept) >= 4096:  # a new closure or reopening makes every key new: drop what can no longer match
                kept.clear()
            kept[key] = found
        return found

    return frozen_for


def _summary_page(conn: Connection, mappings: MappingSet, caller: Principal, *, group_by: str, period: str,
                  agency: str | None, unit: str | None, person: str | None, mark: list[Any] | None,
                  size: int, frozen: FrozenFor | None = None, version: Version | None = None) -> Cached:  # fmt: skip
    groups = summarize(conn, scope=caller.scope, group_by=group_by, period=period, policy_for=policy_for(mappings),
                       agency=agency, unit=unit, person=person, frozen_for=frozen)  # fmt: skip
    keys = ("agency", "unit", "person_id")
    if mark is not None:
        groups = [g for g in groups if [g.get(k) or "" for k in keys if k in g] > mark]
    page = groups[:size]
    more = len(groups) > len(page)
    token = _group_token([page[-1].get(k) for k in keys if k in page[-1]]) if more and page else None
    return Cached(orjson.dumps({"items": page, "next": token}), len(page), version)


@router.get("/export", tags=["export"], summary="A unit-period's facts and summaries as CSV or XLSX",
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}},
                                         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":
                                             {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the file"}})  # fmt: skip
def export(
    rt: RuntimeDep, conn: SnapshotConnDep, caller: ReaderDep,
    agency: Annotated[str, Query(max_length=200)], unit: Annotated[str, Query(max_length=200)],
    period: Annotated[str, Query(pattern=SUMMARY_PERIOD, description="YYYY-MM, YYYY-Qn or YYYY")],
    format: Annotated[Literal["csv", "xlsx"], Query()] = "csv",
    table: Annotated[Literal["facts", "summaries"], Query(description="CSV only; XLSX has both")] = "facts",
) -> Response:  # fmt: skip
    caller.require_agency(agency)
    from gateway.api.summaries import months_of

    facts: list[dict[str, Any]] = []
    for month in months_of(period):
        after: str | None = None
        while True:
            page, after = list_facts(conn, scope=caller.scope, limit=1000, after=after,
                                     filters=FactFilter(agency=agency, unit=unit, period=month))  # fmt: skip
            facts.extend(page)
            if after is None:
                break
    current = policy_for(rt.mappings.current)
    people = summarize(conn, scope=caller.scope, group_by="person", period=period, policy_for=current,
                       agency=agency, unit=unit)  # fmt: skip
    total = summarize(conn, scope=caller.scope, group_by="unit", period=period, policy_for=current,
                      agency=agency, unit=unit)  # fmt: skip
    audit.record_read(conn, caller, action="export", rows=len(facts), filters={
        "agency": agency, "unit": unit, "period": period, "format": format, "table": table})  # fmt: skip
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"kpigw-{agency}-{unit}-{period}")  # header-safe ASCII
    if format == "csv":
        if table == "facts":
            body = to_csv(FACT_COLUMNS, fact_rows(facts))
        else:
            body = to_csv(SUMMARY_COLUMNS, summary_rows(total + people))
        return Response(body, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}-{table}.csv"'})  # fmt: skip
    stamp = max((datetime.fromisoformat(f["updated_at"]) for f in facts if f["updated_at"]),
                default=datetime(2000, 1, 1, tzinfo=UTC))  # fmt: skip
    body = to_xlsx([("facts", FACT_COLUMNS, fact_rows(facts)),
                    ("summaries", SUMMARY_COLUMNS, summary_rows(total + people))], stamp=stamp)  # fmt: skip
    return Response(body, media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'})  # fmt: skip
