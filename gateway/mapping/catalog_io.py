"""Catalogs to and from the spreadsheet agencies fill in (XLSX or CSV, Vietnamese column headers).

Headers are matched after Unicode NFC, whitespace and case folding, with the usual variants accepted
(:data:`HEADERS`). Every problem is reported with the sheet, row and column (``file[sheet]:R12:C5 (Nhóm)``),
all in one :class:`~gateway.errors.ConfigError`. The result is a :class:`CatalogFile`, written as the
versioned YAML that ``mappings/catalogs/<AGENCY>/<version>.yaml`` holds (:func:`catalog_yaml`).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.mapping.catalog import CatalogFile
from gateway.yamlconf import not_utf8

COLUMNS: tuple[tuple[str, str], ...] = (
    ("code", "Mã sản phẩm"), ("task", "Nhiệm vụ"), ("work", "Công việc chi tiết"), ("output", "Sản phẩm đầu ra"),
    ("group", "Nhóm"), ("difficulty", "Độ khó, sáng tạo"), ("process", "Quy trình, thời gian"),
    ("coordination", "Mức độ phối hợp"), ("scope", "Phạm vi ảnh hưởng"), ("score", "Điểm"),
    ("coefficient", "Hệ số quy đổi"), ("unit_of_count", "Đơn vị tính"), ("job_positions", "Vị trí việc làm"),
    ("notes", "Ghi chú"),
)  # fmt: skip
"""Field and the header written on export, in column order."""

HEADERS: dict[str, tuple[str, ...]] = {
    "code": ("mã", "mã sản phẩm", "mã sp", "code"),
    "task": ("nhiệm vụ", "task"),
    "work": ("công việc chi tiết", "công việc", "nội dung công việc", "work"),
    "output": ("sản phẩm đầu ra", "sản phẩm", "output"),
    "group": ("nhóm", "nhóm sản phẩm", "nhóm độ phức tạp", "group"),
    "difficulty": ("độ khó, sáng tạo", "độ khó", "điểm độ khó", "difficulty"),
    "process": ("quy trình, thời gian", "quy trình", "thời gian", "process"),
    "coordination": ("mức độ phối hợp", "phối hợp", "coordination"),
    "scope": ("phạm vi ảnh hưởng", "phạm vi áp dụng", "phạm vi", "scope"),
    "score": ("điểm", "tổng điểm", "điểm sản phẩm", "score"),
    "coefficient": ("hệ số quy đổi", "hệ số", "coefficient"),
    "unit_of_count": ("đơn vị tính", "đvt", "unit_of_count"),
    "job_positions": ("vị trí việc làm", "vtvl", "job_positions"),
    "notes": ("ghi chú", "notes"),
}
REQUIRED = ("code", "task", "work", "output", "group")
_SUB = ("difficulty", "process", "coordination", "scope")
_NUMERIC = {"group", *_SUB, "score", "coefficient"}


def _fold(text: Any) -> str:
    return " ".join(unicodedata.normalize("NFC", str(text)).split()).casefold().rstrip(":")


_BY_HEADER = {_fold(alias): name for name, aliases in HEADERS.items() for alias in aliases}


def _number(value: Any) -> Decimal:
    text = str(value).strip().replace(" ", "")
    if "," in text and "." not in text:
        text = text.replace(",", ".")  # Vietnamese decimal comma: "1,5"
    return Decimal(text)


def products_from_rows(rows: Iterable[Sequence[Any]], *, where: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Turn spreadsheet rows (the first non-empty row is the header) into product dicts; collect problems."""
    problems: list[str] = []
    products: list[dict[str, Any]] = []
    columns: dict[int, str] | None = None
    for number, row in enumerate(rows, start=1):
        cells = ["" if c is None else str(c).strip() for c in row]
        if not any(cells):
            continue
        if columns is None:
            columns = {}
            for index, cell in enumerate(cells):
                name = _BY_HEADER.get(_fold(cell)) if cell else None
                if name is not None:
                    columns[index] = name
                elif cell:
                    problems.append(f"{where}:R{number}:C{index + 1}: unknown column header {cell!r}; known: "
                                    f"{', '.join(h for h, _ in COLUMNS)}")  # fmt: skip
            missing = [n for n in REQUIRED if n not in columns.values()]
            if missing:
                problems.append(f"{where}:R{number}: missing column(s): {', '.join(missing)}")
                return [], problems
            continue
        product: dict[str, Any] = {}
        subs: dict[str, Decimal] = {}
        for index, name in columns.items():
            cell = cells[index] if index < len(cells) else ""
            if cell == "":
                continue
            if name in _NUMERIC:
                try:
                    value = _number(cell)
                except InvalidOperation:
                    problems.append(f"{where}:R{number}:C{index + 1} ({name}): {cell!r} is not a number")
                    continue
                if name == "group" and (not value.is_finite() or value != value.to_integral_value()):
                    # A group is 1..5; int() would silently turn "2,5" into group 2 (a 200-point frame).
                    problems.append(f"{where}:R{number}:C{index + 1} ({name}): {cell!r} is not a whole number")
                    continue
                if name in _SUB:
                    subs[name] = value
                else:
                    product[name] = int(value) if name == "group" else value
            elif name == "job_positions":
                product[name] = [p.strip() for p in cell.replace("\n", ";").split(";") if p.strip()]
            else:
                product[name] = cell
        if subs:
            if len(subs) != len(_SUB):
                problems.append(f"{where}:R{number}: give all four sub-scores or none (have {', '.join(subs)})")
            product["sub_scores"] = subs
        product["_row"] = number
        products.append(product)
    if columns is None:
        problems.append(f"{where}: no header row found")
    return products, problems


