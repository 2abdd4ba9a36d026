"""The state store: requests, steps, locks, outputs and the audit chain, on SQLite or PostgreSQL."""

from intent_pipelines.store.state import StateStore

__all__ = ["StateStore"]
