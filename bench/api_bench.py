"""Facts API benchmark on PostgreSQL: >= 1 million facts, 50 concurrent clients, p50/p99 per request kind.

    python bench/api_bench.py [--facts 1000000] [--clients 50] [--seconds 15] [--workers 2]
                              [--database-url postgresql://...]   # default: a fresh database, dropped after

Loads facts and their change feed with COPY (about a minute per million), starts the API in uvicorn worker
processes with an API key, then for each request kind runs ``--clients`` closed-loop clients (no think time)
for ``--seconds`` and reports latency percentiles. Kinds:

- ``facts_page``: ``/v1/facts?agency=A&period=P&limit=500`` (random agency and month);
- ``unit_month_summary``: ``/v1/summaries?agency=A&unit=U&period=P&group_by=person``;
- ``change_feed``: ``/v1/facts/changes?after=T&limit=500`` from a random point of the feed.

``--cpu-per-request N`` replaces the load with N sequential requests per kind and reports the server's and
PostgreSQL's CPU per request (from /proc): steady whatever else the machine runs, and the bound on any
load's throughput (``ceiling_rps``) and on 50 clients' mean latency (``closed_loop_mean_floor_ms``).

The last line printed is one JSON object with every figure. Every request is authenticated, rate-limited
(limit raised for the bench) and audited, exactly as in production.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.store.db import make_engine, migrate  # noqa: E402
from gateway.store.facts import snapshot  # noqa: E402

AGENCIES = [f"AG{i:02d}" for i in range(14)]
UNITS_PER_AGENCY = 20
MONTHS = [f"2026-{m:02d}" for m in range(1, 13)]
PG = os.environ.get("KPIGW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
FACT_COLS = ("id", "fact_key", "item_key", "person_id", "role", "agency", "unit", "period", "product_code",
             "catalog_version", "rule_id", "units_scaled", "quantity_scaled", "assigned", "completed", "due_at",
             "done_at", "on_time", "delays", "failed_reviews", "exempt", "source", "stream", "record_key", "lineage",
             "state", "value_hash", "version", "change_seq", "created_at", "updated_at")
KINDS = ("facts_page", "unit_month_summary", "change_feed")
CHANGE_COLS = ("seq", "fact_id", "fact_key", "op", "agency", "period", "version", "committed_at", "snapshot")


def load(url: str, n: int) -> None:
    rnd = random.Random(7)
    now = datetime(2026, 12, 31, tzinfo=UTC)
    started = time.perf_counter()
    # two connections: one COPY at a time per connection
    with psycopg.connect(url) as conn, psycopg.connect(url) as conn2, conn.cursor() as cur, conn2.cursor() as cur2:
        with cur.copy(f"COPY fact ({', '.join(FACT_COLS)}) FROM STDIN") as fcopy, \
                cur2.copy(f"COPY fact_change ({', '.join(CHANGE_COLS)}) FROM STDIN") as ccopy:
            for i in range(1, n + 1):
                agency = AGENCIES[i % len(AGENCIES)]
                unit = f"{agency}.U{(i // len(AGENCIES)) % UNITS_PER_AGENCY:02d}"
                month = MONTHS[(i // 7) % 12]
                due = datetime(2026, int(month[5:]), rnd.randint(1, 28), 3, tzinfo=UTC)
                late = rnd.random() < 0.15
                done = due + timedelta(days=rnd.randint(1, 9)) if late else due - timedelta(days=rnd.randint(0, 5))
                person = f"{unit}.P{rnd.randint(0, 14):02d}"
                key = f"{agency}:doc{i}|{person}|lead"
                lineage = orjson.dumps({"raw": {"source": "eoffice", "stream": "docs", "record_key": str(i)},
                                        "rule": {"id": "r-doc", "file": "rules/common.yaml", "line": 3},
                                        "person": {"system": "ioffice", "user_id": f"u{i % 9000}",
                                                   "person_id": person}}).decode()  # fmt: skip
                row = {"id": i, "fact_key": key, "item_key": f"{agency}:doc{i}", "person_id": person, "role": "lead",
                       "agency": agency, "unit": unit, "period": month, "product_code": f"P{i % 40}",
                       "catalog_version": "2026.1", "rule_id": "r-doc",
                       "units_scaled": rnd.choice([5000, 10000, 25000]),
                       "quantity_scaled": 10000, "assigned": True, "completed": rnd.random() < 0.9, "due_at": due,
                       "done_at": done, "on_time": not late, "delays": int(late) * rnd.randint(1, 2),
                       "failed_reviews": int(rnd.random() < 0.1), "exempt": rnd.random() < 0.01,
                       "source": "eoffice", "stream": "docs", "record_key": str(i), "lineage": lineage,
                       "state": "active", "value_hash": f"{i:032x}", "version": 1, "change_seq": i,
                       "created_at": now, "updated_at": now}  # fmt: skip
                if not row["completed"]:
                    row.update(done_at=None, on_time=None, delays=0)
                fcopy.write_row([row[c] for c in FACT_COLS])
                ccopy.write_row([i, i, key, "insert", agency, month, 1, now, orjson.dumps(snapshot(row)).decode()])
                if i % 200_000 == 0:
                    print(f"  loaded {i:,} facts ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        conn.commit()
        conn2.commit()
        conn.autocommit = True
        # What autovacuum does to a store that has been running: statistics, and the visibility map that lets
        # a summary answer from ix_fact_summary alone. Without it every index entry of a unit-month also read
        # its heap row (1,191 heap fetches, 2.7 ms instead of 0.95 ms). A bulk COPY is not yet vacuumed, and
        # some servers (this machine's among them) run with autovacuum off, so the bench vacuums itself.
        conn.execute("VACUUM (ANALYZE) fact, fact_change")
        # ... and whose load is checkpointed: the COPY's 2 GB of WAL otherwise forces checkpoints during the
        # first kinds measured, whose I/O stalls every request's durable audit commit (a first run's summary
        # p99 267 ms and once 1.6 s, against 73-94 ms once the checkpoint was done). Needs superuser or
        # pg_checkpoint; without it the first runs carry that stall.
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            print("  CHECKPOINT not permitted: the first kinds may measure the load's checkpoints", file=sys.stderr)
    print(f"  loaded {n:,} facts + changes in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def app_factory() -> object:
    """uvicorn ``--factory`` entry for the worker processes (settings from the environment)."""
    from gateway.api import create_app
    from gateway.api.cache import DEFAULT_MAX_BYTES
    from gateway.gctune import tune_for_service
    from gateway.runtime import build_runtime
    from gateway.settings import Settings

    cache_bytes = int(os.environ.get("KPIGW_BENCH_RESPONSE_CACHE_BYTES", DEFAULT_MAX_BYTES))
    runtime = build_runtime(Settings(scheduler=False))
    app = create_app(runtime, start_scheduler=False, response_cache_bytes=cache_bytes)
    tune_for_service(runtime.settings)  # as `kpigw serve` does
    return app


def serve_one(port: int, app: Any = app_factory, *, factory: bool = True) -> None:
    """One API process (or ``app``) on its own ``SO_REUSEPORT`` socket (see ``--balance``)."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(app, factory=factory, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def _start_servers(balance: str, workers: int, port: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    if balance == "shared":
        return [subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.api_bench:app_factory", "--factory", "--port", str(port),
             "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=env,
        )]  # fmt: skip
    return [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-one", "--port", str(port)],
                             cwd=ROOT, env=env) for _ in range(workers)]  # fmt: skip


