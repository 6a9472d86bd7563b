"""CEL conditions and quantities: compiled once at load, evaluated with a memo on the inputs they read.

Why CEL (the ``common-expression-language`` package): it is a small, side-effect-free, non-Turing-complete
language with a Rust evaluator; an expression cannot reach the file system, the network or Python objects, so
rule authors in an IT department can write conditions without a code review of Python. Programs are compiled
when the mappings load; a syntax error is a load error with the file, line and column of the expression.

Converting a Python context into CEL values dominates an evaluation (tens of microseconds), while the inputs
a condition reads (kind, doc type, urgency, ...) take few distinct values. A program is pure, so each one
keeps a bounded memo keyed by the values of exactly the variables it references (``Program.variables()``):
the hot path mostly evaluates a dictionary lookup.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import cel

from gateway.mapping.doctypes import abbreviation, canonical_doc_type, issuer_of
from gateway.types import EventKind, WorkItem

MEMO_LIMIT = 65_536
_MACRO_VAR = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


def _attrs(item: WorkItem) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in item.attributes.items()}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | datetime):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _text(item: WorkItem) -> str:
    return unicodedata.normalize("NFC", f"{item.doc_type or ''} {item.title or ''}").lower()


def _returns(item: WorkItem) -> int:
    counted = sum(1 for e in item.events if e.kind is EventKind.RETURN)
    if counted:
        return counted
    raw = item.attributes.get("returns")
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else 0


VARIABLES: Mapping[str, tuple[str, Callable[[WorkItem], Any]]] = {
    "kind": ("string: incoming_document | outgoing_document | task | dossier | step", lambda i: i.kind.value),
    "agency": ("string: the agency code", lambda i: i.agency),
    "source": ("string: the source name", lambda i: i.source),
    "stream": ("string: the source stream", lambda i: i.stream),
    "id_system": ("string: ioffice | onestop | edxml | ...", lambda i: i.id_system),
    "doc_type": ("string: canonical Decree-30 type name ('' if none)",
                 lambda i: canonical_doc_type(i.doc_type) or ""),
    "doc_type_raw": ("string: the type as the source sent it", lambda i: i.doc_type or ""),
    "doc_code": ("string: Decree-30 abbreviation (QĐ, TTr, ...)",
                 lambda i: abbreviation(canonical_doc_type(i.doc_type))),
    "number_symbol": ("string: e.g. 156/QĐ-UBND", lambda i: i.number_symbol or ""),
    "issuer": ("string: issuing organ part of the number-symbol (UBND)", lambda i: issuer_of(i.number_symbol)),
    "title": ("string: trích yếu", lambda i: i.title or ""),
    "text": ("string: doc_type_raw and title, NFC lower-case, for text.contains('khai sinh')", _text),
    "unit": ("string: the handling unit ('' if none)", lambda i: i.unit or ""),
    "status": ("string: the source's status", lambda i: i.status or ""),
    "urgency": ("string: attributes.urgency ('' if none)", lambda i: str(i.attributes.get("urgency") or "")),
    "attrs": ("map: the work item's attributes", _attrs),
    "roles": ("list(string): roles present among participants",
              lambda i: sorted({p.role.value for p in i.participants})),
    "participants": ("int: number of participants", lambda i: len(i.participants)),
    "completed": ("bool: the item has done_at", lambda i: i.done_at is not None),
    "has_due": ("bool: the item has due_at", lambda i: i.due_at is not None),
    "late": ("bool: done after due", lambda i: bool(i.done_at and i.due_at and i.done_at > i.due_at)),
    "returns": ("int: return events (or attributes.returns)", _returns),
    "deadline_changes": ("int: deadline_change events",
                         lambda i: sum(1 for e in i.events if e.kind is EventKind.DEADLINE_CHANGE)),
    "received_at": ("timestamp or null", lambda i: i.received_at),
    "due_at": ("timestamp or null", lambda i: i.due_at),
    "done_at": ("timestamp or null", lambda i: i.done_at),
}  # fmt: skip
"""The names a condition may read, with what they hold (also the documentation's table)."""


def _freeze(value: Any) -> Any:
    """A memo key for ``value``. Python's ``True == 1 == 1.0`` (one hash), but CEL tells them apart (``1 == true``
    is false, ``15.0 > 10`` an error), so a number or boolean is keyed with its type."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, bool | int | float):
        return (type(value), value)
    return value


class ItemVars:
    """The CEL view of one work item; each variable is computed at most once, only when a program reads it."""

    __slots__ = ("_cache", "item")

    def __init__(self, item: WorkItem) -> None:
        self.item = item
        self._cache: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        try:
            return self._cache[name]
        except KeyError:
            value = self._cache[name] = VARIABLES[name][1](self.item)
            return value


class ExpressionError(Exception):
    """A CEL expression failed to compile or to evaluate."""


class Expression:
    """A compiled CEL program with its referenced variables and a bounded memo of results."""

    __slots__ = ("_memo", "_program", "_variables", "source")

    def __init__(self, source: str) -> None:
        try:
            self._program = cel.compile(source)
        except (ValueError, RuntimeError) as exc:
            raise ExpressionError(_first_line(str(exc))) from exc
        self.source = source
        bound = set(_MACRO_VAR.findall(source))
        names = [n for n in self._program.variables() if n not in bound]
        unknown = [n for n in names if n not in VARIABLES]
        if unknown:
            raise ExpressionError(
                f"unknown name(s) {', '.join(sorted(unknown))}; a condition can read: {', '.join(VARIABLES)}"
            )
        self._variables = tuple(names)
        self._memo: dict[tuple[Any, ...], tuple[bool, Any]] = {}

    def evaluate(self, view: ItemVars) -> Any:
        """The expression's value for this item; raises :class:`ExpressionError` (memoized as well)."""
        values = tuple(view.get(n) for n in self._variables)
        try:
            key = tuple(_freeze(v) for v in values)
            hit = self._memo.get(key)
        except TypeError:  # an unhashable attribute value: evaluate without the memo
            key, hit = None, None
        if hit is None:
            try:
                hit = (True, self._program.execute(dict(zip(self._variables, values, strict=True))))
            except Exception as exc:
                hit = (False, f"{type(exc).__name__}: {_first_line(str(exc))}")
            if key is not None:
                if len(self._memo) >= MEMO_LIMIT:
                    self._memo.clear()
                self._memo[key] = hit
        ok, value = hit
        if not ok:
            raise ExpressionError(value)
        return value


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "error"


__all__ = ["VARIABLES", "Expression", "ExpressionError", "ItemVars"]
