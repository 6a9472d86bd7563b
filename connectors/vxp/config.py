"""The national-axis (VXP) source file: where the axis is, the system's signed-header credentials (and optionally
a client certificate), which message types to read, and how edXML packets become work items.

Validated with ``extra="forbid"`` like every source file; secrets are ``${ENV}`` references.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.auth_config import HmacHeadersAuth, TlsConfig
from connectors.declarative.config import LimitsConfig, ScheduleConfig

__all__ = ["VxpEdxmlConfig", "VxpSourceConfig", "VxpStreamConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VxpStreamConfig(_Strict):
    messagetype: Literal["status", "edoc"]


class VxpEdxmlConfig(_Strict):
    """How packets become work items: keyed like the e-office and the hub key the same document."""

    key: str = "doc:{agency}:in:{issuer}:{number_symbol}"
    agencies: dict[str, str] = Field(min_length=1)  # receiving OrganId -> gateway agency code


def _vxp_auth_default() -> list[str]:
    return ["messagetype", "docId", "status"]


class VxpHmacAuth(HmacHeadersAuth):
    signed: list[str] = Field(default_factory=_vxp_auth_default)


class VxpSourceConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    kind: Literal["vxp"]
    description: str = ""
    base_url: str
    id_system: str = "edxml"
    auth: VxpHmacAuth
    tls: TlsConfig | None = None  # a client certificate, when the axis' gateway asks for one
    page_size: int = Field(default=50, ge=1, le=1000)  # packets fetched (getEdoc) per page
    max_per_run: int = Field(default=2000, ge=1, le=20_000)  # bounds the acknowledgement list in the cursor
    streams: dict[str, VxpStreamConfig] = Field(min_length=1)
    edxml: VxpEdxmlConfig
    limits: LimitsConfig = LimitsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
