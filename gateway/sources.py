"""Source configuration files: one YAML per source system under the sources directory.

The file's ``kind`` picks the connector (entry-point group ``kpigw.connectors``); the connector class's
``config_model`` validates the rest, so errors name the file, line and key. Secrets are references resolved
here (``${ENV}``, ``${file:...}``) and never written back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.connector import Connector, ConnectorContext, connector_kinds
from gateway.errors import ConfigError
from gateway.yamlconf import load_yaml, resolve_refs, validation_problems, where


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    path: Path
    config: Any  # the connector's validated config model (or the raw mapping for kinds without one)
    interval: float = 60.0
    jitter: float = 5.0
    cron: str | None = None
    enabled: bool = True

    def build(self, context: ConnectorContext) -> Connector:
        factory = connector_kinds()[self.kind]
        return factory(name=self.name, config=self.config, context=context)


def load_source(path: Path, *, env: Mapping[str, str] | None = None) -> SourceSpec:
    data, marks = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a source file is a mapping with at least 'name' and 'kind'")
    kind = data.get("kind")
    kinds = connector_kinds()
    if kind not in kinds:
        raise ConfigError(
            f"{where(path, marks, ('kind',))}: kind: unknown connector kind {kind!r}; "
            f"installed: {', '.join(sorted(kinds))}"
        )
    data = resolve_refs(data, path=path, marks=marks, env=env)
    model: type[BaseModel] | None = getattr(kinds[kind], "config_model", None)
    config: Any = data
    if model is not None:
        try:
            config = model.model_validate(data)
        except ValidationError as err:
            raise ConfigError("\n".join(validation_problems(path, marks, err))) from err
    schedule = data.get("schedule") or {}
    return SourceSpec(
        name=str(data.get("name") or path.stem),
        kind=kind,
        path=path,
        config=config,
        interval=float(schedule.get("interval", 60.0)),
        jitter=float(schedule.get("jitter", 5.0)),
        cron=schedule.get("cron"),
        enabled=bool(schedule.get("enabled", True)),
    )


def load_sources(directory: Path, *, env: Mapping[str, str] | None = None) -> dict[str, SourceSpec]:
    """Every ``*.yaml`` in ``directory``; all files' problems are reported together."""
    specs: dict[str, SourceSpec] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            spec = load_source(path, env=env)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if spec.name in specs:
            problems.append(f"{path}: source name {spec.name!r} is also used by {specs[spec.name].path}")
        specs[spec.name] = spec
    if problems:
        raise ConfigError("\n".join(problems))
    return specs
