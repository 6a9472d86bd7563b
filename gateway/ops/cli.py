"""The operator commands of ``kpigw``: ``sources pause|resume|trigger``, ``backfill``, ``cursor show|reset``,
``quarantine list|show|replay|discard``. Each builds the runtime with the CLI's ``_runtime`` helper, acts through
the service functions of :mod:`gateway.ops` and is audited as ``cli:<user>@<host>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.ops import control, cursors, quarantine
from gateway.ops.audit import cli_actor
from gateway.types import VN_TZ

RuntimeFactory = Callable[[argparse.Namespace], Any]


def _now() -> datetime:
    return datetime.now(UTC)


def _print(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def register(sub: Any, sources: Any, runtime: RuntimeFactory) -> None:
    """Add the operator commands to ``kpigw``'s sub-parsers (``sources`` is the ``sources`` group's)."""

    def with_runtime(action: Callable[[Any, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            rt = runtime(args)
            try:
                return action(rt, args)
            finally:
                rt.close()

        return run

    p = sources.add_parser("pause", help="pause a source on every replica (a running sync stops after its page)")
    p.add_argument("source")
    p.add_argument("--reason", help="why, for the audit log and the other operators")
    p.set_defaults(func=with_runtime(_pause))
    p = sources.add_parser("resume", help="resume a paused source")
    p.add_argument("source")
    p.set_defaults(func=with_runtime(_resume))
    p = sources.add_parser("trigger", help="ask the replicas to sync a source now (kpigw sync runs it here)")
    p.add_argument("source")
    p.set_defaults(func=with_runtime(_trigger))

    p = sub.add_parser("backfill", help="re-read a source over a time range; resumable, with a progress bar")
    p.add_argument("source")
    p.add_argument("--from", dest="start", required=True, help="start, ISO date or date-time (Vietnam time)")
    p.add_argument("--to", dest="end", required=True, help="end, ISO date or date-time (Vietnam time)")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming an earlier backfill")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=with_runtime(_backfill))

    group = sub.add_parser("cursor", help="view or reset a source's cursors").add_subparsers(dest="sub", required=True)
    p = group.add_parser("show", help="the committed cursor of each stream (live and backfill)")
    p.add_argument("source")
    p.set_defaults(func=with_runtime(_cursor_show))
    p = group.add_parser("reset", help="move cursors to a time or to the beginning (pause the source first)")
    p.add_argument("source")
    p.add_argument("--stream", action="append", default=[], help="only this stream (repeatable)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", dest="to", help="ISO date or date-time (Vietnam time when naive)")
    target.add_argument("--earliest", action="store_true", help="delete the cursor: start from the stream's start")
    p.set_defaults(func=with_runtime(_cursor_reset))

    group = sub.add_parser("quarantine", help="records that could not be normalized or valued").add_subparsers(
        dest="sub", required=True)  # fmt: skip
    p = group.add_parser("list", help="entries, newest last")
    p.add_argument("--source")
    p.add_argument("--status", default="open", choices=["open", "replayed", "discarded", "resolved", "all"])
    p.add_argument("--stage", choices=["fetch", "normalize", "map"])
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--after", type=int, default=0, help="entries with a larger id (paging)")
    p.set_defaults(func=with_runtime(_q_list))
    p = group.add_parser("show", help="one entry with its payload and reason")
    p.add_argument("id", type=int)
    p.set_defaults(func=with_runtime(_q_show))
    p = group.add_parser("replay", help="re-normalize and re-value from the archive with the current mappings")
    p.add_argument("id", type=int, nargs="*", help="entry ids (or --source for all open entries of a source)")
    p.add_argument("--source")
    p.set_defaults(func=with_runtime(_q_replay))
    p = group.add_parser("discard", help="close an entry for good, with a reason")
    p.add_argument("id", type=int)
    p.add_argument("--reason", required=True)
    p.set_defaults(func=with_runtime(_q_discard))


def _pause(rt: Any, args: argparse.Namespace) -> int:
    with rt.db.begin() as conn:
        state = control.pause(conn, source=args.source, sources=rt.sources, actor=cli_actor(), now=_now(),
                              reason=args.reason)  # fmt: skip
    print(f"{args.source}: paused on every replica" + (f" ({state.reason})" if state.reason else ""))
    return 0


def _resume(rt: Any, args: argparse.Namespace) -> int:
    with rt.db.begin() as conn:
        control.resume(conn, source=args.source, sources=rt.sources, actor=cli_actor(), now=_now())
    print(f"{args.source}: resumed")
    return 0


def _trigger(rt: Any, args: argparse.Namespace) -> int:
    with rt.db.begin() as conn:
        control.request_run(conn, source=args.source, sources=rt.sources, actor=cli_actor(), now=_now())
    print(f"{args.source}: run requested; a serving replica starts it within a second or two")
    return 0


def _backfill(rt: Any, args: argparse.Namespace) -> int:
    from gateway.ops.audit import record_action
    from gateway.sync.backfill import TqdmProgress, clear_progress, run_backfill

    start = cursors.parse_time(args.start, default_tz=VN_TZ)
    end = cursors.parse_time(args.end, default_tz=VN_TZ)
    rt.source(args.source)
    if args.restart:
        clear_progress(rt.db, args.source)
    with rt.db.begin() as conn:
        record_action(conn, actor=cli_actor(), action="backfill", now=_now(),
                      detail={"source": args.source, "from": start, "to": end, "restart": args.restart})  # fmt: skip
    connector = rt.connector(args.source)
    try:
        report = run_backfill(engine=rt.sync, db=rt.db, connector=connector, start=start, end=end,
                              holder=f"backfill:{rt.settings.replica_id}:{os.getpid()}",
                              lease_seconds=rt.settings.lease_seconds,
                              progress=None if args.no_progress else TqdmProgress(start, end, file=sys.stderr))
    finally:
        connector.close()
    for s in report.streams:
        print(f"{s.stream}: {s.pages} pages, {s.read} read, {s.facts_written} facts written"
              + (f"  ERROR {s.error_kind}: {s.error}" if s.error else ""))  # fmt: skip
    print(f"backfill run {report.run_id}: {report.outcome} in {report.seconds:.1f}s"
          + ("; run the same command again to resume" if report.outcome == "failed" else ""))  # fmt: skip
    return 0 if report.outcome != "failed" else 1


def _streams(rt: Any, source: str) -> list[str]:
    connector = rt.connector(source)
    try:
        return list(connector.streams())
    finally:
        connector.close()


def _cursor_show(rt: Any, args: argparse.Namespace) -> int:
    with rt.db.connect() as conn:
        rows = cursors.show(conn, source=args.source, sources=rt.sources)
    if not rows:
        print(f"{args.source}: no cursor committed yet (the next sync starts at each stream's start)")
    for r in rows:
        print(f"{r['stream']}\t{r['value']}\trun {r['run_id']}\t{r['updated_at']}")
    return 0


def _cursor_reset(rt: Any, args: argparse.Namespace) -> int:
    to = None if args.earliest else cursors.parse_time(args.to, default_tz=VN_TZ)
    known = _streams(rt, args.source) if args.source in rt.sources else []
    with rt.db.begin() as conn:
        changes = cursors.reset(conn, source=args.source, streams=args.stream, known_streams=known, to=to,
                                actor=cli_actor(), now=_now(), sources=rt.sources)  # fmt: skip
    for c in changes:
        print(f"{c['stream']}: {c['old']} -> {c['new'] or '(start of stream)'}")
    print(f"resume the source when ready: kpigw sources resume {args.source}")
    return 0


def _q_list(rt: Any, args: argparse.Namespace) -> int:
    with rt.db.connect() as conn:
        entries = quarantine.list_entries(conn, source=args.source, stage=args.stage, after=args.after,
                                          limit=args.limit, status=None if args.status == "all" else args.status)
    for e in entries:
        print(f"{e['id']}\t{e['status']}\t{e['source']}/{e['stream']}\t{e['record_key']}\t{e['stage']}\t"
              f"{e['error_kind']}: {e['reason']}")  # fmt: skip
    print(f"{len(entries)} entries")
    return 0


def _q_show(rt: Any, args: argparse.Namespace) -> int:
    with rt.db.connect() as conn:
        _print(quarantine.get_entry(conn, args.id))
    return 0


def _q_replay(rt: Any, args: argparse.Namespace) -> int:
    report = quarantine.replay(rt.db, ids=args.id, source=args.source, actor=cli_actor(), now=_now(),
                               connector_for=rt.connector, valuer=rt.mappings.current)  # fmt: skip
    for o in report.outcomes:
        print(f"{o.id}\t{o.outcome}\t{o.detail}")
    summary = report.as_dict()
    print(", ".join(f"{summary[k]} {k}" for k in ("replayed", "failed", "skipped", "superseded")))
    return 0 if report.count("failed") == 0 else 1


def _q_discard(rt: Any, args: argparse.Namespace) -> int:
    with rt.db.begin() as conn:
        entry = quarantine.discard(conn, entry_id=args.id, reason=args.reason, actor=cli_actor(), now=_now())
    print(f"{entry['id']}: discarded ({entry['resolution_note']})")
    return 0
