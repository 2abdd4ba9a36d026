"""IntentRuntime: the resource that gives ops the engine for this INTENT_HOME."""

from functools import lru_cache
from pathlib import Path

import dagster as dg

from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome


@lru_cache(maxsize=8)
def _engine(home: Path, store_url: str) -> Engine:
    # One engine (and one database connection pool) per process, home and store.
    return Engine(IntentHome(home))


class IntentRuntime(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where runtime state lives; empty means $INTENT_HOME (or ./.intent_home)."""

    intent_home: str = ""

    def engine(self) -> Engine:
        """The engine for this home."""
        home = IntentHome(Path(self.intent_home).resolve()) if self.intent_home else IntentHome.from_env()
        return _engine(home.root, home.store_url())
