"""Dependency aliases: routes receive the runtime's parts and the caller through ``Annotated`` types.

The dependencies that do no I/O are ``async``: FastAPI runs a plain ``def`` dependency on a worker thread, and
under load each such hop (queue, wake-up, GIL hand-over) cost more than the work it carried. Authentication
decides on the event loop when the key cache can (:meth:`Authenticator.authenticate_cached`) and goes to a
worker thread only to ask the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from gateway.runtime import Runtime
from gateway.security import ADMIN, READ_FACTS, Authenticator, Principal, RateLimiter

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key: kpigw_<key id>_<secret>")
_bearer = HTTPBearer(auto_error=False, description="an OIDC access token (JWT) or an API key")


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


ApiKey = Annotated[str | None, Security(_api_key)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


async def get_principal(request: Request, api_key: ApiKey, bearer: Bearer) -> Principal:
    return await _authenticate(request, api_key, bearer)


async def _authenticate(request: Request, api_key: str | None, bearer: HTTPAuthorizationCredentials | None,
                        ) -> Principal:  # fmt: skip
    auth: Authenticator = request.app.state.authenticator
    limiter: RateLimiter = request.app.state.rate_limiter
    header = f"Bearer {bearer.credentials}" if bearer is not None else request.headers.get("Authorization")
    principal = auth.authenticate_cached(authorization=header, api_key=api_key)
    if principal is None:
        principal = await run_in_threadpool(auth.authenticate, authorization=header, api_key=api_key)
    limiter.take(principal.client_id, principal.rate_per_minute)
    request.state.principal = principal
    return principal


def get_conn(
    runtime: Annotated[Runtime, Depends(get_runtime)], _caller: Annotated[Principal, Depends(get_principal)]
) -> Iterator[Connection]:
    """A connection for an authenticated request. Authentication comes first and returns its own connection
    to the pool before this one is taken, so a busy pool never holds connections waiting for more."""
    with runtime.db.connect() as conn:
        yield conn


def one_snapshot(conn: Connection) -> Connection:
    """``conn``, set so that its next transaction reads one snapshot of the store throughout.

    A read that runs several statements (a summary's aggregate, exempt facts and frozen policies, with the
    store version of its cache key; an export; one fact with its history and corrections) must not see a sync
    commit between two of them. Under PostgreSQL's READ COMMITTED each statement took a new snapshot: an exempt
    fact of a group the aggregate had not seen was a 500, and a summary mixing two states could be cached under
    the older version. REPEATABLE READ takes one snapshot at the first statement, at no extra round trip
    (psycopg sends it with BEGIN) and no extra CPU (one snapshot instead of one per statement). It is not READ
    ONLY because the audit row is inserted in the same transaction, committed before the response leaves, and
    an INSERT never fails serialization. The pool resets the level when the connection returns. SQLite needs
    nothing: every transaction here is ``BEGIN IMMEDIATE`` (see :mod:`gateway.store.db`), so no writer commits
    while it is open, and a WAL reader keeps one snapshot from its first read anyway."""
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def get_snapshot_conn(
    runtime: Annotated[Runtime, Depends(get_runtime)], _caller: Annotated[Principal, Depends(get_principal)]
) -> Iterator[Connection]:
    """:func:`get_conn` for reads of several statements that must agree: one snapshot (:func:`one_snapshot`)."""
    with runtime.db.connect() as conn:
        yield one_snapshot(conn)


async def reader(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require(READ_FACTS)
    return principal


async def hot_reader(request: Request, api_key: ApiKey, bearer: Bearer) -> Principal:
    """:func:`reader` in one dependency instead of two, for the hot reads (``/v1/facts``, the change feed,
    summaries), whose other parameters are plain query values: FastAPI's dependency solving was a fifth of a
    cache-hit page's CPU. Only for routes where nothing else depends on :func:`get_principal` (``ConnDep``
    does), or the caller would be authenticated and rate-limited twice."""
    principal = await _authenticate(request, api_key, bearer)
    principal.require(READ_FACTS)
    return principal


async def admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require(ADMIN)
    return principal


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ConnDep = Annotated[Connection, Depends(get_conn)]
SnapshotConnDep = Annotated[Connection, Depends(get_snapshot_conn)]
CallerDep = Annotated[Principal, Depends(get_principal)]
ReaderDep = Annotated[Principal, Depends(reader)]
HotReaderDep = Annotated[Principal, Depends(hot_reader)]
AdminDep = Annotated[Principal, Depends(admin)]
