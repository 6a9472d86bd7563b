"""``Authenticator``: credentials from the request headers -> :class:`Principal`.

Accepted, in order: ``X-API-Key: kpigw_...``; ``Authorization: Bearer kpigw_...`` (an API key);
``Authorization: Bearer <JWT>`` (OIDC, when an issuer is configured). In ``open`` mode (the demo's sandbox)
a request without credentials is the read-everything ``sandbox`` client; credentials, when given, still count.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine

from gateway.security.errors import Unauthorized
from gateway.security.keys import secret_matches, split_key
from gateway.security.oidc import OidcVerifier
from gateway.security.principal import ADMIN, READ_FACTS, ROLES, Principal, Scope
from gateway.settings import Settings

SANDBOX = Principal(client_id="sandbox", roles=frozenset({READ_FACTS, ADMIN}), scope=Scope(None), via="open")


class Authenticator:
    def __init__(self, *, db: Engine, open_mode: bool = False, oidc: OidcVerifier | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:  # fmt: skip
        self.db = db
        self.open_mode = open_mode
        self.oidc = oidc
        self.clock = clock

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
        return cls(db=db, open_mode=settings.auth_mode == "open", oidc=oidc)

    def authenticate(self, *, authorization: str | None, api_key: str | None) -> Principal:
        token = api_key
        if token is None and authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthorized("use 'Authorization: Bearer <token>' or the X-API-Key header")
            token = value.strip()
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

    def _key_principal(self, key_id: str, secret: str) -> Principal:
        from gateway.store.clients import find_key  # the store imports key hashing from this package

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
        return Principal(client_id=client.id, roles=roles, scope=Scope.of(client.agencies), via="key",
                         rate_per_minute=client.rate_per_minute)
