"""Sync benchmark: N source records from a stand-in on loopback into the store, end to end.

    python bench/sync_bench.py --records 200000            # REST e-office -> SQLite
    python bench/sync_bench.py --records 200000 --postgres  # -> PostgreSQL (KPIGW_TEST_PG_URL or local)
    python bench/sync_bench.py --source soap --records 50000

The stand-in runs in a **separate process** (as a real source would), serving synthetic records generated
lazily by index, so its memory and CPU are not the gateway's. The gateway side is the real pipeline: fetch,
archive, normalize, value, upsert facts, commit cursor per page. The e-office list is read with its activity
log embedded (``kemNhatKy=1``); ``--sub-requests`` instead fetches each document's log with its own request.
Prints progress to stderr and one JSON object with the figures on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_SERVER = """
import sys, time
from gateway.standins.eoffice import EOfficeState, create_eoffice_app
from gateway.standins.server import serve_in_thread
state = EOfficeState(bulk_records=int(sys.argv[1]), bulk_span_days=int(sys.argv[2]), days=1)
server = serve_in_thread(create_eoffice_app(state))
print(server.url, state.password, flush=True)
sys.stdin.read()
"""


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of another process (Linux /proc), or None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of another process (Linux /proc), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def sys_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_source_config(url: str, *, sub_requests: bool) -> Any:
    from gateway.yamlconf import load_yaml, resolve_refs

    path = ROOT / "sources" / "eoffice.yaml"
    data, marks = load_yaml(path)
    data = resolve_refs(data, path=path, marks=marks, env={"EOFFICE_URL": url, "EOFFICE_PASSWORD": "x"})
    stream = data["streams"]["incoming"]
    stream["cursor"]["start"] = "01/01/2000 00:00:00"  # bulk records span the months before the stand-in's start
    if not sub_requests:
        stream["params"] = {"kemNhatKy": "1"}
    data["streams"] = {"incoming": stream}
    return data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--source", choices=["rest", "soap"], default="rest")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--sub-requests", action="store_true")
    parser.add_argument(
        "--uncatalogued-months",
        action="store_true",
        help="spread the records over a year, a third of it before the 2026 catalogs: those records are "
        "quarantined (no catalog in force), as in the figures of the first session",
    )
    args = parser.parse_args()

    from sqlalchemy import text

    from gateway.gctune import tune_for_service
    from gateway.metrics import Metrics
    from gateway.runtime import build_runtime
    from gateway.settings import Settings
    from gateway.sources import SourceSpec

    tmp = Path(tempfile.mkdtemp(prefix="kpigw-bench-"))
    pg_db = None
    if args.postgres:
        import psycopg

        base = os.environ.get("KPIGW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
        pg_db = f"kpigw_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{pg_db}"')
        url = base.rsplit("/", 1)[0] + f"/{pg_db}"
    else:
        url = f"sqlite:///{tmp}/bench.db"

    empty_sources = tmp / "sources"
    empty_sources.mkdir()
    runtime = build_runtime(Settings(database_url=url, sources_dir=empty_sources, scheduler=False),
                            metrics=Metrics())
    tune_for_service(runtime.settings)  # as `kpigw serve` and `kpigw sync` do
    server = None
    try:
        if args.source == "rest":
            span = "365" if args.uncatalogued_months else "230"
            server = subprocess.Popen([sys.executable, "-c", _SERVER, str(args.records), span], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, cwd=ROOT)
            assert server.stdout is not None
            src_url, password = server.stdout.readline().split()
            os.environ["EOFFICE_PASSWORD"] = password
            config = bench_source_config(src_url, sub_requests=args.sub_requests)
            config["auth"]["password"] = password
            from connectors.declarative.config import RestSourceConfig

            rest_config = RestSourceConfig.model_validate(config)
            spec = SourceSpec(name="bench", kind="rest", path=Path("bench"), config=rest_config)
            ctx_cm = None
        else:
            from bench._soap import PACKETS_PER_RECORD, soap_bench_source  # the hub runs in its own process

            ctx_cm = soap_bench_source(args.records)
            config = ctx_cm.__enter__()
            spec = SourceSpec(name="bench", kind="soap", path=Path("bench"), config=config)
        connector = runtime.connector(spec)
        samples: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(1.0):
                samples.append(current_rss_mb())
                print(f"\r  {len(samples)}s  rss {samples[-1]:.0f} MB", end="", file=sys.stderr, flush=True)

        threading.Thread(target=sample, daemon=True).start()
        source_pid = server.pid if server is not None else None
        source_started = process_cpu_seconds(source_pid) if source_pid else None
        started, cpu_started, sys_started = time.perf_counter(), cpu_seconds(), sys_seconds()
        report = runtime.sync.run(connector, trigger="bench")
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        source_ended = process_cpu_seconds(source_pid) if source_pid else None
        preparer = runtime.sync.preparer
        workers = preparer.worker_pids() if preparer is not None else []
        workers_cpu = [process_cpu_seconds(pid) for pid in workers]
        workers_rss = [process_peak_rss_mb(pid) for pid in workers]
        system = sys_seconds() - sys_started
        done.set()
        connector.close()
        if ctx_cm is not None:
            ctx_cm.__exit__(None, None, None)
        with runtime.db.connect() as conn:
            facts = conn.execute(text("SELECT count(*) FROM fact")).scalar_one()
            raw = conn.execute(text("SELECT count(*) FROM raw_record")).scalar_one()
        print(file=sys.stderr)
        quarter = samples[len(samples) // 4] if samples else None
        result = {
            "source": args.source,
            "store": "postgresql" if args.postgres else "sqlite",
            "sub_requests": args.sub_requests,
            "records": report.read,
            "outcome": report.outcome,
            "seconds": round(seconds, 2),
            "records_per_s": round(report.read / seconds, 1),
            "gateway_cpu_s": round(cpu, 2),  # user + system CPU of this process: above "seconds" = parallel work
            "cpu_us_per_record": round(cpu / max(report.read, 1) * 1e6, 1),
            "gateway_sys_s": round(system, 2),  # of which in the kernel (mostly the store's file I/O)
            # the stand-in's own CPU (its process): the share of the machine the gateway cannot have
            "source_cpu_s": None if source_started is None or source_ended is None
            else round(source_ended - source_started, 2),
            "prepare_workers": len(workers),  # processes preparing pages (KPIGW_PREPARE_WORKERS), their CPU:
            "prepare_workers_cpu_s": round(sum(c for c in workers_cpu if c is not None), 2),
            "prepare_workers_peak_rss_mb": [round(r, 1) for r in workers_rss if r is not None],
            "facts": facts,
            "raw_archived": raw,
            "store_path": None if args.postgres else str(tmp / "bench.db"),  # kept: bench/floors.py store-write
            "peak_rss_mb": round(rss_mb(), 1),
            "rss_at_25pct_mb": round(quarter, 1) if quarter else None,
            "rss_at_end_mb": round(samples[-1], 1) if samples else None,
        }
        if args.source == "soap":
            # A SOAP record is one document as the engine reads it: its edXML document packet and its status
            # packets (five each in bulk mode) travel joined in that one record. Say both, so nobody has to guess.
            packets = report.read * PACKETS_PER_RECORD
            result["record_is"] = f"one edXML document with its status packets ({PACKETS_PER_RECORD} packets)"
            result["documents_per_s"] = result["records_per_s"]
            result["packets"] = packets
            result["packets_per_s"] = round(packets / seconds, 1)
        print(json.dumps(result))
    finally:
        runtime.close()
        if server is not None:
            server.kill()
        if pg_db:
            import psycopg

            with psycopg.connect(base, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
