"""Sync engine, scheduling and failure handling."""

from gateway.sync.engine import RunReport, StreamReport, SyncEngine

__all__ = ["RunReport", "StreamReport", "SyncEngine"]
