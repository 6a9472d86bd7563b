"""The product catalog ("Danh mục sản phẩm/công việc"): products, groups, coefficients, versions.

Each agency keeps its catalog as versioned YAML files under ``mappings/catalogs/<AGENCY>/<version>.yaml``.
A version is in force from ``effective_from`` until the day before the next version's ``effective_from`` (or
its own ``effective_to``). A product's score is capped by its group's frame (group g: up to 100 × g points);
its conversion coefficient is given, or computed as score ÷ the agency's standard-product score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.errors import ConfigError
from gateway.yamlconf import load_yaml, validation_problems

GROUP_FRAMES: Mapping[int, int] = {1: 100, 2: 200, 3: 300, 4: 400, 5: 500}
"""Score frame (maximum points) of each complexity group, from the ministry's handbook."""

COEFFICIENT_PLACES = Decimal("0.0001")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubScores(_Strict):
    """The four sub-criteria a product is scored on; the product's score is their sum unless given."""

    difficulty: Annotated[Decimal, Field(ge=0, description="Độ khó, tính sáng tạo")]
    process: Annotated[Decimal, Field(ge=0, description="Quy trình, thời gian thực hiện")]
    coordination: Annotated[Decimal, Field(ge=0, description="Mức độ phối hợp")]
    scope: Annotated[Decimal, Field(ge=0, description="Phạm vi ảnh hưởng, áp dụng")]

    @property
    def total(self) -> Decimal:
        return self.difficulty + self.process + self.coordination + self.scope


class Product(_Strict):
    code: Annotated[str, Field(min_length=1, description="Mã sản phẩm, unique within the catalog version")]
    task: Annotated[str, Field(min_length=1, description="Nhiệm vụ")]
    work: Annotated[str, Field(min_length=1, description="Công việc chi tiết")]
    output: Annotated[str, Field(min_length=1, description="Sản phẩm đầu ra")]
    group: Annotated[int, Field(ge=1, le=5, description="Nhóm độ phức tạp 1-5 (khung điểm 100-500)")]
    sub_scores: SubScores | None = None
    score: Annotated[Decimal | None, Field(gt=0, description="Điểm; default: sum of sub_scores")] = None
    coefficient: Annotated[Decimal | None, Field(gt=0, description="Hệ số quy đổi; default: score ÷ standard")] = None
    unit_of_count: Annotated[str, Field(description="Đơn vị tính")] = "sản phẩm"
    job_positions: tuple[str, ...] = ()
    notes: str | None = None

    @model_validator(mode="after")
    def _score_fits(self) -> Product:
        if self.score is None and self.sub_scores is None:
            raise ValueError("give the score or the four sub_scores")
        if self.score is not None and self.sub_scores is not None and self.score != self.sub_scores.total:
            raise ValueError(f"score {self.score} is not the sum of the sub_scores ({self.sub_scores.total})")
        if self.points > GROUP_FRAMES[self.group]:
            raise ValueError(
                f"score {self.points} exceeds the frame of group {self.group} ({GROUP_FRAMES[self.group]} points)"
            )
        return self

    @property
    def points(self) -> Decimal:
        if self.score is not None:
            return self.score
        assert self.sub_scores is not None
        return self.sub_scores.total


