"""Dependency aliases: routes receive the runtime's parts through ``Annotated`` types, never globals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Connection

from gateway.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_conn(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Connection]:
    with runtime.db.connect() as conn:
        yield conn


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ConnDep = Annotated[Connection, Depends(get_conn)]
