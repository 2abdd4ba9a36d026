"""INTENT_HOME: the one directory that holds every piece of runtime state of a single-host install."""

from dataclasses import dataclass
from pathlib import Path

from intent_pipelines.settings import settings


@dataclass(frozen=True)
class IntentHome:
    """Paths under INTENT_HOME; creating them is idempotent."""

    root: Path

    @classmethod
    def from_env(cls) -> "IntentHome":
        """Use ``$INTENT_HOME``, or ``./.intent_home`` when unset."""
        return cls(settings().home)

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse"

    @property
    def alerts(self) -> Path:
        return self.root / "logs" / "alerts"

    @property
    def fleet_dir(self) -> Path:
        return self.root / "fleet"

    @property
    def fleet_file(self) -> Path:
        """The fleet definition: ``$INTENT_FLEET`` or INTENT_HOME/fleet.yaml."""
        return settings().fleet or self.root / "fleet.yaml"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def forensics(self) -> Path:
        return self.root / "forensics"

    def step_log(self, request_id: str, step_id: str) -> Path:
        """Full output of one step of one request."""
        return self.root / "logs" / "steps" / request_id / f"{step_id}.log"

    def store_url(self) -> str:
        """``$INTENT_STORE_URL`` or the embedded SQLite state store."""
        return settings().store_url or f"sqlite:///{self.state_db}"

    def ensure(self) -> "IntentHome":
        """Create the directory tree."""
        for path in (self.dagster_home, self.warehouse, self.alerts, self.fleet_dir, self.reports):
            path.mkdir(parents=True, exist_ok=True)
        return self
