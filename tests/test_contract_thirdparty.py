"""A third-party connector package (``tests/fixtures/thirdparty``) found through a real entry point and held to
the same contract as the built-in ones.

The fixture directory is an installed distribution as ``importlib.metadata`` sees one: a ``*.dist-info`` with
``METADATA`` and ``entry_points.txt`` next to the package. Putting the directory on ``sys.path`` is all
installing it would do; ``gateway.connector.connector_kinds()`` then lists ``acme`` and a source file with
``kind: acme`` loads and builds it, exactly as for ``pip install kpigw-acme``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from gateway.connector import connector_kinds
from gateway.standins.server import serve_in_thread
from tests.contract import ConnectorContract, ContractTarget
from tests.contract.support import build, serve

PACKAGE_DIR = Path(__file__).parent / "fixtures" / "thirdparty"
PAGE = 6
SOURCE = f"""name: acme
kind: acme
base_url: "${{ACME_URL}}"
api_key: "${{ACME_KEY}}"
page_size: {PAGE}
"""


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PACKAGE_DIR))
    importlib.invalidate_caches()


def test_the_entry_point_is_discovered_only_once_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "acme" not in connector_kinds()
    monkeypatch.syspath_prepend(str(PACKAGE_DIR))
    importlib.invalidate_caches()
    kinds = connector_kinds()
    assert {"acme", "rest", "soap", "vxp"} <= set(kinds)
    assert kinds["acme"].__module__ == "kpigw_acme.connector"


@pytest.mark.usefixtures("installed")
class TestThirdPartyConnectorContract(ConnectorContract):
    @pytest.fixture
    def make_target(self, tmp_path: Path) -> Iterator[Callable[[], ContractTarget]]:
        from kpigw_acme.standin import API_KEY, AcmeState, create_app

        path = tmp_path / "sources" / "acme.yaml"
        path.parent.mkdir()
        path.write_text(SOURCE, encoding="utf-8")
        with ExitStack() as stack:

            def make() -> ContractTarget:
                state = AcmeState()
                server, faults = serve(stack, create_app(state))
                env = {"ACME_URL": server.url, "ACME_KEY": API_KEY}

                def connector(good: bool = True) -> Any:
                    return build(path, env if good else {**env, "ACME_KEY": "wrong"})

                def ties() -> set[str]:
                    uids = sorted(state.items)[: PAGE + 2]
                    state.touch(uids)
                    return set(uids)

                return ContractTarget(stream="assignments", connector=connector, faults=faults, page_size=PAGE,
                                      expected_keys=lambda: set(state.items), make_ties=ties)  # fmt: skip

            yield make


def test_the_guides_declarative_example_turns_the_tracker_into_facts(tmp_path: Path, installed: None) -> None:
    """docs/connectors.md, section 2: the YAML as printed, against the tracker, into facts."""
    import re

    from kpigw_acme.standin import API_KEY, AcmeState, create_app

    from gateway.metrics import Metrics
    from gateway.retry import RetryPolicy
    from gateway.runtime import build_runtime
    from gateway.settings import Settings
    from tests.contract.support import ROOT
    from tests.spine_support import count

    guide = (ROOT / "docs" / "connectors.md").read_text(encoding="utf-8")
    example = re.search(r"`sources/acme.yaml`:\n\n```yaml\n(.*?)```", guide, re.S)
    assert example is not None
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "acme.yaml").write_text(example.group(1), encoding="utf-8")
    state = AcmeState()
    with serve_in_thread(create_app(state)) as server:
        settings = Settings(database_url=f"sqlite:///{tmp_path}/s.db", sources_dir=sources,
                            mappings_dir=ROOT / "mappings", scheduler=False)  # fmt: skip
        rt = build_runtime(settings, retry=RetryPolicy.instant(), metrics=Metrics(),
                           env={"ACME_URL": server.url, "ACME_KEY": API_KEY})  # fmt: skip
        connector = rt.connector("acme")
        try:
            report = rt.sync.run(connector)
        finally:
            connector.close()
        assert report.outcome in ("success", "partial"), report
        assert report.read == len(state.items)
        assert count(rt.db, "SELECT count(*) FROM fact WHERE source = 'acme'") > 0
        rt.close()
