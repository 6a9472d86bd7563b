"""JSON Schemas of the mapping files, for editors (VS Code's YAML extension reads ``# yaml-language-server``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gateway.mapping.catalog import CatalogFile
from gateway.mapping.policy import ExemptionsFile, PolicyFile
from gateway.mapping.rules import RuleFile

SCHEMAS: dict[str, type[BaseModel]] = {
    "mapping-rules.schema.json": RuleFile,
    "mapping-catalog.schema.json": CatalogFile,
    "mapping-policy.schema.json": PolicyFile,
    "mapping-exemptions.schema.json": ExemptionsFile,
}


def schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = name
        out[name] = schema
    return out


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


__all__ = ["SCHEMAS", "schemas", "write_schemas"]
