"""Authentication strategies shared by every connector.

A strategy decorates outgoing requests (``apply``) and forgets cached credentials when the source says they
expired (``invalidate``); the connector then retries the call once. Tokens are cached with their lifetime and
refreshed early (``refresh_before``), so a long sync rarely meets an expired token at all.

Secrets stay inside :class:`pydantic.SecretStr` until the moment they are sent; nothing here logs them.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import orjson

from connectors.declarative.config import (
    ApiKeyAuth,
    AuthConfig,
    BasicAuth,
    LoginTokenAuth,
    NoAuth,
    OAuth2ClientCredentials,
)
from connectors.declarative.fieldmap import path_getter
from gateway.errors import AuthError, ProtocolError

Send = Callable[..., tuple[httpx.Response, bytes]]
"""``send(method, url, **httpx_request_kwargs)``: the connector's guarded call, relative to its base URL."""


class AuthStrategy(Protocol):
    def apply(self, request: httpx.Request, send: Send) -> None: ...

    def invalidate(self) -> None: ...


class _Unauthenticated:
    def apply(self, request: httpx.Request, send: Send) -> None:
        return None

    def invalidate(self) -> None:
        return None


class _StaticHeader:
    def __init__(self, header: str, value_fn: Callable[[], str]) -> None:
        self._header, self._value_fn = header, value_fn

    def apply(self, request: httpx.Request, send: Send) -> None:
        request.headers[self._header] = self._value_fn()

    def invalidate(self) -> None:
        return None


class _CachedToken:
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
        ttl = float(self._ttl_at(doc) or cfg.default_ttl) if self._ttl_at else cfg.default_ttl
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
        if not doc.get("access_token"):
            raise AuthError(f"token endpoint refused: {doc.get('error', 'no access_token')}", where=cfg.token_url)
        return str(doc["access_token"]), float(doc.get("expires_in") or 300)


def build_auth(cfg: AuthConfig, *, clock: Callable[[], float] = time.monotonic) -> AuthStrategy:
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
    raise TypeError(f"unhandled auth config {type(cfg).__name__}")  # pragma: no cover - closed union
