"""Shared helpers of the SOAP tests: a connector context for loopback servers, the shipped source loaded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.soap import SoapConnector, SoapSourceConfig
from gateway.connector import ConnectorContext
from gateway.http import make_http_client
from gateway.retry import RetryPolicy
from gateway.yamlconf import load_model

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "sources" / "edoc-hub.yaml"


def context(config_dir: Path = ROOT / "sources", attempts: int = 3) -> ConnectorContext:
    return ConnectorContext(
        http_client=make_http_client,
        retry=RetryPolicy.instant(attempts),
        now=lambda: datetime.now(UTC),
        secrets=lambda name: name,
        config_dir=config_dir,
    )


def hub_config(url: str, token: str, **changes: Any) -> SoapSourceConfig:
    cfg = load_model(SOURCE, SoapSourceConfig, env={"EDOC_HUB_URL": url, "EDOC_HUB_TOKEN": token})
    return cfg.model_copy(update=changes) if changes else cfg


def hub_connector(url: str, token: str, attempts: int = 3, **changes: Any) -> SoapConnector:
    return SoapConnector(name="edoc-hub", config=hub_config(url, token, **changes), context=context(attempts=attempts))
