"""Authentication strategies shared by every connector: one pluggable set, chosen by the ``auth.type`` key.

==============================  =====================================================================
``type``                        what goes on the wire
==============================  =====================================================================
``none``                        nothing
``login_token``                 log in once, send the token as a header; refreshed early and on 401
``api_key``                     a static header
``basic``                       ``Authorization: Basic ...``
``oauth2_client_credentials``   ``POST token_url`` (client secret in the form or as Basic), Bearer token
``hmac_headers``                ``XroadVnpt-*`` headers signed with HMAC-SHA256 (national axis, VXP)
``client_certificate``          mutual TLS: a client certificate on the HTTP client (no header)
SOAP ``body`` / ``ws_security``  credentials inside the envelope: :func:`soap_body_values`,
                                :func:`apply_ws_security` (used by ``connectors.soap``)
==============================  =====================================================================

A strategy decorates outgoing requests (``apply``), forgets cached credentials when the source says they
expired (``invalidate``; the connector then retries the call once) and may configure the HTTP client itself
(``client_kwargs``: a TLS context with the client certificate). Tokens are cached with their lifetime and
refreshed early (``refresh_before``), so a long sync rarely meets an expired token at all.

Secrets stay inside :class:`pydantic.SecretStr` until the moment they are sent; nothing here logs them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from connectors.auth_config import ClientCertificateAuth, HmacHeadersAuth, TlsConfig
from connectors.declarative.config import (
    ApiKeyAuth,
    AuthConfig,
    BasicAuth,
    LoginTokenAuth,
    NoAuth,
    OAuth2ClientCredentials,
)
from connectors.declarative.fieldmap import path_getter
from gateway.errors import AuthError, ConfigError, ProtocolError

__all__ = [
    "AuthStrategy",
    "Send",
    "apply_ws_security",
    "build_auth",
    "hmac_signature",
    "sign_headers",
    "soap_body_values",
    "tls_context",
]

Send = Callable[..., tuple[httpx.Response, bytes]]
"""``send(method, url, **httpx_request_kwargs)``: the connector's guarded call, relative to its base URL."""


class AuthStrategy(Protocol):
    def apply(self, request: httpx.Request, send: Send) -> None: ...

    def invalidate(self) -> None: ...

    def client_kwargs(self) -> dict[str, Any]: ...


class _Strategy:
    """Defaults: nothing to forget, nothing to configure on the client."""

    def apply(self, request: httpx.Request, send: Send) -> None:
        return None

    def invalidate(self) -> None:
        return None

    def client_kwargs(self) -> dict[str, Any]:
        return {}


class _Unauthenticated(_Strategy):
    pass


class _StaticHeader(_Strategy):
    def __init__(self, header: str, value_fn: Callable[[], str]) -> None:
        self._header, self._value_fn = header, value_fn

    def apply(self, request: httpx.Request, send: Send) -> None:
        request.headers[self._header] = self._value_fn()


class _CachedToken(_Strategy):
    """Shared machinery for strategies that obtain a token and cache it until shortly before it expires."""

    def __init__(self, *, header: str, prefix: str, refresh_before: float, clock: Callable[[], float]) -> None:
        self._header, self._prefix, self._refresh_before, self._clock = header, prefix, refresh_before, clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()  # sub-requests run on a thread pool; log in once, not eight times

    def _obtain(self, send: Send) -> tuple[str, float]:
        raise NotImplementedError

    def apply(self, request: httpx.Request, send: Send) -> None:
        with self._lock:
            if self._token is None or self._clock() >= self._expires - self._refresh_before:
                token, ttl = self._obtain(send)
                self._token, self._expires = token, self._clock() + ttl
            token = self._token
        request.headers[self._header] = f"{self._prefix}{token}"

    def invalidate(self) -> None:
        with self._lock:
            self._token = None


