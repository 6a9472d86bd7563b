"""Floors: what the two unmet targets would cost with most of the gateway taken away, on this machine.

    python bench/floors.py store-write --store /tmp/kpigw-bench-XXXX/bench.db
    python bench/floors.py feed --database-url postgresql://.../kpigw_api_bench_XXXX

``store-write`` takes a store that ``sync_bench.py`` wrote (its ``store_path``) and writes the same rows into
a fresh store with the gateway's schema and SQLite settings: raw records, work items, facts and change-feed
rows, one transaction per source page, in the order the sync wrote them, with plain ``executemany`` and no
reading, planning, fetching, normalizing or valuing. That is less than the sync's store transaction can ever
cost, so ``1e6 / wall_us_per_record`` bounds any sync into one SQLite file on this machine (SQLite has one
writer). Variants drop what a leaner schema might drop: the change-feed snapshots, and the raw archive with the
work items.

``feed`` serves the change feed's URLs (those of ``api_bench.py``) from a bare ASGI app in uvicorn (one process per
worker on its own ``SO_REUSEPORT`` socket, as ``api_bench.py`` runs the API), with no framework, authentication,
rate limit, audit entry or middleware, to the same 50 ``wrk`` clients:

- ``rows``: the API's own ``list_changes`` and ``orjson`` body, on the gateway's engine;
- ``snapshots``: only the stored fact snapshots, read with psycopg and joined: the least any server that keeps
  the feed in PostgreSQL must do (the items' other members left out).

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WRITTEN = {"raw_record": "id", "work_item": "rowid", "fact": "id", "fact_change": "seq"}


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def store_write(source: Path, variant: str, pages: int | None) -> dict[str, Any]:
    import sqlite3
    import tempfile

    from gateway.store.db import make_engine, migrate

    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    tables: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    for table, order in WRITTEN.items():
        if variant == "facts-and-changes" and table in ("raw_record", "work_item"):
            continue
        columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
        rows = src.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}").fetchall()
        if variant == "no-snapshots" and table == "fact_change":
            at = columns.index("snapshot")
            rows = [(*r[:at], "", *r[at + 1 :]) for r in rows]
        tables[table] = (columns, rows)
    records = src.execute("SELECT count(*) FROM raw_record").fetchone()[0]
    page_count = pages or src.execute("SELECT coalesce(sum(pages), 1) FROM sync_run").fetchone()[0]
    src.close()

    target = Path(tempfile.mkdtemp(prefix="kpigw-floor-")) / "floor.db"
    engine = make_engine(f"sqlite:///{target}")  # the gateway's pragmas: 8 KiB pages, WAL, cache, temp store
    migrate(engine)
    raw = engine.raw_connection()
    conn = raw.driver_connection
    assert conn is not None
    inserts = {t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join('?' * len(c))})"
               for t, (c, _) in tables.items()}  # fmt: skip
    user0, sys0 = _cpu()
    started = time.perf_counter()
    for page in range(page_count):
        conn.execute("BEGIN IMMEDIATE")
        for table, (_, rows) in tables.items():
            first, end = len(rows) * page // page_count, len(rows) * (page + 1) // page_count
            conn.executemany(inserts[table], rows[first:end])
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # what the checkpointer thread does during a sync, all of it
    wall = time.perf_counter() - started
    user1, sys1 = _cpu()
    raw.close()
    engine.dispose()
    size_mb = target.stat().st_size / 2**20
    for path in target.parent.iterdir():
        path.unlink()
    target.parent.rmdir()
    per = 1e6 / max(records, 1)
    return {"variant": variant, "records": records, "pages": page_count,
            "rows": {t: len(r) for t, (_, r) in tables.items()},
            "wall_us_per_record": round(wall * per, 1), "user_us_per_record": round((user1 - user0) * per, 1),
            "sys_us_per_record": round((sys1 - sys0) * per, 1), "store_mb": round(size_mb, 1),
            "records_per_s_at_most": round(records / wall, 1)}  # fmt: skip


# --- feed: a bare ASGI app (uvicorn imports this module in each worker process) ---------------------------

_pool = ThreadPoolExecutor(3)  # as the API's api_read_concurrency
_local = threading.local()


def _feed_page(after: int, limit: int) -> bytes:
    import orjson

    mode, url = os.environ["KPIGW_FLOOR_MODE"], os.environ["KPIGW_FLOOR_DB"]
    if mode == "snapshots":
        import psycopg

        conn = getattr(_local, "pg", None)
        if conn is None:
            conn = _local.pg = psycopg.connect(url, autocommit=True)
        rows = conn.execute("SELECT snapshot FROM fact_change WHERE seq > %s ORDER BY seq LIMIT %s",
                            (after, limit)).fetchall()  # fmt: skip
        return b'{"items":[' + ",".join([r[0] for r in rows]).encode() + b'],"next":null,"has_more":true}'
    from gateway.api.facts import encode_token, list_changes
    from gateway.security.principal import Scope
    from gateway.store.db import make_engine

    engine = getattr(_local, "engine", None)
    if engine is None:
        engine = _local.engine = make_engine(url, pool_size=1)
    with engine.connect() as sa_conn:
        sa_conn.execution_options(isolation_level="AUTOCOMMIT")
        items, token, more = list_changes(sa_conn, scope=Scope(None), after=encode_token("seq", after), limit=limit)
    return orjson.dumps({"items": items, "next": token, "has_more": more})


async def feed_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    import asyncio
    from urllib.parse import parse_qs

    from gateway.api.facts import decode_token

    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode())
    after = decode_token(query["after"][0], "seq") if "after" in query else 0
    body = await asyncio.get_running_loop().run_in_executor(_pool, _feed_page, after, int(query["limit"][0]))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def feed(url: str, mode: str, clients: int, seconds: float, workers: int, port: int) -> dict[str, Any]:
    import httpx
    import psycopg

    from bench.api_bench import run_kind_wrk

    with psycopg.connect(url) as conn:
        (changes,) = conn.execute("SELECT count(*) FROM fact_change").fetchone() or (0,)
    env = {**os.environ, "KPIGW_FLOOR_MODE": mode, "KPIGW_FLOOR_DB": url}
    # one process per worker on its own SO_REUSEPORT socket, as api_bench.py runs the API
    servers = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "serve-feed", "--port", str(port)],
                                cwd=ROOT, env=env) for _ in range(workers)]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/v1/facts/changes?limit=1", timeout=5).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(1.0)  # every process listening, not only the first
        figures = run_kind_wrk(base, "unused", "change_feed", clients, seconds, changes)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    return {"mode": mode, "changes": changes, "clients": clients, "workers": workers, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="floor", required=True)
    store = sub.add_parser("store-write", help="the SQLite store's writes alone")
    store.add_argument("--store", type=Path, required=True, help="a store sync_bench.py wrote (its store_path)")
    store.add_argument("--pages", type=int, help="transactions (default: the pages its sync committed)")
    store.add_argument("--variants", default="as-stored,no-snapshots,facts-and-changes")
    api = sub.add_parser("feed", help="the change feed without the API around it")
    api.add_argument("--database-url", required=True, help="a store api_bench.py --keep loaded")
    api.add_argument("--modes", default="rows,snapshots")
    api.add_argument("--clients", type=int, default=50)
    api.add_argument("--seconds", type=float, default=15)
    api.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    api.add_argument("--port", type=int, default=8766)
    serve = sub.add_parser("serve-feed", help=argparse.SUPPRESS)
    serve.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.floor == "serve-feed":
        from bench.api_bench import serve_one

        serve_one(args.port, feed_app, factory=False)
        return
    results = []
    if args.floor == "store-write":
        for variant in args.variants.split(","):
            results.append(store_write(args.store, variant, args.pages))
            print(f"  {results[-1]}", file=sys.stderr, flush=True)
    else:
        for mode in args.modes.split(","):
            results.append(feed(args.database_url, mode, args.clients, args.seconds, args.workers, args.port))
            print(f"  {results[-1]}", file=sys.stderr, flush=True)
    print(json.dumps({"floor": args.floor, "cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