def _validate(products: list[dict[str, Any]], meta: dict[str, Any], where: str, header: dict[str, int]
              ) -> CatalogFile:  # fmt: skip
    rows = [p.pop("_row") for p in products]
    try:
        return CatalogFile.model_validate({**meta, "products": products})
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = e["loc"]
            if len(loc) >= 2 and loc[0] == "products" and isinstance(loc[1], int):
                field = str(loc[2]) if len(loc) > 2 else ""
                col = header.get(field, 0)
                at = f"{where}:R{rows[loc[1]]}" + (f":C{col}" if col else "")
                problems.append(f"{at} ({field or 'row'}): {e['msg']}")
            else:
                problems.append(f"{where}: {'.'.join(map(str, loc))}: {e['msg']}")
        raise ConfigError("\n".join(problems)) from err


def import_catalog(path: Path, *, agency: str, version: str, effective_from: date,
                   standard_score: Decimal | None = None, standard_product: str | None = None, sheet: str | None = None,
                   approved_by: str | None = None) -> CatalogFile:  # fmt: skip
    """Read a catalog spreadsheet (``.xlsx`` or ``.csv``); every problem named by sheet, row and column."""
    if path.suffix.lower() == ".csv":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise not_utf8(path, exc) from exc
        rows: list[Sequence[Any]] = list(csv.reader(io.StringIO(text)))
        where = str(path)
    else:
        from openpyxl import load_workbook

        workbook = load_workbook(path, read_only=True, data_only=True)
        try:
            ws = workbook[sheet] if sheet else workbook.worksheets[0]
        except KeyError as exc:
            raise ConfigError(f"{path}: no sheet {sheet!r}; sheets: {', '.join(workbook.sheetnames)}") from exc
        rows = [tuple(r) for r in ws.iter_rows(values_only=True)]
        workbook.close()
        where = f"{path}[{ws.title}]"
    products, problems = products_from_rows(rows, where=where)
    if problems:
        raise ConfigError("\n".join(problems))
    header_cells = next(r for r in rows if any(c not in (None, "") for c in r))
    header = {_BY_HEADER.get(_fold(c), ""): i + 1 for i, c in enumerate(header_cells) if c}
    for sub in _SUB:
        if sub in header:
            header.setdefault("sub_scores", header[sub])
    meta: dict[str, Any] = {"agency": agency, "version": version, "effective_from": effective_from,
                            "approved_by": approved_by}  # fmt: skip
    if standard_product is not None:
        meta["standard_product"] = standard_product
    else:
        meta["standard_score"] = standard_score
    return _validate(products, meta, where, header)


def _rows(spec: CatalogFile) -> list[list[Any]]:
    out: list[list[Any]] = [[header for _, header in COLUMNS]]
    for p in spec.products:
        subs = p.sub_scores
        values: dict[str, Any] = {
            "code": p.code, "task": p.task, "work": p.work, "output": p.output, "group": p.group,
            "difficulty": subs.difficulty if subs else None, "process": subs.process if subs else None,
            "coordination": subs.coordination if subs else None, "scope": subs.scope if subs else None,
            "score": p.score, "coefficient": p.coefficient, "unit_of_count": p.unit_of_count,
            "job_positions": "; ".join(p.job_positions), "notes": p.notes,
        }  # fmt: skip
        out.append([values[name] for name, _ in COLUMNS])
    return out


def export_catalog(spec: CatalogFile, path: Path) -> None:
    """Write the catalog back as the agencies' spreadsheet (by suffix: ``.xlsx`` or ``.csv``)."""
    rows = _rows(spec)
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerows([["" if v is None else str(v) for v in row] for row in rows])
        path.write_text(buffer.getvalue(), encoding="utf-8-sig")
        return
    from openpyxl import Workbook

    workbook = Workbook()
    ws = workbook.active
    ws.title = f"{spec.agency} {spec.version}"[:31]
    for row in rows:
        ws.append([float(v) if isinstance(v, Decimal) else v for v in row])
    workbook.save(path)


def catalog_yaml(spec: CatalogFile) -> str:
    """The versioned YAML form of a catalog (what ``mappings/catalogs/<AGENCY>/<version>.yaml`` holds)."""
    data = _plain(spec.model_dump(mode="python", exclude_none=True))
    for product in data["products"]:
        if not product.get("job_positions"):
            product.pop("job_positions", None)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=120)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


__all__ = ["COLUMNS", "HEADERS", "catalog_yaml", "export_catalog", "import_catalog", "products_from_rows"]
