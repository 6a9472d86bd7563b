"""Loading mappings: every shipped file, precise errors (file:line:column, all of them), safe reloads."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from gateway.errors import ConfigError
from gateway.mapping import MappingHolder, load_mappings
from gateway.mapping.catalog import CatalogFile
from gateway.mapping.check import check_mappings, run_examples
from gateway.mapping.rules import RuleFile

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "mappings"
MINI = Path(__file__).parent / "fixtures" / "mapping" / "mini"


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MINI, target)
    return target


def test_shipped_mappings_load_and_check_clean() -> None:
    report = check_mappings(SHIPPED)
    assert report.errors == []
    assert report.warnings == []
    ms = report.mappings
    assert ms is not None
    assert set(ms.agencies) >= {"SKHCN", "VPUBND", "XA_COCSAN"}
    assert ms.version.startswith("m-")


@pytest.mark.parametrize("path", sorted(SHIPPED.rglob("*.yaml")), ids=lambda p: str(p.relative_to(SHIPPED)))
def test_every_shipped_yaml_parses(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "catalogs" in path.parts:
        CatalogFile.model_validate(data)
    elif "rules" in path.parts:
        RuleFile.model_validate(data)
    else:
        assert isinstance(data, dict)


@pytest.mark.parametrize("agency", ["SKHCN", "VPUBND", "XA_COCSAN"])
def test_shipped_catalogs_are_realistic(agency: str) -> None:
    ms = load_mappings(SHIPPED)
    catalog = ms.catalogs[agency].versions[-1]
    assert len(catalog.products) >= 40
    groups = Counter(p.group for p in catalog.products.values())
    assert set(groups) == {1, 2, 3, 4, 5}
    assert catalog.frame_problems() == []


def test_shipped_examples_pass() -> None:
    results = run_examples(load_mappings(SHIPPED))
    assert len(results) >= 10
    failures = {f"{r.file}: {r.name}": r.failures for r in results if not r.ok}
    assert failures == {}


def test_example_failures_are_reported(mini: Path) -> None:
    rules = mini / "rules" / "TEST.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace('units: "0.25"', 'units: "0.5"', 1), encoding="utf-8")
    (result,) = run_examples(load_mappings(mini))
    assert result.failures == ["P3/co_handler: units is 0.25, expected 0.5"]


def _errors(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_mappings(directory)
    return str(info.value).splitlines()[1:]


def test_errors_name_file_line_column_and_list_every_problem(mini: Path) -> None:
    rules = mini / "rules" / "TEST.yaml"
    text = rules.read_text(encoding="utf-8")
    text = text.replace("    product: T-1\n", "    product: T-1\n    priorty: 3\n", 1)  # unknown key, line 5
    text = text.replace('quantity: "has(attrs.pages)', 'quantity: "has(attrs.pages) &&', 1)  # bad CEL
    rules.write_text(text, encoding="utf-8")
    catalog = mini / "catalogs" / "TEST" / "2026.2.yaml"
    catalog.write_text(catalog.read_text(encoding="utf-8").replace("group: 2, score: 120", "group: 1, score: 120"),
                       encoding="utf-8")
    errors = _errors(mini)
    assert any(e.startswith(f"{rules}:6:5: rules.0.priorty: unknown key") for e in errors), errors
    assert any(e.startswith(f"{rules}:") and "rules.1.quantity" in e for e in errors), errors
    assert any(e.startswith(f"{catalog}:8:") and "exceeds the frame of group 1" in e for e in errors), errors
    assert len(errors) == 3


def test_unknown_cel_name_and_missing_product(mini: Path) -> None:
    rules = mini / "rules" / "TEST.yaml"
    text = rules.read_text(encoding="utf-8")
    text = text.replace("    product: T-1\n", "    when: urgncy == \"khẩn\"\n    product: T-99\n", 1)
    rules.write_text(text, encoding="utf-8")
    errors = _errors(mini)
    assert any(f"{rules}:5:" in e and "unknown name(s) urgncy" in e for e in errors), errors
    assert any("product T-99 is in no catalog version of TEST" in e for e in errors), errors


def test_yaml_syntax_error_has_position(mini: Path) -> None:
    (mini / "policy.yaml").write_text("default:\n  delay: [unclosed\n", encoding="utf-8")
    (error,) = _errors(mini)
    assert error.startswith(f"{mini / 'policy.yaml'}:")
    assert "invalid YAML" in error


def test_policy_override_error_points_into_the_agency_block(mini: Path) -> None:
    (mini / "policy.yaml").write_text(
        "default: {}\nagencies:\n  TEST:\n    delay: {count: each_week}\n", encoding="utf-8"
    )
    (error,) = _errors(mini)
    assert error.startswith(f"{mini / 'policy.yaml'}:4:")
    assert "agencies.TEST.delay.count" in error


def test_unreachable_and_overlapping_rules_are_reported(mini: Path) -> None:
    rules = mini / "rules" / "TEST.yaml"
    text = rules.read_text(encoding="utf-8").replace("rules:\n", (
        "rules:\n"
        "  - id: t.all-outgoing\n    priority: 50\n    match: {kind: outgoing_document}\n    skip: test\n"
        "  - id: t.den-twin\n    match: {kind: incoming_document, doc_type: [Công văn]}\n    skip: twin\n"
    ), 1)  # fmt: skip
    rules.write_text(text, encoding="utf-8")
    warnings = check_mappings(mini).warnings
    assert any("rule t.di.to-trinh is unreachable" in w for w in warnings), warnings
    assert any("overlaps" in w and "t.den" in w for w in warnings), warnings


def test_frame_problems_flag_coefficients_outside_the_group(mini: Path) -> None:
    catalog = mini / "catalogs" / "TEST" / "2026.1.yaml"
    catalog.write_text(catalog.read_text(encoding="utf-8").replace("coefficient: 7.5", "coefficient: 12"),
                       encoding="utf-8")
    warnings = check_mappings(mini).warnings
    assert any("T-4" in w and "outside group 2's frame" in w for w in warnings), warnings


def test_a_broken_reload_keeps_the_working_set(mini: Path) -> None:
    holder = MappingHolder(mini)
    before = holder.current
    (mini / "rules" / "TEST.yaml").write_text("agency: TEST\nrules: [{id: x}]\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        holder.reload()
    assert holder.current is before
