"""Security errors; the API turns each into an ``application/problem+json`` response with its status."""

from __future__ import annotations

from gateway.errors import GatewayError


class SecurityError(GatewayError):
    status = 401
    title = "Unauthorized"


class Unauthorized(SecurityError):
    """No credentials, or credentials that are unknown, expired, revoked or badly signed."""


class Forbidden(SecurityError):
    """Authenticated, but the role or the agency is outside the caller's scope."""

    status = 403
    title = "Forbidden"


class RateLimited(SecurityError):
    status = 429
    title = "Too many requests"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
