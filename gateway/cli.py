"""``kpigw``: the command line. Each sub-command builds what it needs from settings, in one place."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.gctune import tune_for_service


def _runtime(args: argparse.Namespace) -> Any:
    from gateway.runtime import build_runtime
    from gateway.settings import Settings

    overrides: dict[str, Any] = {}
    for key in ("database_url", "sources_dir", "mappings_dir"):
        if getattr(args, key, None):
            overrides[key] = getattr(args, key)
    return build_runtime(Settings(**overrides))


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    print("Starting the KPI gateway demo: stand-in systems, SQLite store, first sync ...", flush=True)
    run_demo(port=args.port, host=args.host, database=Path(args.db).resolve())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.api import create_app

    runtime = _runtime(args)
    try:
        app = create_app(runtime)
        tune_for_service(runtime.settings)
        uvicorn.run(app, host=args.host or runtime.settings.host, port=args.port or runtime.settings.port,
                    log_level="warning")  # fmt: skip
    finally:
        runtime.close()
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from gateway.sync.scheduler import run_leased

    runtime = _runtime(args)
    tune_for_service(runtime.settings)
    try:
        connector = runtime.connector(args.source)
        try:
            report = run_leased(engine=runtime.sync, db=runtime.db, connector=connector, trigger="manual",
                                holder=f"cli:{runtime.settings.replica_id}:{os.getpid()}", streams=args.stream or None,
                                lease_seconds=runtime.settings.lease_seconds, wait_for_lease=args.wait)  # fmt: skip
        finally:
            connector.close()
        for s in report.streams:
            line = (f"{s.stream}: {s.pages} pages, {s.read} read, {s.mapped} mapped, {s.unmatched} unmatched, "
                    f"{s.quarantined} quarantined, {s.facts_written} facts written, {s.facts_retracted} retracted")
            print(line + (f"  ERROR {s.error_kind}: {s.error}" if s.error else ""))
        print(f"run {report.run_id}: {report.outcome} in {report.seconds:.2f}s")
        return 0 if report.outcome != "failed" else 1
    finally:
        runtime.close()


def cmd_sources_list(args: argparse.Namespace) -> int:
    runtime = _runtime(args)
    try:
        for name, spec in sorted(runtime.sources.items()):
            print(f"{name}\t{spec.kind}\tevery {spec.interval:g}s\t{spec.path}")
        return 0
    finally:
        runtime.close()


def cmd_sources_check(args: argparse.Namespace) -> int:
    runtime = _runtime(args)
    try:
        connector = runtime.connector(args.source)
        try:
            result = connector.check()
        except GatewayError as exc:
            print(f"FAILED ({type(exc).__name__}): {exc}")
            return 1
        finally:
            connector.close()
        print(("OK: " if result.ok else "FAILED: ") + result.detail)
        return 0 if result.ok else 1
    finally:
        runtime.close()


def cmd_sources_preview(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    runtime = _runtime(args)
    try:
        connector = runtime.connector(args.source)
        shown = 0
        try:
            stream = args.stream or connector.streams()[0]
            for page in connector.read(stream, None):
                for record in page.records:
                    try:
                        items = [asdict(i) for i in connector.normalize(record)]
                        out: Any = {"key": record.key, "work_items": items}
                    except GatewayError as exc:
                        out = {"key": record.key, "error": str(exc)}
                    print(json.dumps(out, ensure_ascii=False, default=str, indent=2))
                    shown += 1
                    if shown >= args.limit:
                        return 0
                for problem in page.problems:
                    print(json.dumps({"key": problem.key, "problem": problem.reason}, ensure_ascii=False))
        except GatewayError as exc:
            print(f"FAILED ({type(exc).__name__}): {exc}")
            return 1
        finally:
            connector.close()
        return 0
    finally:
        runtime.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    from gateway.settings import Settings
    from gateway.store import make_engine, migrate

    url = args.database_url or Settings().database_url
    version = migrate(make_engine(url))
    print(f"schema at version {version}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kpigw", description="KPI gateway (Decree 335/2025)")
    parser.add_argument("--database-url", help="store URL (default: $KPIGW_DATABASE_URL or sqlite:///./kpigw.db)")
    parser.add_argument("--sources-dir", type=Path, help="directory of source YAML files")
    parser.add_argument("--mappings-dir", type=Path, help="directory of mapping files")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the gateway with the bundled stand-in systems and a SQLite store")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--db", default="kpigw-demo.db", help="SQLite file for the demo store")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="run the API and the scheduler")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("sync", help="sync one source now")
    p.add_argument("source")
    p.add_argument("--stream", action="append", help="only this stream (repeatable)")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for a replica's run of the source to end (default: one lease period)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("migrate", help="apply store migrations")
    p.set_defaults(func=cmd_migrate)

    sources = sub.add_parser("sources", help="inspect configured sources").add_subparsers(dest="sub", required=True)
    p = sources.add_parser("list", help="configured sources")
    p.set_defaults(func=cmd_sources_list)
    p = sources.add_parser("check", help="connectivity and credentials of a source")
    p.add_argument("source")
    p.set_defaults(func=cmd_sources_check)
    p = sources.add_parser("preview", help="first records of a source, normalized")
    p.add_argument("source")
    p.add_argument("--stream")
    p.add_argument("--limit", type=int, default=5)
    p.set_defaults(func=cmd_sources_preview)

    from gateway.ops.cli import register as register_ops

    register_ops(sub, sources, _runtime)
    _register_optional(sub)
    return parser


def _register_optional(sub: Any) -> None:
    """Command groups owned by their packages register themselves here."""
    from gateway.mapping.cli import register as register_mappings
    from gateway.security.cli import register as register_clients

    register_mappings(sub)
    register_clients(sub)


class _AnyEnv(dict[str, str]):
    """Environment stand-in for loading a source only to normalize: every variable 'exists' and is empty."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return ""


def _mapping_context(args: argparse.Namespace, settings: Any) -> Any:
    """What the mapping commands need, built lazily: nothing connects or reads sources unless a command asks."""
    from gateway.connector import ConnectorContext
    from gateway.mapping.cli import MappingCliContext
    from gateway.sources import load_sources
    from gateway.store import make_engine, migrate

    database_url = args.database_url or settings.database_url
    sources_dir = args.sources_dir or settings.sources_dir

    def engine_factory() -> Any:
        engine = make_engine(database_url)
        migrate(engine)
        return engine

    def normalizer_for(source: str) -> Any:
        # normalizing archived records needs the source's field map, never its network or credentials
        from gateway.retry import RetryPolicy

        spec = load_sources(sources_dir, env=_AnyEnv())[source]

        def no_network(**_kwargs: Any) -> Any:
            raise GatewayError(f"re-mapping never calls the source {source!r}")

        from datetime import UTC, datetime

        context = ConnectorContext(http_client=no_network, retry=RetryPolicy.instant(), now=lambda: datetime.now(UTC),
                                   secrets=lambda name: "", config_dir=sources_dir)
        return spec.build(context).normalize

    return MappingCliContext(mappings_dir=args.mappings_dir or settings.mappings_dir, engine_factory=engine_factory,
                             normalizer_for=normalizer_for)


def main(argv: Sequence[str] | None = None) -> int:
    from gateway import logs
    from gateway.settings import Settings

    args = build_parser().parse_args(argv)
    settings = Settings()
    logs.configure(settings.log_level, json=settings.log_json)
    args.ctx = _mapping_context(args, settings)
    try:
        return int(args.func(args))
    except GatewayError as exc:
        print(f"kpigw: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
