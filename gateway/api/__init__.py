"""The HTTP API: facts for scoring front ends, sources for operators, health and metrics."""

from gateway.api.app import create_app

__all__ = ["create_app"]
