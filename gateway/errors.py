"""The gateway's error tree, keyed by what the caller should do next.

::

    GatewayError
    ├── TransientError            retry with back-off (the sync loop's first arm)
    │   ├── SourceUnavailable     connect/read failure, 5xx, 429, overall deadline exceeded
    │   └── CircuitOpen           the source's circuit is open; wait for the half-open probe
    ├── RecordError               quarantine the record, keep syncing (second arm)
    │   ├── NormalizeError        the payload does not fit the field map
    │   └── MappingError          no rule / person unresolved / invalid value
    ├── StreamError               stop this stream, record the run as failed (third arm)
    │   ├── AuthError             credentials refused; retrying will not help
    │   ├── ProtocolError         envelope error, malformed page, hostile or oversized response
    │   └── ConfigError           the source or mapping configuration is wrong
    └── StoreError                the store refused a write; the run fails and resumes from its cursor

Context travels as attributes (``source``, ``stream``, ``record_key``, ``where``) so messages name where and
why. Library exceptions (httpx, zeep, lxml, SQLAlchemy) are translated at the boundary with ``raise ... from``.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        stream: str | None = None,
        record_key: str | None = None,
        where: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.stream = stream
        self.record_key = record_key
        self.where = where

    def __str__(self) -> str:
        context = [
            f"{name}={value}"
            for name, value in (
                ("source", self.source),
                ("stream", self.stream),
                ("record", self.record_key),
                ("at", self.where),
            )
            if value
        ]
        return f"{self.message} ({', '.join(context)})" if context else self.message


class TransientError(GatewayError):
    """Worth retrying: the next attempt may succeed."""

    def __init__(self, message: str, *, retry_after: float | None = None, **context: str | None) -> None:
        super().__init__(message, **context)
        self.retry_after = retry_after


class SourceUnavailable(TransientError):
    pass


class CircuitOpen(TransientError):
    pass


class RecordError(GatewayError):
    """One record is bad; quarantine it and go on."""


class NormalizeError(RecordError):
    pass


class MappingError(RecordError):
    pass


class StreamError(GatewayError):
    """The stream cannot go on; retrying the same call will not help."""


class AuthError(StreamError):
    pass


class ProtocolError(StreamError):
    pass


class ConfigError(StreamError):
    pass


class StoreError(GatewayError):
    pass


__all__ = [
    "AuthError",
    "CircuitOpen",
    "ConfigError",
    "GatewayError",
    "MappingError",
    "NormalizeError",
    "ProtocolError",
    "RecordError",
    "SourceUnavailable",
    "StoreError",
    "StreamError",
    "TransientError",
]