class _LoginToken(_CachedToken):
    def __init__(self, cfg: LoginTokenAuth, clock: Callable[[], float]) -> None:
        super().__init__(header=cfg.header, prefix=cfg.prefix, refresh_before=cfg.refresh_before, clock=clock)
        self._cfg = cfg
        self._token_at = path_getter(cfg.token_path)
        self._ttl_at = path_getter(cfg.expires_in_path) if cfg.expires_in_path else None

    def _obtain(self, send: Send) -> tuple[str, float]:
        cfg = self._cfg
        body: dict[str, Any] = dict(cfg.body)
        if cfg.username is not None:
            body[cfg.username_field] = cfg.username
        if cfg.password is not None:
            body[cfg.password_field] = cfg.password.get_secret_value()
        _response, raw = send(cfg.method, cfg.path, json=body if cfg.method == "POST" else None)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("login response is not JSON", where=cfg.path) from exc
        token = self._token_at(doc)
        if not token:
            raise AuthError("login refused: no token in the response", where=cfg.path)
        ttl = _lifetime(self._ttl_at(doc), cfg.default_ttl, where=cfg.path) if self._ttl_at else cfg.default_ttl
        return str(token), ttl


class _OAuth2(_CachedToken):
    def __init__(self, cfg: OAuth2ClientCredentials, clock: Callable[[], float]) -> None:
        super().__init__(header="Authorization", prefix="Bearer ", refresh_before=cfg.refresh_before, clock=clock)
        self._cfg = cfg

    def _obtain(self, send: Send) -> tuple[str, float]:
        cfg = self._cfg
        form = {"grant_type": "client_credentials"}
        if cfg.scope:
            form["scope"] = cfg.scope
        headers = {}
        secret = cfg.client_secret.get_secret_value()
        if cfg.client_auth == "basic":
            headers["Authorization"] = "Basic " + base64.b64encode(f"{cfg.client_id}:{secret}".encode()).decode()
        else:
            form.update(client_id=cfg.client_id, client_secret=secret)
        _response, raw = send("POST", cfg.token_url, data=form, headers=headers)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("token response is not JSON", where=cfg.token_url) from exc
        if not isinstance(doc, dict):
            raise ProtocolError("token response is not a JSON object", where=cfg.token_url)
        if not doc.get("access_token"):
            raise AuthError(f"token endpoint refused: {doc.get('error', 'no access_token')}", where=cfg.token_url)
        return str(doc["access_token"]), _lifetime(doc.get("expires_in"), 300.0, where=cfg.token_url)


def _lifetime(value: Any, default: float, *, where: str) -> float:
    """A token's lifetime in seconds as the source states it (absent: ``default``); one that is not a positive
    number is the source's protocol error (``float("soon")`` escaped the sync engine as a ValueError)."""
    if value is None or value == "":
        return default
    try:
        seconds = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if seconds == 0:  # 0 or "0": the configured default, as before
        return default
    if not math.isfinite(seconds) or seconds <= 0:
        raise ProtocolError(f"the token's lifetime is not a positive number of seconds: {str(value)[:50]!r}",
                            where=where)  # fmt: skip
    return seconds


def hmac_signature(secret: str, signed_json: bytes | str) -> str:
    """Lower-case hex HMAC-SHA256 of the signed-header JSON (the bytes as sent) under the shared secret."""
    data = signed_json.encode() if isinstance(signed_json, str) else signed_json
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def sign_headers(
    values: Mapping[str, str], *, system_id: str, secret: str, prefix: str = "XroadVnpt-", timestamp: str
) -> dict[str, str]:
    """The headers of one signed call: ``values`` (the call's own headers, e.g. ``messagetype``) and the system
    id and timestamp, all under ``prefix``, plus the key list, the signed JSON and its HMAC."""
    signed = {f"{prefix}systemid": system_id, f"{prefix}timestamp": timestamp}
    signed.update({f"{prefix}{name}": str(value) for name, value in values.items()})
    body = orjson.dumps(signed).decode()
    return {
        **signed,
        f"{prefix}sign-header-key": ";".join(signed),
        f"{prefix}sign-header": body,
        f"{prefix}hash-header": hmac_signature(secret, body),
    }


