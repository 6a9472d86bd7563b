"""Settings from the environment (prefix ``KPIGW_``) or the command line; built once and injected."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

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
    # Worker processes preparing sync pages (normalize, value, encode); None: one per core beyond the first, at
    # most four; 0: prepare on a thread of the gateway's process (gateway/sync/prepare.py).
    prepare_workers: int | None = Field(default=None, ge=0, le=32)
    lease_seconds: float = 60.0
    replica_id: str = Field(default_factory=_replica_id)
    metrics_token: SecretStr | None = None
    log_level: str = "INFO"
    log_json: bool = True

    # --- facts API security and limits (gateway/security, gateway/api) ---
    auth_mode: Literal["required", "open"] = "required"  # open: unauthenticated sandbox, for the demo only
    oidc_issuer: str | None = None  # OIDC bearer tokens: the issuer (iss) to accept
    oidc_audience: str | None = None  # expected aud; None: not checked
    oidc_jwks_url: str | None = None  # where the issuer's signing keys are
    oidc_agencies_claim: str = "kpigw_agencies"  # claim listing the agencies ("*" = all)
    oidc_roles_claim: str = "kpigw_roles"  # claim listing roles: read_facts, admin
    rate_limit_per_minute: int = 1200  # per client, unless the client has its own
    rate_limit_burst: int = 100
    max_page_size: int = 1000
    api_key_cache_seconds: float = Field(default=10.0, ge=0)  # verified keys reused this long (CLI revocations lag)
    api_read_concurrency: int = Field(default=3, ge=1)  # per process: hot reads on threads at once (see _read_limiter)
    api_response_cache_mb: float = Field(default=32.0, ge=0)  # per process; 0 turns the response cache off
    gc_tuning: bool = True  # serve, sync, demo: freeze start-up objects, rarer young collections (gctune)
    max_request_bytes: int = 65536
