"""OIDC bearer tokens: signature against the issuer's JWKS (pyjwt), ``iss``, ``aud``, ``exp`` and ``sub``.

The caller's agencies and roles come from configurable claims (lists or space-separated strings); a token
without them reads nothing. Only asymmetric algorithms are accepted, never ``none`` or HMAC.
"""

from __future__ import annotations

from typing import Any

import jwt

from gateway.security.errors import Unauthorized
from gateway.security.principal import ROLES, Principal, Scope

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


def _claim_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return []


class OidcVerifier:
    def __init__(self, *, issuer: str, jwks_url: str, audience: str | None = None,
                 agencies_claim: str = "kpigw_agencies", roles_claim: str = "kpigw_roles",
                 leeway: float = 30.0) -> None:  # fmt: skip
        self.issuer = issuer
        self.audience = audience
        self.agencies_claim = agencies_claim
        self.roles_claim = roles_claim
        self.leeway = leeway
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def verify(self, token: str) -> Principal:
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token, key=key.key, algorithms=ALGORITHMS, issuer=self.issuer, audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "sub"], "verify_aud": self.audience is not None},
            )  # fmt: skip
        except jwt.PyJWKClientConnectionError as exc:
            raise Unauthorized("the token issuer's keys could not be fetched; try again later") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"bearer token refused: {exc}") from exc
        roles = frozenset(r for r in _claim_list(claims.get(self.roles_claim)) if r in ROLES)
        return Principal(client_id=f"oidc:{claims['sub']}", roles=roles,
                         scope=Scope.of(_claim_list(claims.get(self.agencies_claim))), via="oidc")  # fmt: skip
