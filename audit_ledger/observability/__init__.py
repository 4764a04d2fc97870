"""Operational signals: Prometheus metrics and tiered structured logs (never payload data)."""
