"""The store: SQLite by default, PostgreSQL for a province; one engine built in one place and injected."""

from gateway.store.db import make_engine, migrate, schema_version

__all__ = ["make_engine", "migrate", "schema_version"]
