"""Interop: the SOAP connector against a service built with an independent stack (spyne), in the .NET ASMX
document/literal-wrapped style, served over a real loopback socket by wsgiref in its own process. Nobody here
wrote its WSDL or its envelopes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.soap import SoapConnector, clear_wsdl_cache
from gateway.types import ItemKind, Role
from tests._soap_helpers import context

SERVICE = Path(__file__).parent / "fixtures" / "soap" / "spyne_service.py"


@pytest.fixture(scope="module")
def spyne_url() -> Iterator[str]:
    """The spyne service in its own process (spyne patches ``sys.meta_path``; keep it out of this one)."""
    process = subprocess.Popen([sys.executable, str(SERVICE)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def config(url: str, **stream_changes: Any) -> dict[str, Any]:
    stream: dict[str, Any] = {
        "operation": "GetTasks",
        "args": {"UserName": "gateway"},
        "paginator": {"type": "page_number", "page_param": "PageIndex", "size_param": "PageSize", "size": 3},
        "records": "GetTasksResult.TaskRecord",
        "key": "Id",
        "cursor": {
            "field": "UpdatedAt",
            "param": "Since",
            "format": "dd/MM/yyyy HH:mm:ss",
            "start": "01/01/2026 00:00:00",
        },
        "normalize": {
            "kind": "task",
            "key": "task:{Agency}:{Id}",
            "agency": "Agency",
            "title": "Title",
            "participants": [{"role": "lead", "user": "Assignee"}],
        },
        **stream_changes,
    }
    return {
        "name": "spyne-tasks",
        "kind": "soap",
        "wsdl": f"{url}?wsdl",
        "id_system": "ioffice",
        "streams": {"tasks": stream},
    }


@pytest.mark.parametrize("decode", ["lxml", "zeep"])
def test_reads_pages_from_a_spyne_service(spyne_url: str, decode: str) -> None:
    clear_wsdl_cache()
    # zeep unwraps the single result (here an array: a list); lxml paths start at the response wrapper
    records = "." if decode == "zeep" else "GetTasksResult.TaskRecord"
    cfg = {**config(spyne_url, records=records), "decode": decode}
    connector = SoapConnector(name="spyne-tasks", config=cfg, context=context())
    try:
        assert connector.check().ok
        pages = list(connector.read("tasks", None))
        records = [r for page in pages for r in page.records]
        assert [r.key for r in records] == [str(i) for i in range(1, 8)]
        assert len(pages) == 3  # 3 + 3 + 1: paging ends on the short page
        assert pages[-1].checkpoint == "2026-09-07T08:00:00+07:00"
        item = connector.normalize(records[0])[0]
        assert item.key == "task:SKHCN:1"
        assert item.kind is ItemKind.TASK
        assert item.participants[0].user_id == "u1001"
        assert item.participants[0].role is Role.LEAD
    finally:
        connector.close()


def test_json_payload_in_a_spyne_string(spyne_url: str) -> None:
    clear_wsdl_cache()
    stream = {"operation": "GetTaskJson", "args": {"Id": "42"}, "paginator": None, "cursor": None,
              "records": "GetTaskJsonResult", "payload": {"encoding": "json"}}  # fmt: skip
    connector = SoapConnector(name="spyne-tasks", config=config(spyne_url, **stream), context=context())
    try:
        (page,) = list(connector.read("tasks", None))
        assert page.records[0].payload["Title"] == "JSON nhiệm vụ"
        assert connector.normalize(page.records[0])[0].key == "task:SKHCN:42"
    finally:
        connector.close()


def test_spyne_fault_is_classified(spyne_url: str) -> None:
    from gateway.errors import AuthError

    clear_wsdl_cache()
    connector = SoapConnector(
        name="spyne-tasks", config=config(spyne_url, args={"UserName": "intruder"}), context=context()
    )
    try:
        with pytest.raises(AuthError, match="access denied"):
            next(iter(connector.read("tasks", None)))
    finally:
        connector.close()
