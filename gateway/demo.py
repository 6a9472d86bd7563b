"""``kpigw demo``: the gateway with its SQLite store and the bundled stand-in systems, serving real facts.

The stand-ins run on loopback (ephemeral ports); their addresses and sandbox credentials reach the source files
through the environment variables those files reference, exactly as a real deployment's secrets would.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("kpigw.demo")


@dataclass
class StandIns:
    env: dict[str, str] = field(default_factory=dict)
    advancers: list[Callable[[], Any]] = field(default_factory=list)
    stack: ExitStack = field(default_factory=ExitStack)

    def close(self) -> None:
        self.stack.close()


def start_standins() -> StandIns:
    """Start every bundled stand-in system on loopback; returns the env its source files need."""
    from gateway.standins.eoffice import EOfficeState, create_eoffice_app
    from gateway.standins.server import serve_in_thread

    out = StandIns()
    eoffice = EOfficeState()
    server = out.stack.enter_context(serve_in_thread(create_eoffice_app(eoffice)))
    out.env.update(EOFFICE_URL=server.url, EOFFICE_USER=eoffice.username, EOFFICE_PASSWORD=eoffice.password)
    out.advancers.append(lambda: eoffice.advance(days=1))

    from gateway.standins.edoc_hub import SANDBOX_TOKEN, EdocHubState, create_edoc_hub_app

    hub = EdocHubState(eoffice=eoffice)  # the same documents, seen through the provincial eDoc hub
    hub_server = out.stack.enter_context(serve_in_thread(create_edoc_hub_app(hub)))
    out.env.update(EDOC_HUB_URL=hub_server.url, EDOC_HUB_TOKEN=SANDBOX_TOKEN)
    out.advancers.append(lambda: hub.advance(seconds=86_400))
    return out


def run_demo(*, port: int, host: str = "127.0.0.1", database: Path, advance_every: float = 120.0) -> None:
    import uvicorn

    from gateway.api import create_app
    from gateway.runtime import build_runtime
    from gateway.settings import Settings

    standins = start_standins()
    os.environ.update(standins.env)
    settings = Settings(database_url=f"sqlite:///{database}", host=host, port=port)
    runtime = build_runtime(settings)
    try:
        for name in runtime.sources:
            connector = runtime.connector(name)
            try:
                report = runtime.sync.run(connector, trigger="demo")
            finally:
                connector.close()
            print(f"  {name}: {report.outcome}, {report.read} records, {report.facts_written} facts written "
                  f"in {report.seconds:.1f}s", flush=True)
        stop = threading.Event()

        def advance_clock() -> None:  # the stand-ins live on: new documents, late completions, moved deadlines
            while not stop.wait(advance_every):
                for advance in standins.advancers:
                    advance()

        threading.Thread(target=advance_clock, name="demo-clock", daemon=True).start()
        print(f"KPI gateway demo on http://{host}:{port}  (facts: /v1/facts, docs: /docs, metrics: /metrics)",
              flush=True)
        uvicorn.run(create_app(runtime), host=host, port=port, log_level="warning")
        stop.set()
    finally:
        runtime.close()
        standins.close()
