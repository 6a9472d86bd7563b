"""Settings from the environment (prefix ``KPIGW_``) or the command line; built once and injected."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def bundled(name: str) -> Path:
    """A data directory shipped with the project: the checkout's own (editable install) or the wheel's copy."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / name, package / "_bundled" / name):
        if candidate.is_dir():
            return candidate
    return package.parent / name


def _replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KPIGW_", extra="ignore")

    database_url: str = "sqlite:///./kpigw.db"
    sources_dir: Path = Field(default_factory=lambda: bundled("sources"))
    mappings_dir: Path = Field(default_factory=lambda: bundled("mappings"))
    host: str = "127.0.0.1"
    port: int = 8000
    scheduler: bool = True
    max_concurrent_syncs: int = 4
    lease_seconds: float = 60.0
    replica_id: str = Field(default_factory=_replica_id)
    metrics_token: SecretStr | None = None
    log_level: str = "INFO"
    log_json: bool = True
