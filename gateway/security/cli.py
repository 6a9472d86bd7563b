"""``kpigw clients ...``: bootstrap and manage API clients from the command line (the first admin key comes
from here; after that ``/v1/admin`` does the same over HTTP). Register with :func:`register`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any


def _engine(args: argparse.Namespace) -> Any:
    from gateway.settings import Settings
    from gateway.store import make_engine, migrate

    engine = make_engine(args.database_url or Settings().database_url)
    migrate(engine)
    return engine


def cmd_add(args: argparse.Namespace) -> int:
    from gateway.store import clients

    now = datetime.now(UTC)
    with _engine(args).begin() as conn:
        clients.create_client(conn, client_id=args.id, name=args.name or args.id, agencies=args.agencies.split(","),
                              roles=args.roles.split(","), rate_per_minute=args.rate, now=now)  # fmt: skip
        key = clients.issue_key(conn, client_id=args.id, now=now, expires_at=now + timedelta(days=args.days))[1]
    print(f"client {args.id} created; its API key (shown once, only a hash is stored):\n{key}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from gateway.store import clients

    now = datetime.now(UTC)
    with _engine(args).begin() as conn:
        if clients.get_client(conn, args.id) is None:
            print(f"no client {args.id!r}")
            return 1
        key = clients.issue_key(conn, client_id=args.id, now=now, expires_at=now + timedelta(days=args.days),
                                retire_others_after=timedelta(hours=args.grace_hours))[1]  # fmt: skip
    print(f"new key for {args.id} (older keys expire in {args.grace_hours} h):\n{key}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from gateway.store import clients

    with _engine(args).connect() as conn:
        for c in clients.list_clients(conn):
            keys = [k for k in clients.list_keys(conn, c.id) if k.usable(datetime.now(UTC))]
            print(f"{c.id}\t{','.join(c.agencies)}\t{','.join(c.roles)}\t{len(keys)} live key(s)"
                  + ("\tDISABLED" if c.disabled else ""))  # fmt: skip
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("clients", help="API clients and keys").add_subparsers(dest="sub", required=True)
    p = group.add_parser("add", help="create a client and print its first key")
    p.add_argument("id")
    p.add_argument("--name")
    p.add_argument("--agencies", required=True, help="comma-separated agency codes, or * for all")
    p.add_argument("--roles", default="read_facts", help="comma-separated: read_facts, admin")
    p.add_argument("--rate", type=int, help="requests per minute (default: the gateway's)")
    p.add_argument("--days", type=int, default=365, help="key lifetime in days")
    p.set_defaults(func=cmd_add)
    p = group.add_parser("rotate", help="issue a new key; the client's older keys expire after a grace period")
    p.add_argument("id")
    p.add_argument("--grace-hours", type=int, default=24)
    p.add_argument("--days", type=int, default=365)
    p.set_defaults(func=cmd_rotate)
    p = group.add_parser("list", help="clients, scopes and live keys")
    p.set_defaults(func=cmd_list)
