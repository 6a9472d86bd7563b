"""YAML configuration files as data: loaded with line marks, validated by pydantic, errors naming file:line:col.

Secrets never live in YAML. A value may reference one: ``${ENV_VAR}``, ``${ENV_VAR:-default}`` (non-secret
defaults only) or ``${file:/run/secrets/name}``. References are resolved when the file is loaded; a field
declared secret (:data:`SECRET_KEYS`) that holds a literal instead of a reference is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gateway.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Marks = dict[tuple[str | int, ...], tuple[int, int]]

SECRET_KEYS = frozenset(
    {"password", "client_secret", "secret", "token", "api_key", "key_value", "private_key", "key_password"}
)
SECRET_MAPS = frozenset({"secret_fields"})  # every value of these is a secret, whatever its key (a SOAP header's)
_REF = re.compile(r"\$\{([^}]+)\}")


_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster


class _Loader(_SafeLoader):  # type: ignore[valid-type,misc]
    """Safe loader (libyaml's parser when PyYAML has it) that refuses duplicate keys (a silent overwrite in
    YAML is a classic config bug)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
        seen.add(key)
    return dict(loader.construct_mapping(node, deep=deep))


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _collect_marks(node: yaml.Node, path: tuple[str | int, ...], marks: Marks) -> None:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _collect_marks(value_node, (*path, key), marks)
            marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_marks(item, (*path, index), marks)


def not_utf8(path: Path, exc: UnicodeDecodeError) -> ConfigError:
    """The problem of a file that is not UTF-8 (Excel saves CSV in the Windows code page, cp1258 for Vietnamese),
    at the line and column of its first undecodable byte, so the author is told what to fix and where."""
    data = bytes(exc.object)
    start = data.rfind(b"\n", 0, exc.start) + 1
    line = data.count(b"\n", 0, exc.start) + 1
    column = len(data[start:exc.start].decode("utf-8", errors="replace")) + 1
    return ConfigError(f"{path}:{line}:{column}: byte 0x{data[exc.start]:02x} is not UTF-8 text; save the file as "
                       "UTF-8 (in Excel: CSV UTF-8)")


def load_yaml(path: Path) -> tuple[Any, Marks]:
    """Parse a YAML file; return the data and a map from key path to (line, column)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from exc
    loader = _Loader(text)
    try:
        node = loader.get_single_node()  # parsed once: the node gives the marks and the data
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from exc
    finally:
        loader.dispose()
    marks: Marks = {}
    if node is not None:
        _collect_marks(node, (), marks)
    return data, marks


def where(path: Path, marks: Marks, loc: tuple[str | int, ...]) -> str:
    """``file:line:col`` of the deepest key of ``loc`` that the file has."""
    for depth in range(len(loc), -1, -1):
        if loc[:depth] in marks:
            line, col = marks[loc[:depth]]
            return f"{path}:{line}:{col}"
    return str(path)


def validation_problems(path: Path, marks: Marks, err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(part for part in e["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = "unknown key (check its spelling)" if e["type"] == "extra_forbidden" else e["msg"]
        problems.append(f"{where(path, marks, loc)}: {key}: {msg}")
    return problems


def resolve_refs(
    data: Any,
    *,
    path: Path,
    marks: Marks,
    env: Mapping[str, str] | None = None,
    loc: tuple[str | int, ...] = (),
    problems: list[str] | None = None,
) -> Any:
    """Replace ``${...}`` references; collect every problem instead of stopping at the first."""
    env = os.environ if env is None else env
    top = problems is None
    problems = [] if problems is None else problems
    if isinstance(data, dict):
        out = {}
        all_secret = bool(loc) and loc[-1] in SECRET_MAPS
        for k, v in data.items():
            if (all_secret or k in SECRET_KEYS) and isinstance(v, str) and not _is_reference(v):
                problems.append(
                    f"{where(path, marks, (*loc, k))}: {'.'.join(map(str, (*loc, k)))}: secrets may not be written "
                    "in the file; use ${ENV_VAR} or ${file:/path/to/secret}"
                )
            out[k] = resolve_refs(v, path=path, marks=marks, env=env, loc=(*loc, k), problems=problems)
        result: Any = out
    elif isinstance(data, list):
        result = [
            resolve_refs(v, path=path, marks=marks, env=env, loc=(*loc, i), problems=problems)
            for i, v in enumerate(data)
        ]
    elif isinstance(data, str) and "${" in data:
        result = _REF.sub(_substitute(env, lambda msg: problems.append(f"{where(path, marks, loc)}: {msg}")), data)
    else:
        result = data
    if top and problems:
        raise ConfigError("\n".join(problems))
    return result


def _is_reference(value: str) -> bool:
    """One ``${ENV}`` or ``${file:...}`` reference and nothing else: no literal around it and no ``:-`` default,
    which would be the secret written in the file after all."""
    match = _REF.fullmatch(value.strip())
    return match is not None and ":-" not in match.group(1)


def _substitute(env: Mapping[str, str], report: Callable[[str], None]) -> Callable[[re.Match[str]], str]:
    def sub(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref.startswith("file:"):
            secret_path = Path(ref.removeprefix("file:"))
            try:
                return secret_path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                report(f"secret file {secret_path} cannot be read: {exc.strerror}")
                return ""
        name, _, default = ref.partition(":-")
        if name in env:
            return env[name]
        if ":-" in ref:
            return default
        report(f"environment variable {name} is not set")
        return ""

    return sub


def load_model(path: Path, model: type[M], *, env: Mapping[str, str] | None = None) -> M:
    """Load, resolve references and validate a YAML file into ``model``; every problem in one ConfigError."""
    data, marks = load_yaml(path)
    data = resolve_refs(data, path=path, marks=marks, env=env)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError("\n".join(validation_problems(path, marks, err))) from err