def _wait_healthy(base: str, servers: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200 and all(s.poll() is None for s in servers):
                time.sleep(1.0)  # every process listening, not only the first
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or any(s.poll() is not None for s in servers):
            raise SystemExit("the API did not start")
        time.sleep(0.2)


def _token(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


class _StdlibGet:
    """GET over one keep-alive ``http.client`` connection; reads the whole body, returns the status.

    The load generator shares the 2 cores with the server and PostgreSQL: httpx (pure-Python h11, 50 threads)
    spent ~5 ms of CPU per 500 KB response, as much as the server's own work, so it measured itself as much as
    the API. ``http.client`` reads a body with a few C-level reads. ``--http-client httpx`` keeps the old one."""

    def __init__(self, base: str, key: str) -> None:
        host, _, port = base.removeprefix("http://").partition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = {"X-API-Key": key}

    def __call__(self, path: str) -> tuple[int, str | None]:
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        response.read()
        return response.status, response.getheader("X-KPIGW-Cache")

    def close(self) -> None:
        self.conn.close()


class _HttpxGet:
    def __init__(self, base: str, key: str) -> None:
        # keep-alive, as a scoring front end would (the 40 ms delayed-ACK stall was the stand-in server's
        # pre-bound socket missing TCP_NODELAY; uvicorn binding its own socket is not affected)
        self.http = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30)

    def __call__(self, path: str) -> tuple[int, str | None]:
        response = self.http.get(path)
        return response.status_code, response.headers.get("X-KPIGW-Cache")

    def close(self) -> None:
        self.http.close()


def _path(kind: str, rnd: random.Random, n: int) -> str:
    """A random request of ``kind``: a random agency and month, unit, or point of the feed."""
    agency, month = rnd.choice(AGENCIES), rnd.choice(MONTHS)
    if kind == "facts_page":
        return f"/v1/facts?agency={agency}&period={month}&limit=500"
    if kind == "unit_month_summary":
        unit = f"{agency}.U{rnd.randrange(UNITS_PER_AGENCY):02d}"
        return f"/v1/summaries?agency={agency}&unit={unit}&period={month}&group_by=person"
    return f"/v1/facts/changes?after={_token('seq', rnd.randrange(n - 500))}&limit=500"


_WRK_SCRIPT = """
local paths, key = {%(paths)s}, "%(key)s"
local counter = 0
function setup(thread) counter = counter + 1; thread:set("tid", counter) end
function init(args) math.randomseed(%(seed)d + (tid or 0)) end
request = function() return wrk.format("GET", paths[math.random(#paths)], {["X-API-Key"] = key}) end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %%d %%d %%d %%d %%d\\n", summary.requests, latency:percentile(50),
                         latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def run_kind_wrk(base: str, key: str, kind: str, clients: int, seconds: float, n: int) -> dict[str, Any]:
    """The same closed-loop load from ``wrk`` (C, epoll): the load generator then costs the shared CPUs almost
    nothing, so the figures are the API's. Same URLs, key and request mix as :func:`run_kind`."""
    rnd = random.Random(11)
    paths = ", ".join(f'"{_path(kind, rnd, n)}"' for _ in range(20_000))
    script = Path(tempfile.mkdtemp(prefix="kpigw-wrk-")) / f"{kind}.lua"
    script.write_text(_WRK_SCRIPT % {"paths": paths, "key": key, "seed": 11})
    out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
                          "-s", str(script), base], capture_output=True, text=True, check=True)  # fmt: skip
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    requests, p50_us, p99_us, non_2xx, socket_errors = (int(v) for v in line.split()[1:])
    return {"requests": requests, "errors": non_2xx + socket_errors, "rps": round(requests / seconds, 1),
            "p50_ms": round(p50_us / 1000, 1), "p99_ms": round(p99_us / 1000, 1)}


