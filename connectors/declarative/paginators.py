"""Paginators: small strategy objects that say which page to ask for next, each with a loop guard.

``first()`` gives the first page's query parameters; ``next(doc, records)`` the next page's, or ``None`` when
the stream is exhausted. A paginator that would ask for the same page twice raises instead of looping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from connectors.declarative.config import (
    CursorKeysetPaginator,
    NextLinkPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    PaginatorConfig,
)
from connectors.declarative.fieldmap import path_getter
from gateway.errors import ProtocolError

Params = dict[str, Any]


class Paginator(Protocol):
    def first(self) -> Params: ...

    def next(self, doc: Any, records: Sequence[Mapping[str, Any]]) -> Params | None: ...

    def fresh(self, records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Records of this page not already delivered (only keyset paging re-reads)."""
        ...


class _Guarded:
    def __init__(self, max_pages: int) -> None:
        self._seen: set[tuple[tuple[str, str], ...]] = set()
        self._max_pages = max_pages

    def _guard(self, params: Params) -> Params:
        fingerprint = tuple(sorted((k, str(v)) for k, v in params.items()))
        if fingerprint in self._seen:
            raise ProtocolError(f"paginator loop: page {dict(fingerprint)} was already read")
        if len(self._seen) >= self._max_pages:
            raise ProtocolError(f"more than {self._max_pages} pages; raise max_pages if this is expected")
        self._seen.add(fingerprint)
        return params

    def fresh(self, records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return list(records)


def _total(total_at: Callable[[Any], Any] | None, doc: Any) -> int | None:
    """The response's record total (``total_path``), None when absent; one that is not a number is the source's
    protocol error, which fails the stream with its reason (a ValueError would escape the sync engine)."""
    value = total_at(doc) if total_at is not None else None
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"the record total (total_path) is not a number: {str(value)[:100]!r}") from exc


class _PageNumber(_Guarded):
    def __init__(self, cfg: PageNumberPaginator) -> None:
        super().__init__(cfg.max_pages)
        self._cfg, self._page = cfg, cfg.start
        self._total = path_getter(cfg.total_path) if cfg.total_path else None
        self._read = 0

    def first(self) -> Params:
        return self._guard({self._cfg.page_param: self._page, self._cfg.size_param: self._cfg.size})

    def next(self, doc: Any, records: Sequence[Mapping[str, Any]]) -> Params | None:
        self._read += len(records)
        total = _total(self._total, doc)
        if len(records) < self._cfg.size or (total is not None and self._read >= total):
            return None
        self._page += 1
        return self._guard({self._cfg.page_param: self._page, self._cfg.size_param: self._cfg.size})


class _Offset(_Guarded):
    def __init__(self, cfg: OffsetPaginator) -> None:
        super().__init__(cfg.max_pages)
        self._cfg, self._offset = cfg, 0
        self._total = path_getter(cfg.total_path) if cfg.total_path else None

    def first(self) -> Params:
        return self._guard({self._cfg.offset_param: 0, self._cfg.limit_param: self._cfg.size})

    def next(self, doc: Any, records: Sequence[Mapping[str, Any]]) -> Params | None:
        self._offset += len(records)
        total = _total(self._total, doc)
        if len(records) < self._cfg.size or (total is not None and self._offset >= total):
            return None
        return self._guard({self._cfg.offset_param: self._offset, self._cfg.limit_param: self._cfg.size})


class _NextLink(_Guarded):
    def __init__(self, cfg: NextLinkPaginator) -> None:
        super().__init__(cfg.max_pages)
        self._cfg, self._next = cfg, path_getter(cfg.next_path)

    def first(self) -> Params:
        return {}

    def next(self, doc: Any, records: Sequence[Mapping[str, Any]]) -> Params | None:
        token = self._next(doc)
        if not token or not records:
            return None
        key = self._cfg.token_param or "__url__"
        return self._guard({key: token})


class _CursorKeyset(_Guarded):
    """See :class:`~connectors.declarative.config.CursorKeysetPaginator`."""

    def __init__(
        self,
        cfg: CursorKeysetPaginator,
        *,
        cursor_param: str,
        cursor_of: Callable[[Mapping[str, Any]], Any],
        render: Callable[[Any], str],
        key_of: Callable[[Mapping[str, Any]], Any],
        lower: Any,
    ) -> None:
        super().__init__(cfg.max_pages)
        self._cfg, self._cursor_param, self._cursor_of, self._render, self._key_of = (
            cfg,
            cursor_param,
            cursor_of,
            render,
            key_of,
        )
        self._bound = lower
        self._page = cfg.start
        self._seen_at_bound: set[Any] = set()

    def _params(self) -> Params:
        return self._guard(
            {
                self._cursor_param: self._render(self._bound),
                self._cfg.page_param: self._page,
                self._cfg.size_param: self._cfg.size,
            }
        )

    def first(self) -> Params:
        return self._params()

    def _moment(self, record: Mapping[str, Any]) -> Any:
        """The record's cursor value, or None when it has none or it does not parse.

        Such a record is the connector's to report (a ``RecordProblem``, quarantined); here it only cannot
        move the bound. Raising would end the stream on every run at the same page, for one bad record."""
        try:
            return self._cursor_of(record)
        except (ValueError, TypeError, OverflowError):
            return None

    def fresh(self, records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [r for r in records if not (self._moment(r) == self._bound and self._key_of(r) in self._seen_at_bound)]

    def next(self, doc: Any, records: Sequence[Mapping[str, Any]]) -> Params | None:
        if len(records) < self._cfg.size:
            return None
        moments = [self._moment(r) for r in records]
        # the page is sorted by the source's own values: the last readable one is a safe inclusive bound
        last = next((m for m in reversed(moments) if m is not None), self._bound)
        if last != self._bound:
            self._bound, self._page = last, self._cfg.start
            self._seen_at_bound = {self._key_of(r) for r, m in zip(records, moments, strict=True) if m == last}
        else:  # a whole page of one cursor value (or none readable): walk the run by page number
            self._page += 1
            self._seen_at_bound.update(self._key_of(r) for r, m in zip(records, moments, strict=True) if m == last)
        return self._params()


class _Single(_Guarded):
    def first(self) -> Params:
        return {}

    def next(self, doc: Any, records: Sequence[Mapping[str, Any]]) -> Params | None:
        return None


def build_paginator(cfg: PaginatorConfig | None, **keyset: Any) -> Paginator:
    if cfg is None:
        return _Single(1)
    if isinstance(cfg, PageNumberPaginator):
        return _PageNumber(cfg)
    if isinstance(cfg, OffsetPaginator):
        return _Offset(cfg)
    if isinstance(cfg, NextLinkPaginator):
        return _NextLink(cfg)
    return _CursorKeyset(cfg, **keyset)
