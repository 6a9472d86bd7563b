"""Dependency aliases: routes receive the runtime's parts and the caller through ``Annotated`` types."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection

from gateway.runtime import Runtime
from gateway.security import ADMIN, READ_FACTS, Authenticator, Principal, RateLimiter

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key: kpigw_<key id>_<secret>")
_bearer = HTTPBearer(auto_error=False, description="an OIDC access token (JWT) or an API key")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_principal(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    auth: Authenticator = request.app.state.authenticator
    limiter: RateLimiter = request.app.state.rate_limiter
    header = f"Bearer {bearer.credentials}" if bearer is not None else request.headers.get("Authorization")
    principal = auth.authenticate(authorization=header, api_key=api_key)
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


def reader(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require(READ_FACTS)
    return principal


def admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require(ADMIN)
    return principal


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ConnDep = Annotated[Connection, Depends(get_conn)]
CallerDep = Annotated[Principal, Depends(get_principal)]
ReaderDep = Annotated[Principal, Depends(reader)]
AdminDep = Annotated[Principal, Depends(admin)]