class _HmacHeaders(_Strategy):
    """Moves the call's own headers (``signed``, or any already carrying the prefix) under the prefix and signs."""

    def __init__(self, cfg: HmacHeadersAuth, wall: Callable[[], float]) -> None:
        self._cfg, self._wall = cfg, wall
        self._names = {name.lower(): name for name in cfg.signed}  # the casing the source expects (docId)
        self._prefix = cfg.prefix.lower()

    def apply(self, request: httpx.Request, send: Send) -> None:
        cfg = self._cfg
        values: dict[str, str] = {}
        for name, value in list(request.headers.items()):
            low = name.lower()
            if low in self._names:
                values[self._names[low]] = value
            elif low.startswith(self._prefix) and not low.startswith(f"{self._prefix}sign"):
                values[name[len(self._prefix) :]] = value
            else:
                continue
            del request.headers[name]
        timestamp = str(int(self._wall() * 1000))
        secret = cfg.secret.get_secret_value()
        request.headers.update(
            sign_headers(values, system_id=cfg.system_id, secret=secret, prefix=cfg.prefix, timestamp=timestamp)
        )


def tls_context(tls: TlsConfig, *, base_dir: Path | None = None) -> ssl.SSLContext:
    """An SSL context that verifies the server (system store or ``ca_file``) and presents the client certificate.

    Relative paths are read from ``base_dir`` (the sources directory)."""

    def where(name: str) -> str:
        path = Path(name)
        return str(path if path.is_absolute() or base_dir is None else base_dir / path)

    try:
        context = ssl.create_default_context(cafile=where(tls.ca_file) if tls.ca_file else None)
        password = tls.key_password.get_secret_value() if tls.key_password else None
        context.load_cert_chain(where(tls.cert_file), where(tls.key_file), password=password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"client certificate {tls.cert_file} / key {tls.key_file} cannot be loaded: {exc}") from exc
    return context


class _ClientCertificate(_Strategy):
    def __init__(self, cfg: ClientCertificateAuth, base_dir: Path | None) -> None:
        self._cfg, self._base_dir = cfg, base_dir
        self._context: ssl.SSLContext | None = None

    def client_kwargs(self) -> dict[str, Any]:
        if self._context is None:
            self._context = tls_context(self._cfg.tls, base_dir=self._base_dir)
        return {"verify": self._context}


def soap_body_values(auth: Any) -> dict[str, str]:
    """SOAP ``body`` credentials (``OrganId`` + ``Token`` as arguments of every operation); {} for other kinds."""
    if getattr(auth, "type", None) != "body":
        return {}
    return {auth.organ_id_field: auth.organ_id, auth.token_field: auth.token.get_secret_value()}


def apply_ws_security(envelope: Any, headers: Mapping[str, Any], auth: Any) -> tuple[Any, dict[str, Any]]:
    """Add a WS-Security UsernameToken (``PasswordText`` or ``PasswordDigest``) to a zeep-built envelope."""
    from zeep.wsse.username import UsernameToken

    token = UsernameToken(auth.username, auth.password.get_secret_value(), use_digest=auth.digest)  # type: ignore[no-untyped-call]
    new_envelope, new_headers = token.apply(envelope, dict(headers))  # type: ignore[no-untyped-call]
    return new_envelope, dict(new_headers)


def build_auth(
    cfg: AuthConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    base_dir: Path | None = None,
) -> AuthStrategy:
    """The strategy for ``cfg``; ``clock`` times token lifetimes, ``wall`` stamps signed headers."""
    if isinstance(cfg, NoAuth):
        return _Unauthenticated()
    if isinstance(cfg, LoginTokenAuth):
        return _LoginToken(cfg, clock)
    if isinstance(cfg, ApiKeyAuth):
        return _StaticHeader(cfg.header, cfg.api_key.get_secret_value)
    if isinstance(cfg, BasicAuth):
        user, secret = cfg.username, cfg.password

        def basic() -> str:
            return "Basic " + base64.b64encode(f"{user}:{secret.get_secret_value()}".encode()).decode()

        return _StaticHeader("Authorization", basic)
    if isinstance(cfg, OAuth2ClientCredentials):
        return _OAuth2(cfg, clock)
    if isinstance(cfg, HmacHeadersAuth):
        return _HmacHeaders(cfg, wall)
    if isinstance(cfg, ClientCertificateAuth):
        return _ClientCertificate(cfg, base_dir)
    raise TypeError(f"unhandled auth config {type(cfg).__name__}")  # pragma: no cover - closed union
