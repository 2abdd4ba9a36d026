"""IntentRuntime: the resource that gives ops the engine for this INTENT_HOME."""

from functools import lru_cache
from pathlib import Path

import dagster as dg

from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome


@lru_cache(maxsize=4)
def _engine(home: str) -> Engine:
    # One engine (and one database connection pool) per process and home.
    return Engine(IntentHome(Path(home)) if home else IntentHome.from_env())


class IntentRuntime(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where runtime state lives; empty means $INTENT_HOME (or ./.intent_home)."""

    intent_home: str = ""

    def engine(self) -> Engine:
        """The engine for this home."""
        return _engine(self.intent_home)
