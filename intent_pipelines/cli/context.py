"""What every command needs: INTENT_HOME, DAGSTER_HOME, the intent catalog and the engine."""

import os
from functools import cached_property
from pathlib import Path

from intent_pipelines.bundled import write_dagster_yaml
from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome
from intent_pipelines.spec.loader import IntentCatalog

POOL_LIMITS = {"build": 2, "db": 1, "network": 4}


class CliContext:
    """Lazily built, so `intent --help` and `intent validate` stay fast."""

    def __init__(self) -> None:
        self.home = IntentHome.from_env()
        # Runs launched by the CLI must land in the same instance the UI shows.
        os.environ.setdefault("DAGSTER_HOME", str(self.home.dagster_home))

    @cached_property
    def catalog(self) -> IntentCatalog:
        return IntentCatalog.discover()

    @cached_property
    def engine(self) -> Engine:
        return Engine(self.home)

    def request_id(self, ident: str) -> str:
        """The full request id ``ident`` names (an id, a run id or a unique prefix); unchanged when unknown."""
        row = self.engine.store.find_request(ident)
        return str(row["request_id"]) if row is not None else ident

    def ensure_dagster_home(self, *, postgres: bool = False) -> Path:
        """Create DAGSTER_HOME with the shipped dagster.yaml unless one is there already."""
        dagster_home = Path(os.environ["DAGSTER_HOME"])
        dagster_home.mkdir(parents=True, exist_ok=True)
        target = dagster_home / "dagster.yaml"
        if not target.exists():
            write_dagster_yaml(target, postgres=postgres)
        return dagster_home