def run_kind(base: str, key: str, kind: str, clients: int, seconds: float, n: int,
             http_client: str = "stdlib") -> dict[str, float]:  # fmt: skip
    latencies: list[float] = []
    errors = [0]
    outcomes: collections.Counter[str] = collections.Counter()  # X-KPIGW-Cache: hit / miss (none: not cached)
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rnd = random.Random(seed)
        mine: list[float] = []
        get: _StdlibGet | _HttpxGet = _StdlibGet(base, key) if http_client == "stdlib" else _HttpxGet(base, key)
        try:
            while time.monotonic() < stop:
                t = time.perf_counter()
                status, cached = get(_path(kind, rnd, n))
                mine.append(time.perf_counter() - t)
                with lock:
                    errors[0] += status != 200
                    outcomes[cached or "none"] += 1
        finally:
            get.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(latencies) < 2:
        return {"requests": len(latencies), "errors": errors[0], "rps": 0.0, "p50_ms": -1.0, "p99_ms": -1.0}
    q = statistics.quantiles(latencies, n=100)
    looked_up = outcomes["hit"] + outcomes["miss"]
    return {"requests": len(latencies), "errors": errors[0], "rps": round(len(latencies) / seconds, 1),
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "cache_hit_rate": round(outcomes["hit"] / looked_up, 3) if looked_up else None}  # fmt: skip


