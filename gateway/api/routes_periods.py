"""``/v1/periods``: close an agency's month, check that it is still reproducible, reopen it; list corrections
and reopenings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from gateway.api import audit
from gateway.api.deps import AdminDep, ConnDep, ReaderDep, RuntimeDep, SnapshotConnDep
from gateway.api.facts import decode_token, encode_token
from gateway.api.problems import ApiError, problem_responses
from gateway.api.routes_facts import MONTH, json
from gateway.api.schemas import ClosureCheck, ClosureOut, CorrectionPage, ReopenIn, ReopeningOut, ReopeningPage
from gateway.api.summaries import policy_summary
from gateway.runtime import Runtime
from gateway.store import periods

router = APIRouter(prefix="/v1", tags=["periods"], responses=problem_responses(400, 401, 403, 422, 429))
Agency = Annotated[str, Path(max_length=200)]
Month = Annotated[str, Path(pattern=MONTH, description="YYYY-MM")]


@router.get("/periods", response_model=list[ClosureOut], summary="Closed periods")
def list_periods(conn: ConnDep, caller: ReaderDep,
                 agency: Annotated[str | None, Query(max_length=200)] = None) -> Response:  # fmt: skip
    if agency is not None:
        caller.require_agency(agency)
    return json(periods.list_closures(conn, scope=caller.scope, agency=agency))


@router.post("/periods/{agency}/{period}/close", status_code=201, response_model=ClosureOut,
             responses=problem_responses(409), summary="Close a month: freeze its facts and summaries")  # fmt: skip
def close(rt: RuntimeDep, caller: AdminDep, agency: Agency, period: Month) -> Response:
    caller.require_agency(agency)
    policy = policy_summary(rt.mappings.current.policy_for(agency))
    try:
        with rt.db.begin() as conn:
            closure = periods.close_period(conn, agency=agency, period=period, by=caller.client_id, policy=policy,
                                           now=datetime.now(UTC))  # fmt: skip
            audit.record_admin(conn, caller, action="close_period",
                               detail={"agency": agency, "period": period, "digest": closure["digest"]})  # fmt: skip
    except periods.PeriodAlreadyClosed as exc:
        raise ApiError(409, "Already closed", exc.message) from exc
    response = json(closure)
    response.status_code = 201
    return response


@router.post("/periods/{agency}/{period}/reopen", status_code=201, response_model=ReopeningOut,
             responses=problem_responses(404),
             summary="Reopen a closed month: apply the corrections recorded since its closure")  # fmt: skip
def reopen(rt: RuntimeDep, caller: AdminDep, agency: Agency, period: Month, body: ReopenIn) -> Response:
    """The closure and its frozen policy end (kept in ``/v1/reopenings``); the latest correction of each fact
    recorded while the month was closed is applied and appears in the change feed. Close the month again to
    freeze it anew."""
    caller.require_agency(agency)
    try:
        with rt.db.begin() as conn:
            reopening = periods.reopen_period(conn, agency=agency, period=period, by=caller.client_id,
                                              reason=body.reason, now=datetime.now(UTC))  # fmt: skip
            audit.record_admin(conn, caller, action="reopen_period",
                               detail={"agency": agency, "period": period, "reason": body.reason,
                                       "closed_digest": reopening["digest"],
                                       "corrections_applied": reopening["corrections_applied"]})  # fmt: skip
    except periods.PeriodNotClosed as exc:
        raise ApiError(404, "Not found", exc.message) from exc
    response = json(reopening)
    response.status_code = 201
    return response


@router.get("/reopenings", response_model=ReopeningPage, summary="Reopened months, oldest first (keyset pages)")
def get_reopenings(
    rt: RuntimeDep, conn: ConnDep, caller: ReaderDep,
    agency: Annotated[str | None, Query(max_length=200)] = None,
    period: Annotated[str | None, Query(pattern=MONTH)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:  # fmt: skip
    if agency is not None:
        caller.require_agency(agency)
    items, token = _keyset_page(rt, "reo", limit, after, lambda size, start: periods.list_reopenings(
        conn, scope=caller.scope, agency=agency, period=period, limit=size, after=start))  # fmt: skip
    return json({"items": items, "next": token})


@router.get("/periods/{agency}/{period}", response_model=ClosureCheck, responses=problem_responses(404),
            summary="A closure, with its digest recomputed now (reproducibility check)")  # fmt: skip
def get_period(conn: SnapshotConnDep, caller: ReaderDep, agency: Agency, period: Month) -> Response:
    caller.require_agency(agency)
    closure = periods.get_closure(conn, scope=caller.scope, agency=agency, period=period)
    if closure is None:
        raise ApiError(404, "Not found", f"{agency} {period} is not closed")
    now, _count = periods.facts_digest(conn, agency=agency, period=period)
    return json({**closure, "digest_now": now, "reproducible": now == closure["digest"]})


@router.get("/corrections", response_model=CorrectionPage,
            summary="Source changes that arrived after their period was closed (frozen facts unchanged)")  # fmt: skip
def get_corrections(
    request: Request, rt: RuntimeDep, conn: ConnDep, caller: ReaderDep,
    agency: Annotated[str | None, Query(max_length=200)] = None,
    period: Annotated[str | None, Query(pattern=MONTH)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:  # fmt: skip
    if agency is not None:
        caller.require_agency(agency)
    items, token = _keyset_page(rt, "cor", limit, after, lambda size, start: periods.list_corrections(
        conn, scope=caller.scope, agency=agency, period=period, limit=size, after=start))  # fmt: skip
    audit.record_read(conn, caller, action="read_corrections", rows=len(items),
                      filters={"agency": agency, "period": period, "after": after})  # fmt: skip
    return json({"items": items, "next": token})


Rows = list[dict[str, Any]]


def _keyset_page(rt: Runtime, kind: str, limit: int, after: str | None,
                 fetch: Callable[[int, int], Rows]) -> tuple[Rows, str | None]:  # fmt: skip
    """A page of rows in ``id`` order after the ``kind`` token, capped, and the token of the next page (None at the
    end). ``fetch(limit, after_id)`` reads one row more than the page, to know whether another follows."""
    size = min(limit, rt.settings.max_page_size)
    items = fetch(size + 1, decode_token(after, kind) if after else 0)
    more = len(items) > size
    items = items[:size]
    return items, encode_token(kind, items[-1]["id"]) if more and items else None
