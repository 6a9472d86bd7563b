"""Errors of operator actions, by what the caller should do next."""

from __future__ import annotations

from gateway.errors import GatewayError


class OpsError(GatewayError):
    """An operator action that cannot be done as asked."""


class NotFound(OpsError):
    """No such source, entry or stream."""


class Conflict(OpsError):
    """The action does not fit the current state (entry already closed, source not paused, lease held)."""


class Invalid(OpsError):
    """The request itself is wrong (a time that does not parse, an empty range, a missing reason)."""
