"""``Authenticator``: credentials from the request headers -> :class:`Principal`.

Accepted, in order: ``X-API-Key: kpigw_...``; ``Authorization: Bearer kpigw_...`` (an API key);
``Authorization: Bearer <JWT>`` (OIDC, when an issuer is configured). In ``open`` mode (the demo's sandbox)
a request without credentials is the read-everything ``sandbox`` client; credentials, when given, still count.

**Verified API keys are cached in process for ``key_ttl`` seconds** (default :data:`KEY_TTL_SECONDS`), so a
busy client costs one store lookup per key per TTL instead of one per request. What that means for changes:

- a key's own expiry (``expires_at``) is checked on every request against the cached value, so it is exact;
- the secret is hashed and compared on every request, so a cache hit never accepts a wrong secret;
- a revocation, a rotation (older keys' new expiry), a disabled client or changed roles/agencies made through
  this process's admin API take effect at once (:meth:`Authenticator.forget_client`); made anywhere else (the
  ``kpigw clients`` CLI, another worker or replica) they take effect within ``key_ttl`` seconds;
- failures are never cached: an unknown key or a wrong secret is looked up every time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from gateway.security.errors import Unauthorized
from gateway.security.keys import secret_matches, split_key
from gateway.security.oidc import OidcVerifier
from gateway.security.principal import ADMIN, READ_FACTS, ROLES, Principal, Scope
from gateway.settings import Settings

SANDBOX = Principal(client_id="sandbox", roles=frozenset({READ_FACTS, ADMIN}), scope=Scope(None), via="open")
KEY_TTL_SECONDS = 10.0
"""How long a verified key is trusted without asking the store again: the bound on how late a revocation made
outside this process is noticed. Short enough for an incident, long enough that the lookup is rare."""
_MAX_CACHED_KEYS = 10_000  # a bound on memory; past it the cache starts over (clients are few in practice)


@dataclass(frozen=True)
class _CachedKey:
    """A key verified against the store: what a later request needs to decide without the store."""

    secret_hash: str
    expires_at: datetime | None  # the key's own expiry, checked on every use
    principal: Principal
    fresh_until: float  # monotonic time after which the store is asked again


class Authenticator:
    def __init__(self, *, db: Engine, open_mode: bool = False, oidc: OidcVerifier | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), key_ttl: float = KEY_TTL_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.db = db
        self.open_mode = open_mode
        self.oidc = oidc
        self.clock = clock
        self.key_ttl = key_ttl
        self._monotonic = monotonic
        self._keys: dict[str, _CachedKey] = {}
        self._lock = threading.Lock()
        self._generation = 0  # bumped by forget_client: a lookup that started before a forget caches nothing

    @classmethod
    def from_settings(cls, settings: Settings, db: Engine) -> Authenticator:
        oidc = None
        if settings.oidc_issuer:
            if not settings.oidc_jwks_url:
                from gateway.errors import ConfigError

                raise ConfigError("KPIGW_OIDC_ISSUER is set but KPIGW_OIDC_JWKS_URL is not; set the issuer's JWKS URL")
            oidc = OidcVerifier(issuer=settings.oidc_issuer, jwks_url=settings.oidc_jwks_url,
                                audience=settings.oidc_audience, agencies_claim=settings.oidc_agencies_claim,
                                roles_claim=settings.oidc_roles_claim)  # fmt: skip
        return cls(db=db, open_mode=settings.auth_mode == "open", oidc=oidc, key_ttl=settings.api_key_cache_seconds)

    def authenticate(self, *, authorization: str | None, api_key: str | None) -> Principal:
        """The caller, asking the store (or the OIDC issuer's keys) when the cache cannot decide."""
        token = _token(authorization, api_key)
        if not token:
            if self.open_mode:
                return SANDBOX
            raise Unauthorized("credentials are required: an API key (X-API-Key) or an OIDC bearer token")
        parts = split_key(token)
        if parts is not None:
            return self._key_principal(*parts)
        if self.oidc is not None and token.count(".") == 2:
            return self.oidc.verify(token)
        raise Unauthorized("the credentials are not an API key this gateway issued"
                           + ("" if self.oidc else " (OIDC tokens are not enabled)"))  # fmt: skip

    def authenticate_cached(self, *, authorization: str | None, api_key: str | None) -> Principal | None:
        """The caller when it can be decided without any I/O (no credentials, or an API key verified less than
        ``key_ttl`` seconds ago), else None: then call :meth:`authenticate` off the event loop. Malformed
        headers raise :class:`Unauthorized` here as there."""
        token = _token(authorization, api_key)
        if not token:
            return self.authenticate(authorization=authorization, api_key=api_key)
        parts = split_key(token)
        if parts is None:
            return None
        cached = self._keys.get(parts[0])
        if cached is None or self._monotonic() >= cached.fresh_until:
            return None
        if not secret_matches(parts[1], cached.secret_hash):
            return None  # the store decides (and refuses); wrong secrets are never cached
        if cached.expires_at is not None and cached.expires_at <= self.clock():
            raise Unauthorized("this API key has expired or was revoked; ask for a new one")
        return cached.principal

    def forget_client(self, client_id: str) -> None:
        """Drop the cached keys of ``client_id``: its keys, roles, agencies or state changed here."""
        with self._lock:
            self._generation += 1
            for key_id in [k for k, v in self._keys.items() if v.principal.client_id == client_id]:
                del self._keys[key_id]

    def _key_principal(self, key_id: str, secret: str) -> Principal:
        from gateway.store.clients import find_key  # the store imports key hashing from this package

        generation = self._generation  # read before the store: see _remember
        with self.db.connect() as conn:
            found = find_key(conn, key_id)
        if found is None or not secret_matches(secret, found[0].secret_hash):
            raise Unauthorized("unknown API key")
        key, client = found
        if not key.usable(self.clock()):
            raise Unauthorized("this API key has expired or was revoked; ask for a new one")
        if client.disabled:
            raise Unauthorized(f"client {client.id!r} is disabled")
        roles = frozenset(r for r in client.roles if r in ROLES)
        principal = Principal(client_id=client.id, roles=roles, scope=Scope.of(client.agencies), via="key",
                              rate_per_minute=client.rate_per_minute)  # fmt: skip
        self._remember(key_id, key.secret_hash, key.expires_at, principal, generation)
        return principal

    def _remember(self, key_id: str, secret_hash: str, expires_at: datetime | None, principal: Principal,
                  generation: int) -> None:  # fmt: skip
        """Cache a verified key, unless a client was forgotten since its lookup began: that lookup may have read
        the key before a revocation committed, and caching it would undo the revocation for ``key_ttl``."""
        if self.key_ttl <= 0:
            return
        entry = _CachedKey(secret_hash, expires_at, principal, self._monotonic() + self.key_ttl)
        with self._lock:
            if generation != self._generation:
                return
            if len(self._keys) >= _MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[key_id] = entry


def _token(authorization: str | None, api_key: str | None) -> str | None:
    """The credential of the request: the X-API-Key header, else a Bearer token."""
    if api_key is not None or not authorization:
        return api_key
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("use 'Authorization: Bearer <token>' or the X-API-Key header")
    return value.strip()
