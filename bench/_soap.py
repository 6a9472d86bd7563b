"""The SOAP/edXML source for ``bench/sync_bench.py --source soap``: the stand-in hub in bulk mode on loopback.

``soap_bench_source(records)`` starts :mod:`gateway.standins.edoc_hub` with ``records`` synthetic documents
(each one edXML document packet and five status packets, generated lazily from its index) in a **separate
process**, as a real hub would be: in a thread of the benchmark's own process the hub's request handling and
packet rendering would compete with the gateway for the GIL and be counted against the gateway. It yields the
source configuration mapping of ``sources/edoc-hub.yaml`` pointed at that process, ready for
``SoapConnector(name=..., config=mapping, context=...)``, and stops the process when the ``with`` ends.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.standins.edoc_hub import SANDBOX_TOKEN
from gateway.yamlconf import load_yaml, resolve_refs

ROOT = Path(__file__).resolve().parent.parent
SOURCE_FILE = ROOT / "sources" / "edoc-hub.yaml"
PACKETS_PER_RECORD = 6  # one document packet + statuses 01, 03, 04, 05, 06

# The hub process: serve until the benchmark closes our stdin (or dies, which closes it too).
_HUB_SERVER = """
import sys
from gateway.standins.edoc_hub import EdocHubState, create_edoc_hub_app
from gateway.standins.server import serve_in_thread
state = EdocHubState(days=0, bulk_records=int(sys.argv[1]))
server = serve_in_thread(create_edoc_hub_app(state, latency=float(sys.argv[2])))
print(server.url, flush=True)
sys.stdin.read()
server.stop()
"""


@contextmanager
def hub_process(records: int, *, latency: float = 0.0) -> Iterator[str]:
    """Run the stand-in hub with ``records`` bulk documents in a child process; yield its base URL.

    ``latency``: seconds added to every answer (a hub across a real network, not on loopback)."""
    with subprocess.Popen(
        [sys.executable, "-c", _HUB_SERVER, str(records), str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            if not url.startswith("http"):
                raise RuntimeError(f"the hub process did not start (exit code {proc.poll()})")
            yield url
        finally:
            if proc.stdin is not None:
                proc.stdin.close()  # the hub stops when its stdin closes (also if this process dies)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def soap_bench_source(records: int, *, latency: float = 0.0) -> Iterator[dict[str, Any]]:
    with hub_process(records, latency=latency) as url:
        data, marks = load_yaml(SOURCE_FILE)
        env = {"EDOC_HUB_URL": url, "EDOC_HUB_TOKEN": SANDBOX_TOKEN}
        yield resolve_refs(data, path=SOURCE_FILE, marks=marks, env=env)
