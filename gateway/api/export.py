"""A unit-period's facts and summaries for spreadsheets: CSV (UTF-8 with BOM, so Excel reads Vietnamese) and
XLSX (two sheets). Text cells that a spreadsheet would run as a formula are quoted with a leading apostrophe."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

FACT_COLUMNS = ("id", "person_id", "role", "agency", "unit", "period", "product_code", "catalog_version", "rule_id",
                "units", "quantity", "assigned", "completed", "due_at", "done_at", "on_time", "delays",
                "failed_reviews", "exempt", "state", "version", "source", "stream", "record_key",
                "item_key")  # fmt: skip
SUMMARY_COLUMNS = ("agency", "unit", "person_id", "period", "facts", "assigned", "completed", "on_time", "late",
                   "delays", "failed_reviews", "exempt", "units_assigned", "units_completed", "units_quality",
                   "units_timeliness", "ref_a_quantity_pct", "ref_b_quality_pct", "ref_c_timeliness_pct",
                   "ref_task_score_70")  # fmt: skip
_NUMERIC = {"units", "quantity", "units_assigned", "units_completed", "units_quality", "units_timeliness"}


def _safe(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and column not in _NUMERIC and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def fact_rows(facts: Iterable[dict[str, Any]]) -> list[list[Any]]:
    return [[_safe(c, f.get(c)) for c in FACT_COLUMNS] for f in facts]


def summary_rows(summaries: Iterable[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for s in summaries:
        flat = {**{k: s.get(k) for k in ("agency", "unit", "person_id", "period")}, **s["counts"],
                "units_assigned": s["units"]["assigned"], "units_completed": s["units"]["completed"],
                "units_quality": s["units"]["quality"], "units_timeliness": s["units"]["timeliness"],
                "ref_a_quantity_pct": s["reference"]["a_quantity_pct"],
                "ref_b_quality_pct": s["reference"]["b_quality_pct"],
                "ref_c_timeliness_pct": s["reference"]["c_timeliness_pct"],
                "ref_task_score_70": s["reference"]["task_score_70"]}  # fmt: skip
        out.append([_safe(c, flat.get(c)) for c in SUMMARY_COLUMNS])
    return out


def to_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return ("\ufeff" + buffer.getvalue()).encode()


def to_xlsx(sheets: Sequence[tuple[str, Sequence[str], Sequence[Sequence[Any]]]], *, stamp: datetime) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for title, columns, rows in sheets:
        sheet = book.create_sheet(title)
        sheet.append(list(columns))
        for row in rows:
            sheet.append(list(row))
        sheet.freeze_panes = "A2"
    naive = stamp.replace(tzinfo=None)  # openpyxl stores document times without a zone
    book.properties.created = naive
    book.properties.modified = naive
    book.properties.creator = "kpigw"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
