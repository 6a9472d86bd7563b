"""Reading facts and their change feed. Every function takes the caller's :class:`Scope`, applied in SQL.

- :func:`list_facts`: filters, keyset pagination on ``id`` (stable order, capped page size);
- :func:`get_fact`: one fact with its full lineage: history, source record, rule, corrections;
- :func:`list_changes`: the change feed in commit order (``fact_change.seq``, see :mod:`gateway.store.facts`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Select, Text, cast, select, type_coerce
from sqlalchemy.types import NullType

from gateway.errors import GatewayError
from gateway.security.principal import Scope
from gateway.store.facts import CHANGE, FACT, snapshot
from gateway.store.models import RawRecord
from gateway.store.periods import get_closure, list_corrections

MAX_PAGE = 1000
MAX_ROW_ID = 2**63 - 1  # row ids and change numbers are 64-bit integers on every backend
RAW = RawRecord.__table__  # type: ignore[attr-defined]
STATUSES = ("assigned", "completed", "open", "on_time", "late", "exempt", "failed_review", "delayed")


class BadPageToken(GatewayError):
    pass


def encode_token(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_token(token: str, kind: str = "id") -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        found, _, value = raw.partition(":")
        if found != kind:
            raise ValueError(found)
        number = int(value)
        if not 0 <= number <= MAX_ROW_ID:  # beyond it the driver refuses the bound value: a 500, not a 400
            raise ValueError(value)
        return number
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPageToken(f"the page token is not a {kind!r} token this API issued; start without one") from exc


@dataclass(frozen=True)
class FactFilter:
    agency: str | None = None
    unit: str | None = None
    person: str | None = None
    period: str | None = None
    product: str | None = None
    source: str | None = None
    status: str | None = None
    state: str | None = "active"  # active | retracted | None (any)
    changed_since: datetime | None = None

    def public(self) -> dict[str, Any]:
        """The filter as written to the audit log."""
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        if self.changed_since is not None:
            out["changed_since"] = self.changed_since.isoformat()
        return out


def _apply(stmt: Select[Any], filters: FactFilter) -> Select[Any]:
    for column, value in (
        (FACT.c.agency, filters.agency), (FACT.c.unit, filters.unit), (FACT.c.person_id, filters.person),
        (FACT.c.period, filters.period), (FACT.c.product_code, filters.product), (FACT.c.source, filters.source),
        (FACT.c.state, filters.state),
    ):  # fmt: skip
        if value is not None:
            stmt = stmt.where(column == value)
    if filters.changed_since is not None:
        stmt = stmt.where(FACT.c.updated_at >= filters.changed_since)
    status = {
        "assigned": FACT.c.assigned.is_(True), "completed": FACT.c.completed.is_(True),
        "open": FACT.c.completed.is_(False), "on_time": FACT.c.on_time.is_(True), "late": FACT.c.on_time.is_(False),
        "exempt": FACT.c.exempt.is_(True), "failed_review": FACT.c.failed_reviews > 0, "delayed": FACT.c.delays > 0,
    }  # fmt: skip
    if filters.status is not None:
        stmt = stmt.where(status[filters.status])
    return stmt


def list_facts(conn: Connection, *, scope: Scope, filters: FactFilter, limit: int,
               after: str | None) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
    """A page of facts in ``id`` order and the token of the next page (None at the end)."""
    page_size = min(max(limit, 1), MAX_PAGE)
    stmt = _apply(select(FACT).where(scope.where(FACT.c.agency)), filters).order_by(FACT.c.id).limit(page_size + 1)
    if after:
        stmt = stmt.where(FACT.c.id > decode_token(after))
    rows = [r._asdict() for r in conn.execute(stmt)]
    more = len(rows) > page_size
    rows = rows[:page_size]
    return [snapshot(r) for r in rows], (encode_token("id", rows[-1]["id"]) if more and rows else None)


def list_fact_json(conn: Connection, *, scope: Scope, filters: FactFilter, limit: int,
                   after: str | None) -> tuple[list[orjson.Fragment], str | None]:  # fmt: skip
    """:func:`list_facts` for the wire: each fact's snapshot as the change feed stored it with the fact's
    current version (``fact.change_seq``), spliced in as JSON without being parsed and rebuilt."""
    page_size = min(max(limit, 1), MAX_PAGE)
    stmt = (_apply(select(FACT.c.id, CHANGE.c.snapshot).join(CHANGE, CHANGE.c.seq == FACT.c.change_seq)
                   .where(scope.where(FACT.c.agency)), filters)
            .order_by(FACT.c.id).limit(page_size + 1))  # fmt: skip
    if after:
        stmt = stmt.where(FACT.c.id > decode_token(after))
    rows = list(conn.execute(stmt))
    more = len(rows) > page_size
    rows = rows[:page_size]
    return [orjson.Fragment(r.snapshot) for r in rows], (encode_token("id", rows[-1].id) if more and rows else None)


def get_fact(conn: Connection, *, scope: Scope, fact_id: int, rule_source: Any = None) -> dict[str, Any] | None:
    """The fact, its history (every change), the archived source record it came from, the rule that valued it,
    the closure of its period and the corrections recorded since. None when absent or out of scope."""
    row = conn.execute(select(FACT).where(FACT.c.id == fact_id, scope.where(FACT.c.agency))).first()
    if row is None:
        return None
    fact = snapshot(row._asdict())
    history = [
        {"seq": h.seq, "op": h.op, "version": h.version, "committed_at": h.committed_at.isoformat(),
         "fact": orjson.loads(h.snapshot)}
        # in scope like the feed: a fact that moved from another agency does not show that agency's versions
        for h in conn.execute(select(CHANGE).where(CHANGE.c.fact_id == fact_id, scope.where(CHANGE.c.agency))
                              .order_by(CHANGE.c.seq))
    ]  # fmt: skip
    raw_hash = (fact["lineage"].get("raw") or {}).get("content_hash")
    raw_stmt = select(RAW).where(RAW.c.source == fact["source"], RAW.c.stream == fact["stream"],
                                 RAW.c.record_key == fact["record_key"])  # fmt: skip
    if raw_hash:
        raw_stmt = raw_stmt.where(RAW.c.content_hash == raw_hash)
    raw = conn.execute(raw_stmt.order_by(RAW.c.id.desc()).limit(1)).first()
    rule = rule_source(fact["agency"], fact["rule_id"]) if rule_source is not None else None
    return {
        "fact": fact,
        "history": history,
        "source_record": None if raw is None else {
            "id": raw.id, "source": raw.source, "stream": raw.stream, "record_key": raw.record_key,
            "content_hash": raw.content_hash, "fetched_at": raw.fetched_at.isoformat(),
            "payload": orjson.loads(raw.payload),
        },
        "rule": rule,
        "catalog_version": fact["catalog_version"],
        "person_resolution": fact["lineage"].get("person"),
        "closure": get_closure(conn, scope=scope, agency=fact["agency"], period=fact["period"]),
        "corrections": list_corrections(conn, scope=scope, fact_id=fact_id, limit=MAX_PAGE),
    }  # fmt: skip


# committed_at comes back as the driver's raw value (no per-row type processing) and is converted once per
# distinct value (the changes of one sync page share it). SQLite stores text, which the column type's own result
# processor turns into a datetime; PostgreSQL is asked for text too, as its timestamptz parsed into a datetime
# for every row (and hashed for the memo, which asks the time zone) cost more than the rest of the row.
_CHANGE_COLUMNS = (CHANGE.c.seq, CHANGE.c.op, CHANGE.c.fact_id, CHANGE.c.fact_key, CHANGE.c.agency, CHANGE.c.period,
                   CHANGE.c.version)  # fmt: skip
_CHANGE_WIRE = (*_CHANGE_COLUMNS, type_coerce(CHANGE.c.committed_at, NullType()).label("committed_at"),
                CHANGE.c.snapshot)  # fmt: skip
_CHANGE_WIRE_PG = (*_CHANGE_COLUMNS, cast(CHANGE.c.committed_at, Text).label("committed_at"), CHANGE.c.snapshot)


def _stamp_reader(conn: Connection) -> Callable[[Any], str]:
    """The raw ``committed_at`` of :data:`_CHANGE_WIRE` (or ``_PG``) -> ISO 8601 in UTC, as snapshots write it."""
    if conn.dialect.name == "postgresql":
        return lambda text: datetime.fromisoformat(text).astimezone(UTC).isoformat()
    to_datetime = CHANGE.c.committed_at.type.dialect_impl(conn.dialect).result_processor(conn.dialect, None)
    return lambda raw: (to_datetime(raw) if to_datetime else raw).isoformat()


def list_changes(conn: Connection, *, scope: Scope, after: str | None, limit: int,
                 agency: str | None = None) -> tuple[list[dict[str, Any]], str, bool]:  # fmt: skip
    """Changes after the token in commit order; the token to continue from (the same one when nothing is
    new, so a follower keeps polling with it) and whether more are waiting.

    Built for a hot path: one ``fetchall`` of plain DBAPI tuples, unpacked by position, each change's stored
    snapshot spliced in as an :class:`orjson.Fragment` (never parsed), and ``committed_at`` formatted once per
    distinct value. With these a 500-change page costs about 0.9 ms of CPU on PostgreSQL, against 1.9 ms
    with SQLAlchemy rows and a datetime per row, and a third of that before the snapshots were spliced."""
    page_size = min(max(limit, 1), MAX_PAGE)
    after_seq = decode_token(after, "seq") if after else 0
    wire = _CHANGE_WIRE_PG if conn.dialect.name == "postgresql" else _CHANGE_WIRE
    stmt = (select(*wire).where(CHANGE.c.seq > after_seq, scope.where(CHANGE.c.agency))
            .order_by(CHANGE.c.seq).limit(page_size + 1))  # fmt: skip
    if agency is not None:
        stmt = stmt.where(CHANGE.c.agency == agency)
    with conn.execute(stmt) as result:
        rows = result.cursor.fetchall()  # the driver's tuples: no Row object per change
    more = len(rows) > page_size
    rows = rows[:page_size]
    read_stamp = _stamp_reader(conn)
    stamps: dict[Any, str] = {}
    items = []
    for seq, op, fact_id, fact_key, agency_code, period, version, committed_at, snap in rows:
        stamp = stamps.get(committed_at)
        if stamp is None:
            stamp = stamps[committed_at] = read_stamp(committed_at)
        items.append({"seq": seq, "op": op, "fact_id": fact_id, "fact_key": fact_key, "agency": agency_code,
                      "period": period, "version": version, "committed_at": stamp, "fact": orjson.Fragment(snap)})
    last = rows[-1][0] if rows else after_seq
    return items, encode_token("seq", last), more