class CatalogFile(_Strict):
    """The YAML shape of one catalog version."""

    agency: Annotated[str, Field(pattern=r"^[A-Z0-9_]+$")]
    version: Annotated[str, Field(min_length=1)]
    effective_from: date
    effective_to: date | None = None
    approved_by: Annotated[str | None, Field(description="Approving decision, e.g. 'QĐ số 12/QĐ-UBND'")] = None
    standard_score: Annotated[Decimal | None, Field(gt=0, description="Score of the standard product")] = None
    standard_product: Annotated[str | None, Field(description="Code of the standard product")] = None
    products: Annotated[tuple[Product, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _standard(self) -> CatalogFile:
        if (self.standard_score is None) == (self.standard_product is None):
            raise ValueError("give exactly one of standard_score or standard_product")
        codes = [p.code for p in self.products]
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate product codes: {', '.join(dupes)}")
        if self.standard_product is not None and self.standard_product not in codes:
            raise ValueError(f"standard_product {self.standard_product!r} is not a product of this catalog")
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError("effective_to is before effective_from")
        return self


class Catalog:
    """One compiled catalog version: products by code with their coefficients resolved."""

    __slots__ = ("_coefficients", "agency", "approved_by", "effective_from", "effective_to", "path",
                 "products", "standard_score", "version")  # fmt: skip

    def __init__(self, spec: CatalogFile, *, path: Path | None = None) -> None:
        self.agency = spec.agency
        self.version = spec.version
        self.effective_from = spec.effective_from
        self.effective_to = spec.effective_to
        self.approved_by = spec.approved_by
        self.path = path
        self.products: dict[str, Product] = {p.code: p for p in spec.products}
        if spec.standard_score is not None:
            self.standard_score = spec.standard_score
        else:
            self.standard_score = self.products[str(spec.standard_product)].points
        self._coefficients = {code: self._coefficient(p) for code, p in self.products.items()}

    def _coefficient(self, product: Product) -> Decimal:
        if product.coefficient is not None:
            return product.coefficient
        return (product.points / self.standard_score).quantize(COEFFICIENT_PLACES)

    def coefficient(self, code: str) -> Decimal:
        return self._coefficients[code]

    def covers(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_to is None or on <= self.effective_to)

    def frame_problems(self) -> list[str]:
        """Products whose coefficient puts them outside their group's score band (for ``mappings check``)."""
        out = []
        for code, product in self.products.items():
            implied = self._coefficients[code] * self.standard_score
            low, high = GROUP_FRAMES[product.group] - 100, GROUP_FRAMES[product.group]
            if not (low < implied <= high):
                out.append(
                    f"{self.agency} {self.version} product {code}: coefficient {self._coefficients[code]} "
                    f"× standard {self.standard_score} = {implied} points, outside group {product.group}'s "
                    f"frame ({low}, {high}]"
                )
        return out

    def to_spec(self) -> CatalogFile:
        return CatalogFile(
            agency=self.agency, version=self.version, effective_from=self.effective_from,
            effective_to=self.effective_to, approved_by=self.approved_by, standard_score=self.standard_score,
            products=tuple(self.products.values()),
        )  # fmt: skip


class CatalogHistory:
    """All versions of one agency's catalog, ordered by effective date."""

    __slots__ = ("agency", "versions")

    def __init__(self, agency: str, versions: Sequence[Catalog]) -> None:
        self.agency = agency
        self.versions = tuple(sorted(versions, key=lambda c: c.effective_from))

    def on(self, day: date) -> Catalog | None:
        found: Catalog | None = None
        for catalog in self.versions:
            if catalog.effective_from > day:
                break
            found = catalog
        if found is None or (found.effective_to is not None and day > found.effective_to):
            return None
        return found


def parse_catalog(data: Any, *, path: Path, marks: Any) -> tuple[Catalog | None, list[str]]:
    try:
        spec = CatalogFile.model_validate(data)
    except ValidationError as err:
        return None, validation_problems(path, marks, err)
    problems = []
    if path.stem != spec.version:
        problems.append(f"{path}:1:1: version: {spec.version!r} differs from the file name; name the file "
                        f"{spec.version}.yaml")  # fmt: skip
    if path.parent.name != spec.agency:
        problems.append(f"{path}:1:1: agency: {spec.agency!r} but the file is under {path.parent.name}/")
    return Catalog(spec, path=path), problems


def load_catalogs(directory: Path) -> tuple[dict[str, CatalogHistory], list[str], list[Path]]:
    """Every ``catalogs/<AGENCY>/*.yaml``; returns histories, problems and the files read."""
    problems: list[str] = []
    files = sorted(directory.glob("*/*.yaml")) if directory.is_dir() else []
    by_agency: dict[str, list[Catalog]] = {}
    for path in files:
        try:
            data, marks = load_yaml(path)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        catalog, found = parse_catalog(data, path=path, marks=marks)
        problems.extend(found)
        if catalog is not None:
            by_agency.setdefault(catalog.agency, []).append(catalog)
    histories = {}
    for agency, versions in by_agency.items():
        history = CatalogHistory(agency, versions)
        for older, newer in zip(history.versions, history.versions[1:], strict=False):
            if older.version == newer.version:
                problems.append(f"{newer.path}:1:1: version {newer.version} of {agency} is defined twice")
            elif older.effective_from == newer.effective_from:
                problems.append(f"{newer.path}:1:1: effective_from {newer.effective_from} is also the start of "
                                f"version {older.version}")  # fmt: skip
            if older.effective_to is not None and older.effective_to >= newer.effective_from:
                problems.append(f"{newer.path}:1:1: effective_from {newer.effective_from} overlaps version "
                                f"{older.version} (in force until {older.effective_to})")  # fmt: skip
        histories[agency] = history
    return histories, problems, files


__all__ = ["GROUP_FRAMES", "Catalog", "CatalogFile", "CatalogHistory", "Product", "SubScores", "load_catalogs"]
