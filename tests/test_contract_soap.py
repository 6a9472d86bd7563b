"""The connector contract for the declarative SOAP connector, against the eDoc hub stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from connectors.soap import clear_wsdl_cache
from gateway.standins.edoc_hub import SANDBOX_TOKEN, EdocHubState, create_edoc_hub_app
from tests.contract import ConnectorContract, ContractTarget
from tests.contract.support import build, serve, source_file

PAGE = 10


def _small_pages(data: dict[str, Any]) -> None:
    data["streams"]["documents"]["paginator"]["size"] = PAGE


class TestSoapConnectorContract(ConnectorContract):
    @pytest.fixture
    def make_target(self, tmp_path: Path) -> Iterator[Callable[[], ContractTarget]]:
        clear_wsdl_cache()
        with ExitStack() as stack:
            path = source_file(tmp_path / "sources", "edoc-hub.yaml", _small_pages)

            def make() -> ContractTarget:
                state = EdocHubState(days=1)
                server, faults = serve(stack, create_edoc_hub_app(state))
                env = {"EDOC_HUB_URL": server.url, "EDOC_HUB_TOKEN": SANDBOX_TOKEN}

                def keys() -> set[str]:
                    return {f"{d.receiver}|{d.document_id}" for a in ("SKHCN", "VPUBND", "XA_COCSAN")
                            for d in state.documents_of(a)}  # fmt: skip

                def ties() -> set[str]:
                    state.advance(86_400)
                    docs = [state.add_document("SKHCN", number=str(900 + n), notation="TB-UBND")
                            for n in range(PAGE + 2)]  # fmt: skip
                    return {f"{d.receiver}|{d.document_id}" for d in docs}

                def connector(good: bool = True) -> Any:
                    return build(path, env if good else {**env, "EDOC_HUB_TOKEN": "wrong-token"})

                return ContractTarget(stream="documents", connector=connector, expected_keys=keys, faults=faults,
                                      make_ties=ties, page_size=PAGE)  # fmt: skip

            yield make
        clear_wsdl_cache()
