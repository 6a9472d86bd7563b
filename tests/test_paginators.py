"""Paginators against a respx-faked API: each kind ends, loops are refused, equal cursors across pages kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from connectors.declarative.rest import RestConnector
from gateway.connector import ConnectorContext
from gateway.errors import ProtocolError
from gateway.http import make_http_client
from gateway.retry import RetryPolicy
from gateway.types import VN_TZ

BASE = "http://src.test"


def _connector(paginator: dict[str, Any], *, cursor: dict[str, Any] | None = None,
               records: str = "items") -> RestConnector:  # fmt: skip
    stream: dict[str, Any] = {
        "path": "/items", "records": records, "key": "id", "paginator": paginator,
        "normalize": {"kind": "task", "key": "t:{id}", "agency": "agency"},
    }  # fmt: skip
    if cursor:
        stream["cursor"] = cursor
    config = {"name": "fake", "kind": "rest", "base_url": BASE, "id_system": "x", "auth": {"type": "none"},
              "streams": {"items": stream}}  # fmt: skip
    context = ConnectorContext(http_client=make_http_client, retry=RetryPolicy.instant(), now=lambda: datetime.now(UTC),
                               secrets=lambda _n: "", config_dir=__import__("pathlib").Path("."))  # fmt: skip
    return RestConnector(name="fake", config=config, context=context)


def _keys(connector: RestConnector, cursor: str | None = None) -> list[str]:
    return [r.key for page in connector.read("items", cursor) for r in page.records]


DATA = [{"id": i, "agency": "A", "updated": f"2026-09-01T08:{i // 3:02d}:00+07:00"} for i in range(23)]


def test_page_number_offset_and_next_link_each_read_everything_once() -> None:
    def by_page(request: httpx.Request) -> httpx.Response:
        page, size = int(request.url.params["page"]), int(request.url.params["size"])
        return httpx.Response(200, json={"items": DATA[(page - 1) * size : page * size], "total": len(DATA)})

    def by_offset(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        return httpx.Response(200, json={"items": DATA[offset : offset + limit]})

    def by_link(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("from", 0))
        nxt = f"{BASE}/items?from={start + 10}" if start + 10 < len(DATA) else None
        return httpx.Response(200, json={"items": DATA[start : start + 10], "next": nxt})

    expected = [str(d["id"]) for d in DATA]
    for paginator, handler in (({"type": "page_number", "size": 5, "total_path": "total"}, by_page),
                               ({"type": "offset", "size": 7}, by_offset),
                               ({"type": "next_link", "next_path": "next"}, by_link)):  # fmt: skip
        with respx.mock(assert_all_called=True) as router:
            router.get(url__startswith=f"{BASE}/items").mock(side_effect=handler)
            assert _keys(_connector(paginator)) == expected, paginator


def test_a_source_that_repeats_its_next_link_is_refused() -> None:
    with respx.mock() as router:
        router.get(url__startswith=f"{BASE}/items").respond(
            200, json={"items": DATA[:2], "next": f"{BASE}/items?from=5"}
        )
        with pytest.raises(ProtocolError, match="paginator loop"):
            _keys(_connector({"type": "next_link", "next_path": "next"}))


def test_keyset_paging_keeps_equal_cursor_values_across_page_boundaries() -> None:
    """Runs of equal update times straddle every page boundary and one run is longer than a page."""
    base = datetime(2026, 9, 1, 8, 0, tzinfo=VN_TZ)
    minutes = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3, 3, 4]
    rows = [{"id": i, "agency": "A", "updated": (base + timedelta(minutes=m)).isoformat()}
            for i, m in enumerate(minutes)]  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        since = datetime.fromisoformat(request.url.params["since"])
        page, size = int(request.url.params["page"]), int(request.url.params["size"])
        selected = [r for r in rows if datetime.fromisoformat(r["updated"]) >= since]  # inclusive, sorted
        return httpx.Response(200, json={"items": selected[(page - 1) * size : page * size]})

    cursor = {"field": "updated", "param": "since", "format": "iso", "start": "2026-01-01T00:00:00+07:00",
              "sorted": True}  # fmt: skip
    with respx.mock() as router:
        router.get(url__startswith=f"{BASE}/items").mock(side_effect=handler)
        connector = _connector({"type": "cursor_keyset", "size": 3}, cursor=cursor)
        keys = _keys(connector)
        checkpoints = [p.checkpoint for p in connector.read("items", None)]
    assert keys == [str(r["id"]) for r in rows]
    assert all(c is not None for c in checkpoints)
    # a resume from any checkpoint re-reads (inclusive) and loses nothing
    for checkpoint in checkpoints:
        with respx.mock() as router:
            router.get(url__startswith=f"{BASE}/items").mock(side_effect=handler)
            resumed = _keys(_connector({"type": "cursor_keyset", "size": 3}, cursor=cursor), checkpoint)
        moment = datetime.fromisoformat(checkpoint)  # type: ignore[arg-type]
        later = {str(r["id"]) for r in rows if datetime.fromisoformat(r["updated"]) >= moment}
        assert later <= set(resumed)


def test_records_without_key_or_not_objects_become_problems_not_losses() -> None:
    with respx.mock() as router:
        router.get(url__startswith=f"{BASE}/items").respond(
            200, json={"items": [{"id": 1, "agency": "A"}, {"agency": "A"}, "junk", {"id": 2, "agency": "A"}]}
        )
        pages = list(_connector({"type": "offset", "size": 10}).read("items", None))
    assert [r.key for r in pages[0].records] == ["1", "2"]
    assert sorted(p.reason for p in pages[0].problems) == [
        "record has no key field 'id'",
        "record is not a JSON object",
    ]
