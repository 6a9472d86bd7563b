"""The authenticated caller (:class:`Principal`) and the agencies it may read (:class:`Scope`).

A :class:`Scope` is handed to every query function, which adds :meth:`Scope.where` to its SQL, so a route that
forgets a check still cannot return another agency's rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, false, true

from gateway.security.errors import Forbidden

READ_FACTS = "read_facts"
ADMIN = "admin"
ROLES = frozenset({READ_FACTS, ADMIN})
ALL = "*"


@dataclass(frozen=True)
class Scope:
    """``agencies=None`` means every agency (province-wide clients); an empty set means none."""

    agencies: frozenset[str] | None

    @classmethod
    def of(cls, agencies: Iterable[str]) -> Scope:
        given = frozenset(a.strip() for a in agencies if a.strip())
        return cls(None) if ALL in given else cls(given)

    @property
    def everything(self) -> bool:
        return self.agencies is None

    def allows(self, agency: str) -> bool:
        return self.agencies is None or agency in self.agencies

    def where(self, column: Any) -> ColumnElement[bool]:
        """The SQL predicate restricting ``column`` (an agency column) to this scope."""
        if self.agencies is None:
            return true()
        if not self.agencies:
            return false()
        return column.in_(sorted(self.agencies))  # type: ignore[no-any-return]

    def covers(self, other: Scope) -> bool:
        if self.agencies is None:
            return True
        return other.agencies is not None and other.agencies <= self.agencies

    def listing(self) -> list[str]:
        return [ALL] if self.agencies is None else sorted(self.agencies)


@dataclass(frozen=True)
class Principal:
    client_id: str
    roles: frozenset[str]
    scope: Scope
    via: str  # key | oidc | open
    rate_per_minute: int | None = None

    def require(self, role: str) -> None:
        if role not in self.roles:
            raise Forbidden(f"this operation needs the {role!r} role; client {self.client_id!r} has "
                            f"{sorted(self.roles) or 'none'}")  # fmt: skip

    def require_agency(self, agency: str) -> None:
        if not self.scope.allows(agency):
            raise Forbidden(f"agency {agency!r} is outside the scope of client {self.client_id!r}")
