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


def start_standins(*, vxp_days: int = 7) -> StandIns:
    """Start every bundled stand-in system on loopback; returns the env their source files need.

    The e-office, the eDoc hub (seeded from the e-office), the LGSP one-stop system and the national axis, all on
    the same clock (1 November 2026 at start) with the same agencies and people. The axis holds only the last
    ``vxp_days`` of messages (an inbox, not an archive), which keeps the demo's first sync short.
    """
    from datetime import timedelta

    from gateway.standins.edoc_hub import PROVINCE_ORGAN, SANDBOX_TOKEN, EdocHubState, create_edoc_hub_app
    from gateway.standins.eoffice import EOfficeState, create_eoffice_app
    from gateway.standins.lgsp import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LgspState, create_lgsp_app
    from gateway.standins.server import serve_in_thread
    from gateway.standins.vxp import PROVINCE_SYSTEM, SANDBOX_SECRET, VxpState, create_vxp_app

    out = StandIns()
    eoffice = EOfficeState()
    server = out.stack.enter_context(serve_in_thread(create_eoffice_app(eoffice)))
    out.env.update(EOFFICE_URL=server.url, EOFFICE_USER=eoffice.username, EOFFICE_PASSWORD=eoffice.password)
    out.advancers.append(lambda: eoffice.advance(days=1))

    hub = EdocHubState(eoffice=eoffice)
    server = out.stack.enter_context(serve_in_thread(create_edoc_hub_app(hub)))
    out.env.update(EDOC_HUB_URL=server.url, EDOC_HUB_ORGAN_ID=PROVINCE_ORGAN, EDOC_HUB_TOKEN=SANDBOX_TOKEN)
    out.advancers.append(lambda: hub.advance(86_400))

    lgsp = LgspState()
    server = out.stack.enter_context(serve_in_thread(create_lgsp_app(lgsp)))
    out.env.update(LGSP_URL=server.url, LGSP_CLIENT_ID=SANDBOX_CLIENT_ID, LGSP_CLIENT_SECRET=SANDBOX_CLIENT_SECRET)
    out.advancers.append(lambda: lgsp.advance(1))

    clock = eoffice.now.date()
    vxp = VxpState(start=clock - timedelta(days=vxp_days), days=vxp_days) if vxp_days else VxpState(days=0)
    server = out.stack.enter_context(serve_in_thread(create_vxp_app(vxp)))
    out.env.update(VXP_URL=server.url, VXP_SYSTEM_ID=PROVINCE_SYSTEM, VXP_SECRET=SANDBOX_SECRET)
    out.advancers.append(lambda: vxp.advance(1))
    return out


def run_demo(*, port: int, host: str = "127.0.0.1", database: Path, advance_every: float = 120.0) -> None:
    import uvicorn

    from gateway.api import create_app
    from gateway.gctune import tune_for_service
    from gateway.runtime import build_runtime
    from gateway.settings import Settings

    standins = start_standins()
    os.environ.update(standins.env)
    # open sandbox mode: the demo serves its synthetic facts without credentials (it says so in every response)
    settings = Settings(database_url=f"sqlite:///{database}", host=host, port=port, auth_mode="open")
    runtime = build_runtime(settings)
    try:
        from concurrent.futures import ThreadPoolExecutor

        def first_sync(name: str) -> None:
            connector = runtime.connector(name)
            try:
                report = runtime.sync.run(connector, trigger="demo")
            finally:
                connector.close()
            print(f"  {name}: {report.outcome}, {report.read} records, {report.facts_written} facts written "
                  f"in {report.seconds:.1f}s", flush=True)

        # the sources are independent systems: their first syncs overlap (each is mostly waiting on its source)
        with ThreadPoolExecutor(max_workers=len(runtime.sources) or 1, thread_name_prefix="demo-sync") as pool:
            list(pool.map(first_sync, runtime.sources))
        stop = threading.Event()

        def advance_clock() -> None:  # the stand-ins live on: new documents, late completions, moved deadlines
            while not stop.wait(advance_every):
                for advance in standins.advancers:
                    advance()

        threading.Thread(target=advance_clock, name="demo-clock", daemon=True).start()
        print(f"KPI gateway demo on http://{host}:{port}  (facts: /v1/facts, docs: /docs, metrics: /metrics)",
              flush=True)
        app = create_app(runtime)
        tune_for_service(runtime.settings)
        uvicorn.run(app, host=host, port=port, log_level="warning")
        stop.set()
    finally:
        runtime.close()
        standins.close()
