"""Catalog spreadsheets: XLSX/CSV round trips and errors that name sheet, row and column."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from openpyxl import Workbook

from gateway.errors import ConfigError
from gateway.mapping import load_mappings
from gateway.mapping.catalog_io import catalog_yaml, export_catalog, import_catalog

SHIPPED = Path(__file__).resolve().parents[1] / "mappings"


@pytest.mark.parametrize("suffix", ["xlsx", "csv"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    catalog = load_mappings(SHIPPED).catalogs["VPUBND"].versions[-1]
    spec = catalog.to_spec()
    path = tmp_path / f"catalog.{suffix}"
    export_catalog(spec, path)
    back = import_catalog(path, agency="VPUBND", version=spec.version, effective_from=spec.effective_from,
                          standard_score=spec.standard_score, approved_by=spec.approved_by)  # fmt: skip
    assert back == spec


def test_imported_catalog_becomes_loadable_yaml(tmp_path: Path) -> None:
    csv_path = tmp_path / "danh-muc.csv"
    csv_path.write_text(
        "Mã sản phẩm,Nhiệm vụ,Công việc chi tiết,Sản phẩm đầu ra,Nhóm,Điểm,Đơn vị tính,Vị trí việc làm\n"
        "A-1,Văn bản,Xử lý văn bản đến,Phiếu xử lý,1,\"12,5\",văn bản,Chuyên viên; Chuyên viên chính\n"
        "A-2,Báo cáo,Báo cáo quý,Báo cáo,2,150,báo cáo,Chuyên viên\n",
        encoding="utf-8",
    )
    spec = import_catalog(csv_path, agency="SKHCN", version="2027.1", effective_from=date(2027, 1, 1),
                          standard_product="A-1")  # fmt: skip
    assert spec.products[0].job_positions == ("Chuyên viên", "Chuyên viên chính")
    assert str(spec.products[0].score) == "12.5"
    assert "effective_from: 2027-01-01" in catalog_yaml(spec)


def test_errors_name_sheet_row_and_column(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = "Danh mục"
    ws.append(["STT?", "Mã", "Nhiệm vụ", "Công việc chi tiết", "Sản phẩm đầu ra", "Nhóm", "Điểm"])
    ws.append([None, "B-1", "Văn bản", "Xử lý", "Phiếu", 1, 50])
    ws.append([None, "B-2", "Văn bản", "Xử lý", "Phiếu", "một", 50])
    path = tmp_path / "dm.xlsx"
    wb.save(path)
    with pytest.raises(ConfigError) as info:
        import_catalog(path, agency="X", version="1", effective_from=date(2026, 1, 1), standard_product="B-1")
    lines = str(info.value).splitlines()
    assert f"{path}[Danh mục]:R1:C1: unknown column header 'STT?'" in lines[0]
    assert any(f"{path}[Danh mục]:R3:C6 (group): 'một' is not a number" in line for line in lines)


def test_frame_violation_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "dm.csv"
    path.write_text("Mã,Nhiệm vụ,Công việc,Sản phẩm,Nhóm,Điểm\nC-1,a,b,c,1,90\nC-2,a,b,c,1,250\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        import_catalog(path, agency="X", version="1", effective_from=date(2026, 1, 1), standard_product="C-1")
    assert str(info.value).startswith(f"{path}:R3")
    assert "exceeds the frame of group 1" in str(info.value)
