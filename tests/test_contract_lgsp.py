"""The connector contract for the LGSP one-stop source (declarative REST + OAuth2), against its stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from gateway.standins.lgsp import SANDBOX_CLIENT_SECRET, LgspState, create_lgsp_app
from tests.contract import ConnectorContract, ContractTarget
from tests.contract.support import build, serve, source_file

PAGE = 5


def _small_pages(data: dict[str, Any]) -> None:
    data["streams"]["dossiers"]["paginator"]["size"] = PAGE


class TestLgspConnectorContract(ConnectorContract):
    @pytest.fixture
    def make_target(self, tmp_path: Path) -> Iterator[Callable[[], ContractTarget]]:
        with ExitStack() as stack:
            path = source_file(tmp_path / "sources", "lgsp.yaml", _small_pages)

            def make() -> ContractTarget:
                state = LgspState(days=4)
                server, faults = serve(stack, create_lgsp_app(state), skip=("/token",))
                env = {"LGSP_URL": server.url, "LGSP_CLIENT_SECRET": SANDBOX_CLIENT_SECRET}

                def ties() -> set[str]:
                    codes = [d.code for d in state.visible()][: PAGE + 2]
                    state.advance(0.5)
                    state.touch(codes)
                    return set(codes)

                def connector(good: bool = True) -> Any:
                    return build(path, env if good else {**env, "LGSP_CLIENT_SECRET": "wrong"})

                def keys() -> set[str]:
                    return {d.code for d in state.visible()}

                return ContractTarget(stream="dossiers", connector=connector, faults=faults, page_size=PAGE,
                                      expected_keys=keys, make_ties=ties)  # fmt: skip

            yield make