def _cpu_seconds(pids: list[int], fields: tuple[int, ...] = (11, 12)) -> float:
    """utime + stime (or the fields given) of ``pids`` from /proc, in seconds; vanished processes count 0."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        values = stat[stat.rindex(")") + 2 :].split()
        total += sum(int(values[i]) for i in fields)
    return total / os.sysconf("SC_CLK_TCK")


def _pids(*, comm: str | None = None, parents: set[int] | None = None) -> list[int]:
    """Processes named ``comm``, or ``parents`` and their children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, ppid = stat[stat.index("(") + 1 : stat.rindex(")")], int(stat[stat.rindex(")") + 2 :].split()[1])
        pid = int(entry.name)
        if (comm is not None and name == comm) or (parents is not None and (pid in parents or ppid in parents)):
            found.append(pid)
    return found


def _own_backends(url: str) -> list[int]:
    """The PostgreSQL client backends connected to the bench's database (the API's pooled connections)."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchall()
    return [pid for (pid,) in rows]


def cpu_per_request(base: str, key: str, kind: str, n: int, facts: int, servers: list[int],
                    cpus: int, clients: int, url: str) -> dict[str, float]:  # fmt: skip
    """CPU per request of ``kind``, measured without contention: ``n`` sequential requests on one keep-alive
    connection, the server processes' and PostgreSQL's CPU read from /proc before and after.

    Unlike a latency percentile under saturation, this hardly moves with what else the machine runs, and it
    bounds what any load can get: ``cpus / (server + postgres CPU)`` requests per second at most, so 50
    closed-loop clients wait at least ``clients / that`` per request on average (Little's law).

    ``postgres_cpu_ms`` is every PostgreSQL process (WAL writer, autovacuum and other databases' work
    included); ``postgres_backends_cpu_ms`` only the API's own backends, the queries themselves, which other
    load on the server (a sync benchmark, autovacuum) does not move."""
    get = _StdlibGet(base, key)
    rnd = random.Random(5)
    try:
        for _ in range(50):  # warm-up: connections, caches, statement caches
            get(_path(kind, rnd, facts))
        server_pids, pg_pids, own_pids = _pids(parents=set(servers)), _pids(comm="postgres"), _own_backends(url)
        before = (_cpu_seconds(server_pids), _cpu_seconds(server_pids, (12,)), _cpu_seconds(pg_pids),
                  _cpu_seconds(own_pids))
        started = time.perf_counter()
        for _ in range(n):
            status, _cached = get(_path(kind, rnd, facts))
            if status != 200:
                raise SystemExit(f"{kind}: HTTP {status}")
        wall = time.perf_counter() - started
        after = (_cpu_seconds(server_pids), _cpu_seconds(server_pids, (12,)), _cpu_seconds(pg_pids),
                 _cpu_seconds(own_pids))
    finally:
        get.close()
    server, kernel, pg, own = ((a - b) * 1000 / n for a, b in zip(after, before, strict=True))
    ceiling = cpus / ((server + pg) / 1000) if server + pg > 0 else float("inf")
    return {"requests": n, "server_cpu_ms": round(server, 2), "of_which_kernel_ms": round(kernel, 2),
            "postgres_cpu_ms": round(pg, 2), "postgres_backends_cpu_ms": round(own, 2),
            "wall_ms": round(wall * 1000 / n, 2), "ceiling_rps": round(ceiling, 1),
            "closed_loop_mean_floor_ms": round(clients / ceiling * 1000, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--database-url", help="an existing database, empty or loaded by an earlier --keep run "
                        "(default: a fresh one, dropped after)")
    parser.add_argument("--keep", action="store_true", help="keep the fresh database and print its URL (iterate)")
    parser.add_argument("--http-client", choices=("wrk", "stdlib", "httpx"),
                        default="wrk" if shutil.which("wrk") else "stdlib",
                        help="the load generator: wrk (C; default when installed), or Python threads with "
                        "http.client (stdlib) or httpx, which cost the shared CPUs far more")
    parser.add_argument("--balance", choices=("reuseport", "shared"), default="reuseport",
                        help="reuseport: one uvicorn process per worker, each on its own SO_REUSEPORT socket, so the "
                        "kernel spreads connections evenly (as a Service spreads them over replicas); shared: "
                        "`uvicorn --workers N` on one socket (keep-alive clients landed 41/9 on two workers)")
    parser.add_argument("--cpu-per-request", type=int, metavar="N", default=0,
                        help="instead of the load: N sequential requests per kind, and the server's and PostgreSQL's "
                        "CPU per request (Linux /proc): what bounds the throughput on this machine")
    parser.add_argument("--serve-one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-cache", action="store_true", help="turn the API's response cache off (uncached figures)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated request kinds to run")
    args = parser.parse_args()
    if args.serve_one:
        serve_one(args.port)
        return

    name = None
    url = args.database_url
    if url is None:
        name = f"kpigw_api_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = PG.rsplit("/", 1)[0] + "/" + name
    servers: list[subprocess.Popen[bytes]] = []
    try:
        engine = make_engine(url)
        migrate(engine)
        with engine.connect() as conn:
            present = conn.execute(text("SELECT count(*) FROM fact")).scalar_one()
        if present == 0:
            load(url, args.facts)
        elif present != args.facts:
            raise SystemExit(f"{url} holds {present:,} facts, not --facts {args.facts:,}")
        else:
            print(f"  reusing {present:,} facts at {url}", file=sys.stderr, flush=True)
        from gateway.store import clients

        client_id = f"bench-{uuid.uuid4().hex[:6]}"  # one per run: a reused database keeps earlier clients
        with engine.begin() as conn:
            clients.create_client(conn, client_id=client_id, name="bench", agencies=["*"], roles=["read_facts"],
                                  rate_per_minute=10_000_000, now=datetime.now(UTC))  # fmt: skip
            key = clients.issue_key(conn, client_id=client_id, now=datetime.now(UTC))[1]
        engine.dispose()
        env = {**os.environ, "KPIGW_DATABASE_URL": url, "KPIGW_SOURCES_DIR": tempfile.mkdtemp(),
               "KPIGW_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}  # fmt: skip
        if args.no_cache:
            env["KPIGW_BENCH_RESPONSE_CACHE_BYTES"] = "0"
        servers = _start_servers(args.balance, args.workers, args.port, env)
        base = f"http://127.0.0.1:{args.port}"
        _wait_healthy(base, servers)
        results: dict[str, object] = {"facts": args.facts, "clients": args.clients, "seconds": args.seconds,
                                      "workers": args.workers, "balance": args.balance, "cpus": os.cpu_count(),
                                      "http_client": args.http_client, "response_cache": not args.no_cache}  # fmt: skip
        for kind in args.kinds.split(","):
            if args.cpu_per_request:
                pids = [server.pid for server in servers]
                results[kind] = cpu_per_request(base, key, kind, args.cpu_per_request, args.facts, pids,
                                                os.cpu_count() or 1, args.clients, url)  # fmt: skip
                print(f"  {kind}: {results[kind]}", file=sys.stderr, flush=True)
                continue
            if args.http_client == "wrk":
                run_kind_wrk(base, key, kind, args.clients, 2, args.facts)  # warm-up
                results[kind] = run_kind_wrk(base, key, kind, args.clients, args.seconds, args.facts)
                continue
            run_kind(base, key, kind, args.clients, 2, args.facts, args.http_client)  # warm-up
            results[kind] = run_kind(base, key, kind, args.clients, args.seconds, args.facts, args.http_client)
            print(f"  {kind}: {results[kind]}", file=sys.stderr, flush=True)
        if not args.cpu_per_request:
            results["target_p99_ms"] = 100
        print(json.dumps(results))
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(10)
        if name is not None and args.keep:
            print(f"  kept {url}", file=sys.stderr, flush=True)
        elif name is not None:
            with psycopg.connect(PG, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
