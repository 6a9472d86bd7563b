"""The connector contract for the national-axis (VXP) Python connector, against its stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from gateway.standins.vxp import SANDBOX_SECRET, VxpState, create_vxp_app
from tests.contract import ConnectorContract, ContractTarget
from tests.contract.support import build, serve, source_file

PAGE = 4


def _small_pages(data: dict[str, Any]) -> None:
    data["page_size"] = PAGE
    data["streams"] = {"statuses": data["streams"]["statuses"]}


class TestVxpConnectorContract(ConnectorContract):
    @pytest.fixture
    def make_target(self, tmp_path: Path) -> Iterator[Callable[[], ContractTarget]]:
        with ExitStack() as stack:
            path = source_file(tmp_path / "sources", "vxp.yaml", _small_pages)

            def make() -> ContractTarget:
                state = VxpState(start=date(2026, 10, 28), days=3, future_days=0)
                server, faults = serve(stack, create_vxp_app(state))
                env = {"VXP_URL": server.url, "VXP_SECRET": SANDBOX_SECRET}

                def ties() -> set[str]:
                    state.advance(0.1)
                    return {state.add_status("SKHCN", "03", "P0010") for _ in range(PAGE + 2)}

                def connector(good: bool = True) -> Any:
                    return build(path, env if good else {**env, "VXP_SECRET": "not-the-secret"})

                return ContractTarget(stream="statuses", connector=connector, faults=faults, page_size=PAGE,
                                      expected_keys=lambda: state.ids("status"), make_ties=ties)  # fmt: skip

            yield make
