"""INTENT_HOME: the one directory that holds every piece of runtime state of a single-host install."""

import os
from dataclasses import dataclass
from pathlib import Path

from intent_pipelines.errors import UsageError
from intent_pipelines.settings import settings

_HINT = "Point INTENT_HOME at a directory this user can write, or unset it to use ./.intent_home."


@dataclass(frozen=True)
class IntentHome:
    """Paths under INTENT_HOME; creating them is idempotent."""

    root: Path

    @classmethod
    def from_env(cls) -> "IntentHome":
        """Use ``$INTENT_HOME``, or ``./.intent_home`` when unset; a UsageError when it names a file."""
        root = settings().home
        if root.exists() and not root.is_dir():
            raise UsageError(f"INTENT_HOME {root} is not a directory", hint=_HINT)
        return cls(root)

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
        """Create the directory tree; a UsageError naming INTENT_HOME when it cannot hold state."""
        try:
            for path in (self.dagster_home, self.warehouse, self.alerts, self.fleet_dir, self.reports):
                path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"INTENT_HOME {self.root} cannot hold the runtime state: {exc.filename}: "
                             f"{exc.strerror or type(exc).__name__}", hint=_HINT) from None
        # An existing tree creates nothing above, yet the state store must be able to write its files.
        if not os.access(self.root, os.W_OK):
            raise UsageError(f"INTENT_HOME {self.root} is not writable", hint=_HINT)
        return self
