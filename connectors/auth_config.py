"""Configuration models of the authentication strategies added beyond the declarative REST file's first four.

- :class:`HmacHeadersAuth`: the national exchange axis (VXP) style: the client's headers travel under an
  ``XroadVnpt-`` prefix and are signed with HMAC-SHA256 over their JSON with the system's shared secret;
- :class:`ClientCertificateAuth`: mutual TLS: a client certificate and key (PEM files), optionally a private CA
  to verify the server with. It acts on the HTTP client, not on each request.

They join the declarative ``AuthConfig`` union (``connectors.declarative.config``) and are used as they are by
Python connectors (``connectors.vxp``). Secrets are :class:`~pydantic.SecretStr` and must be written in source
files as ``${ENV}`` / ``${file:...}`` references (``secret`` and ``key_password`` are refused as literals).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["ClientCertificateAuth", "HmacHeadersAuth", "TlsConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HmacHeadersAuth(_Strict):
    """Headers signed with HMAC-SHA256 (``XroadVnpt-*`` on the national axis, see ``docs/connectors.md``).

    Each request sends ``{prefix}systemid``, ``{prefix}timestamp`` (epoch milliseconds) and its own call headers
    (e.g. ``messagetype``, ``docId``) under ``prefix``; ``{prefix}sign-header-key`` lists those prefixed names
    joined by ``;``, ``{prefix}sign-header`` is a compact JSON object of them and ``{prefix}hash-header`` the
    lower-case hex HMAC-SHA256 of that JSON under ``secret``.
    """

    type: Literal["hmac_headers"]
    system_id: str
    secret: SecretStr
    prefix: str = "XroadVnpt-"
    signed: list[str] = Field(default_factory=list)  # request headers that must also be moved under the prefix


class TlsConfig(_Strict):
    """A client certificate (PEM) and its key, and optionally the CA bundle that signs the server's certificate."""

    cert_file: str
    key_file: str
    key_password: SecretStr | None = None
    ca_file: str | None = None  # None: the system's trust store


class ClientCertificateAuth(_Strict):
    """Mutual TLS as the source's only credential (a declarative REST source behind a TLS-terminating LGSP)."""

    type: Literal["client_certificate"]
    tls: TlsConfig
