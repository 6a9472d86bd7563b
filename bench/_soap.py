"""The SOAP/edXML source for ``bench/sync_bench.py --source soap``: the stand-in hub in bulk mode on loopback.

``soap_bench_source(records)`` starts :mod:`gateway.standins.edoc_hub` with ``records`` synthetic documents
(each one edXML document packet and five status packets, generated lazily from its index) and yields the
source configuration mapping of ``sources/edoc-hub.yaml`` pointed at it, ready for
``SoapConnector(name=..., config=mapping, context=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.standins.edoc_hub import SANDBOX_TOKEN, EdocHubState, create_edoc_hub_app
from gateway.standins.server import serve_in_thread
from gateway.yamlconf import load_yaml, resolve_refs

SOURCE_FILE = Path(__file__).resolve().parent.parent / "sources" / "edoc-hub.yaml"
PACKETS_PER_RECORD = 6  # one document packet + statuses 01, 03, 04, 05, 06


@contextmanager
def soap_bench_source(records: int) -> Iterator[dict[str, Any]]:
    state = EdocHubState(days=0, bulk_records=records)
    with serve_in_thread(create_edoc_hub_app(state)) as server:
        data, marks = load_yaml(SOURCE_FILE)
        env = {"EDOC_HUB_URL": server.url, "EDOC_HUB_TOKEN": SANDBOX_TOKEN}
        yield resolve_refs(data, path=SOURCE_FILE, marks=marks, env=env)
