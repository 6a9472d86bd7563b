"""The connector contract for the declarative REST connector, against the e-office stand-in (tasks stream)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.standins.eoffice import EOfficeState, create_eoffice_app
from tests.contract import ConnectorContract, ContractTarget
from tests.contract.support import build, serve, source_file

PAGE = 4


def _tasks_only(data: dict[str, Any]) -> None:
    data["streams"] = {"tasks": data["streams"]["tasks"]}
    data["streams"]["tasks"]["paginator"]["size"] = PAGE


class TestRestConnectorContract(ConnectorContract):
    @pytest.fixture
    def make_target(self, tmp_path: Path) -> Iterator[Callable[[], ContractTarget]]:
        with ExitStack() as stack:
            path = source_file(tmp_path / "sources", "eoffice.yaml", _tasks_only)

            def make() -> ContractTarget:
                state = EOfficeState(days=1, token_ttl=300)
                server, faults = serve(stack, create_eoffice_app(state), skip=("/qlvb/api/login",))
                env = {"EOFFICE_URL": server.url, "EOFFICE_USER": state.username, "EOFFICE_PASSWORD": state.password}

                def connector(good: bool = True) -> Any:
                    return build(path, env if good else {**env, "EOFFICE_PASSWORD": "wrong"})

                def ties() -> set[str]:
                    ids = state.ids("cong-viec")[: PAGE + 2]
                    for task_id in ids:  # the same clock: equal ngayCapNhat
                        state.move_deadline(task_id, (state.now + timedelta(days=9)).date())
                    return {str(i) for i in ids}

                return ContractTarget(
                    stream="tasks", connector=connector, faults=faults, page_size=PAGE, make_ties=ties,
                    expected_keys=lambda: {str(i) for i in state.ids("cong-viec")},
                )  # fmt: skip

            yield make
