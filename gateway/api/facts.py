"""Reading facts: filters, keyset pagination on ``id`` with a capped page size, stable order."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from gateway.errors import GatewayError
from gateway.store.facts import FACT, snapshot

MAX_PAGE = 1000


class BadPageToken(GatewayError):
    pass


def encode_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "id":
            raise ValueError(kind)
        return int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPageToken("the page token is not one this API issued") from exc


@dataclass(frozen=True)
class FactFilter:
    agency: str | None = None
    unit: str | None = None
    person: str | None = None
    period: str | None = None
    product: str | None = None
    source: str | None = None
    state: str | None = "active"


def list_facts(conn: Connection, *, filters: FactFilter, limit: int, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
    stmt = select(FACT).order_by(FACT.c.id).limit(min(max(limit, 1), MAX_PAGE) + 1)
    for column, value in (
        (FACT.c.agency, filters.agency), (FACT.c.unit, filters.unit), (FACT.c.person_id, filters.person),
        (FACT.c.period, filters.period), (FACT.c.product_code, filters.product), (FACT.c.source, filters.source),
        (FACT.c.state, filters.state),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if after:
        stmt = stmt.where(FACT.c.id > decode_token(after))
    rows = [dict(r._mapping) for r in conn.execute(stmt)]
    page_size = min(max(limit, 1), MAX_PAGE)
    more = len(rows) > page_size
    rows = rows[:page_size]
    return [snapshot(r) for r in rows], (encode_token(rows[-1]["id"]) if more and rows else None)
