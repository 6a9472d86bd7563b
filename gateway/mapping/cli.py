"""``kpigw mappings ...`` and ``kpigw remap``: the authoring and re-mapping commands.

The gateway's CLI calls :func:`register` with its sub-parsers and puts a :class:`MappingCliContext` on
``args.ctx``; handlers take their engine, mappings directory and normalizers from it (nothing is built here).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy

from gateway.errors import ConfigError
from gateway.types import SourceRecord, WorkItem


@dataclass(frozen=True)
class MappingCliContext:
    mappings_dir: Path
    engine_factory: Callable[[], sqlalchemy.Engine]
    normalizer_for: Callable[[str], Callable[[SourceRecord], Sequence[WorkItem]]]


def _ctx(args: argparse.Namespace) -> MappingCliContext:
    ctx = getattr(args, "ctx", None)
    if not isinstance(ctx, MappingCliContext):
        raise ConfigError("internal: the CLI did not provide a MappingCliContext on args.ctx")
    return ctx


def _dir(args: argparse.Namespace) -> Path:
    if getattr(args, "dir", None):
        return Path(args.dir)
    ctx = getattr(args, "ctx", None)
    if isinstance(ctx, MappingCliContext):
        return ctx.mappings_dir
    return Path(getattr(args, "mappings_dir", None) or "mappings")


def _print(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.mapping.check import check_mappings

    report = check_mappings(_dir(args))
    for line in report.errors:
        print(f"error: {line}")
    for line in report.warnings:
        print(f"warning: {line}")
    if report.mappings is not None:
        ms = report.mappings
        print(f"mappings {ms.version}: {len(ms.rule_files)} rule files, "
              f"{sum(len(h.versions) for h in ms.catalogs.values())} catalog versions, "
              f"{len(ms.directory)} people, agencies {', '.join(ms.agencies)}")  # fmt: skip
    failed = bool(report.errors) or (args.strict and bool(report.warnings))
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


def cmd_test(args: argparse.Namespace) -> int:
    from gateway.mapping.check import run_examples
    from gateway.mapping.mappingset import load_mappings

    results = run_examples(load_mappings(_dir(args)))
    for result in results:
        print(f"{'ok  ' if result.ok else 'FAIL'} {result.file}: {result.name}")
        for failure in result.failures:
            print(f"       {failure}")
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from gateway.mapping.explain import explain_fact, explain_record
    from gateway.mapping.mappingset import load_mappings

    ctx = _ctx(args)
    mappings = load_mappings(ctx.mappings_dir)
    with ctx.engine_factory().connect() as conn:
        if args.record:
            source, _, rest = args.record.partition("/")
            stream, _, key = rest.partition("/")
            if not (source and stream and key):
                raise ConfigError(f"--record {args.record!r}: give SOURCE/STREAM/KEY")
            out = explain_record(conn, mappings, ctx.normalizer_for(source), source, stream, key)
        elif args.fact_id is not None:
            out = explain_fact(conn, args.fact_id, mappings=mappings)
        else:
            raise ConfigError("give a FACT_ID or --record SOURCE/STREAM/KEY")
    if not out:
        print("not found")
        return 1
    _print(out)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from gateway.mapping.schema import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return 0


def cmd_coverage(args: argparse.Namespace) -> int:
    from gateway.mapping.coverage import coverage

    ctx = _ctx(args)
    with ctx.engine_factory().connect() as conn:
        report = coverage(conn, source=args.source, top=args.top)
    if args.json:
        _print(report)
        return 0
    print(f"{'agency':<12} {'source':<16} {'items':>8} {'mapped':>8} {'partial':>8} {'unmatched':>9} {'share':>7}")
    for r in report["by_agency_source"]:
        print(f"{r['agency']:<12} {r['source']:<16} {r['total']:>8} {r['mapped']:>8} {r['partial']:>8} "
              f"{r['unmatched']:>9} {r['mapped_share']:>7.1%}")  # fmt: skip
    print("\nmost frequent unmatched patterns:")
    for p in report["unmatched_patterns"]:
        print(f"  {p['count']:>6}  {p['pattern']}")
    print("\nunresolved people (work items blocked):")
    for p in report["unresolved_people"]:
        print(f"  {p['work_items']:>6}  {p['who']}")
    return 0


def cmd_remap(args: argparse.Namespace) -> int:
    from gateway.mapping.mappingset import load_mappings
    from gateway.mapping.remap import remap

    ctx = _ctx(args)
    mappings = load_mappings(ctx.mappings_dir)
    engine = ctx.engine_factory()
    now = datetime.now(UTC)
    with engine.connect() as conn:  # the dry run: reads only
        report = remap(conn, mappings=mappings, normalizer_for=ctx.normalizer_for, source=args.source, now=now)
    print(f"mappings {mappings.version}: {report.records} records, {report.normalize_failed} failed to normalize, "
          f"{report.unmatched} unmatched items, {report.quarantine} items with quarantine problems")  # fmt: skip
    print(f"{'agency':<12} {'added':>8} {'changed':>8} {'retracted':>9} {'unchanged':>9}")
    for agency, d in sorted(report.per_agency.items()):
        print(f"{agency:<12} {d.added:>8} {d.changed:>8} {d.retracted:>9} {d.unchanged:>9}")
    for line in report.examples:
        print(f"  {line}")
    if not args.apply:
        print("dry run: nothing written (use --apply)")
        return 0
    with engine.begin() as conn:  # one transaction: all or nothing
        applied = remap(conn, mappings=mappings, normalizer_for=ctx.normalizer_for, source=args.source,
                        apply=True, now=now)  # fmt: skip
    touched = sum(d.touched for d in applied.per_agency.values())
    print(f"applied: {touched} facts written or retracted in one transaction")
    return 0


def cmd_import_catalog(args: argparse.Namespace) -> int:
    from gateway.mapping.catalog_io import catalog_yaml, import_catalog

    spec = import_catalog(
        Path(args.file), agency=args.agency, version=args.version,
        effective_from=date.fromisoformat(args.effective_from),
        standard_score=Decimal(args.standard_score) if args.standard_score else None,
        standard_product=args.standard_product, sheet=args.sheet, approved_by=args.approved_by,
    )  # fmt: skip
    out = Path(args.out) if args.out else _dir(args) / "catalogs" / spec.agency / f"{spec.version}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(catalog_yaml(spec), encoding="utf-8")
    print(f"{len(spec.products)} products -> {out}; run `kpigw mappings check` next")
    return 0


def cmd_export_catalog(args: argparse.Namespace) -> int:
    from gateway.mapping.catalog_io import export_catalog
    from gateway.mapping.mappingset import load_mappings

    ms = load_mappings(_dir(args))
    history = ms.catalogs.get(args.agency)
    if history is None:
        raise ConfigError(f"no catalog for agency {args.agency}")
    catalog = next((c for c in history.versions if c.version == args.version), None) if args.version else (
        history.versions[-1])  # fmt: skip
    if catalog is None:
        raise ConfigError(f"{args.agency} has no catalog version {args.version}")
    export_catalog(catalog.to_spec(), Path(args.out))
    print(f"{args.agency} {catalog.version}: {len(catalog.products)} products -> {args.out}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``mappings ...`` and ``remap`` to the gateway's argparse sub-parsers."""
    group = subparsers.add_parser("mappings", help="check, test, explain and export the mapping files")
    sub = group.add_subparsers(dest="mappings_command", required=True)

    p = sub.add_parser("check", help="validate every mapping file; rule reachability; catalog frames")
    p.add_argument("dir", nargs="?", help="mappings directory (default: the configured one)")
    p.add_argument("--strict", action="store_true", help="fail on warnings too")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("test", help="run the examples inside the rule files")
    p.add_argument("dir", nargs="?")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("explain", help="which rule, catalog version and person resolution produced a fact")
    p.add_argument("fact_id", nargs="?", type=int)
    p.add_argument("--record", metavar="SOURCE/STREAM/KEY", help="explain a raw record instead")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("schema", help="write the JSON Schemas of the mapping files (for editors)")
    p.add_argument("--out", default="schemas")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("coverage", help="share of work items mapped, unmatched patterns, unresolved people")
    p.add_argument("--source")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_coverage)

    p = sub.add_parser("import-catalog", help="turn an agency's catalog spreadsheet (XLSX/CSV) into catalog YAML")
    p.add_argument("file")
    p.add_argument("--agency", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--effective-from", required=True, help="YYYY-MM-DD")
    std = p.add_mutually_exclusive_group(required=True)
    std.add_argument("--standard-score")
    std.add_argument("--standard-product")
    p.add_argument("--sheet")
    p.add_argument("--approved-by")
    p.add_argument("--out", help="default: <mappings>/catalogs/<AGENCY>/<version>.yaml")
    p.add_argument("--dir", help="mappings directory")
    p.set_defaults(func=cmd_import_catalog)

    p = sub.add_parser("export-catalog", help="write a catalog version back to XLSX/CSV")
    p.add_argument("agency")
    p.add_argument("out")
    p.add_argument("--version", help="default: the newest")
    p.add_argument("--dir", help="mappings directory")
    p.set_defaults(func=cmd_export_catalog)

    p = subparsers.add_parser("remap", help="recompute facts from the raw archive after a mapping change")
    p.add_argument("--apply", action="store_true", help="write the difference (default: dry run)")
    p.add_argument("--source", help="only this source")
    p.set_defaults(func=cmd_remap)


__all__ = ["MappingCliContext", "register"]
