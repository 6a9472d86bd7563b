"""KPI gateway: connectors in, KPI facts out (Decree 335/2025)."""

__version__ = "0.1.0"
