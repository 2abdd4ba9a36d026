"""Where apps run: ``local`` (processes on this host) and ``kubernetes`` (through kubectl)."""

from intent_pipelines.platforms.base import (
    HealthResult,
    Platform,
    Release,
    ReplicaStatus,
    find_app,
    platform_for,
)

__all__ = ["HealthResult", "Platform", "Release", "ReplicaStatus", "find_app", "platform_for"]
