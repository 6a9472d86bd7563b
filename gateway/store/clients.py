"""API clients and their keys. Only key hashes are stored; a key's secret is returned once, when issued.

Rotation issues a new key and lets the client's older keys expire after a grace period, so a front end can
switch without downtime; revocation is immediate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, select, update

from gateway.security.keys import hash_secret, new_key
from gateway.store.models import ApiClient, ApiKey

CLIENT = ApiClient.__table__  # type: ignore[attr-defined]
KEY = ApiKey.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ClientRecord:
    id: str
    name: str
    agencies: tuple[str, ...]
    roles: tuple[str, ...]
    rate_per_minute: int | None
    disabled: bool
    created_at: datetime


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    client_id: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def _client(row: Any) -> ClientRecord:
    return ClientRecord(row.id, row.name, tuple(orjson.loads(row.agencies)), tuple(orjson.loads(row.roles)),
                        row.rate_per_minute, bool(row.disabled), row.created_at)  # fmt: skip


def _key(row: Any) -> KeyRecord:
    return KeyRecord(row.key_id, row.client_id, row.secret_hash, row.created_at, row.expires_at, row.revoked_at)


def create_client(conn: Connection, *, client_id: str, name: str, agencies: list[str], roles: list[str],
                  rate_per_minute: int | None, now: datetime) -> ClientRecord:  # fmt: skip
    record = ClientRecord(client_id, name, tuple(sorted(set(agencies))), tuple(sorted(set(roles))), rate_per_minute,
                          False, now)  # fmt: skip
    conn.execute(CLIENT.insert(), {
        "id": client_id, "name": name, "agencies": orjson.dumps(record.agencies).decode(),
        "roles": orjson.dumps(record.roles).decode(), "rate_per_minute": rate_per_minute,
        "disabled": False, "created_at": now,
    })  # fmt: skip
    return record


def get_client(conn: Connection, client_id: str) -> ClientRecord | None:
    row = conn.execute(select(CLIENT).where(CLIENT.c.id == client_id)).first()
    return _client(row) if row else None


def list_clients(conn: Connection) -> list[ClientRecord]:
    return [_client(r) for r in conn.execute(select(CLIENT).order_by(CLIENT.c.id))]


def set_disabled(conn: Connection, client_id: str, *, disabled: bool) -> None:
    conn.execute(update(CLIENT).where(CLIENT.c.id == client_id).values(disabled=disabled))


def issue_key(conn: Connection, *, client_id: str, now: datetime, expires_at: datetime | None = None,
              retire_others_after: timedelta | None = None) -> tuple[KeyRecord, str]:  # fmt: skip
    """A new key for the client: ``(record, full key)``. With ``retire_others_after`` (rotation) the client's
    other live keys expire after that grace period (never later than they already would)."""
    if retire_others_after is not None:
        deadline = now + retire_others_after
        for old in list_keys(conn, client_id):
            if old.usable(now) and (old.expires_at is None or old.expires_at > deadline):
                conn.execute(update(KEY).where(KEY.c.key_id == old.key_id).values(expires_at=deadline))
    key_id, full = new_key()
    secret = full.removeprefix(f"kpigw_{key_id}_")
    record = KeyRecord(key_id, client_id, hash_secret(secret), now, expires_at, None)
    conn.execute(KEY.insert(), {"key_id": key_id, "client_id": client_id, "secret_hash": record.secret_hash,
                                "created_at": now, "expires_at": expires_at, "revoked_at": None})  # fmt: skip
    return record, full


def get_key(conn: Connection, key_id: str) -> KeyRecord | None:
    row = conn.execute(select(KEY).where(KEY.c.key_id == key_id)).first()
    return _key(row) if row else None


def list_keys(conn: Connection, client_id: str) -> list[KeyRecord]:
    return [_key(r) for r in conn.execute(select(KEY).where(KEY.c.client_id == client_id).order_by(KEY.c.created_at))]


def revoke_key(conn: Connection, *, client_id: str, key_id: str, now: datetime) -> bool:
    done = conn.execute(
        update(KEY).where(KEY.c.key_id == key_id, KEY.c.client_id == client_id, KEY.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )  # fmt: skip
    return bool(done.rowcount)


def find_key(conn: Connection, key_id: str) -> tuple[KeyRecord, ClientRecord] | None:
    row = conn.execute(
        select(KEY, CLIENT.c.name, CLIENT.c.agencies, CLIENT.c.roles, CLIENT.c.rate_per_minute, CLIENT.c.disabled,
               CLIENT.c.created_at.label("client_created_at"))
        .join(CLIENT, CLIENT.c.id == KEY.c.client_id).where(KEY.c.key_id == key_id)
    ).first()  # fmt: skip
    if row is None:
        return None
    client = ClientRecord(row.client_id, row.name, tuple(orjson.loads(row.agencies)), tuple(orjson.loads(row.roles)),
                          row.rate_per_minute, bool(row.disabled), row.client_created_at)  # fmt: skip
    return _key(row), client
