"""Who is calling the facts API, and what they may see.

::

    Principal            client id, roles (read_facts, admin), Scope (agencies), rate limit
    Scope                the agencies a caller may read; every query function takes one
    Authenticator        Authorization / X-API-Key header -> Principal (API keys or OIDC bearer tokens)
    RateLimiter          token bucket per client
    SecurityError        root of the errors here; each carries its HTTP status

API keys look like ``kpigw_<key id>_<secret>``; only the SHA-256 of the secret is stored
(:mod:`gateway.store.clients`). OIDC tokens are verified with pyjwt against the configured issuer's JWKS.
"""

from gateway.security.auth import Authenticator
from gateway.security.errors import Forbidden, RateLimited, SecurityError, Unauthorized
from gateway.security.principal import ADMIN, READ_FACTS, ROLES, Principal, Scope
from gateway.security.ratelimit import RateLimiter

__all__ = [
    "ADMIN",
    "READ_FACTS",
    "ROLES",
    "Authenticator",
    "Forbidden",
    "Principal",
    "RateLimited",
    "RateLimiter",
    "Scope",
    "SecurityError",
    "Unauthorized",
]
