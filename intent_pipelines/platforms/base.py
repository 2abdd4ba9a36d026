"""What a platform does for an app (build, switch, run, scale, observe) and which one it uses."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, assert_never

from intent_pipelines.errors import FleetError
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.fleet import App, load_fleet
from intent_pipelines.home import IntentHome


@dataclass(frozen=True)
class Release:
    """A deployable build of an app: ``location`` is a directory (local) or an image (k8s)."""

    id: str
    ref: str
    location: str


@dataclass(frozen=True)
class ReplicaStatus:
    """One running (or recorded) copy of an app; pid and port are unknown on kubernetes."""

    name: str
    alive: bool
    pid: int | None = None
    port: int | None = None
    release: str = ""


@dataclass(frozen=True)
class HealthResult:
    """The outcome of probing one replica; ``status`` is None when it could not be reached."""

    replica: str
    ok: bool
    status: int | None = None
    error: str = ""


class Platform(Protocol):
    """The operations every platform offers; each raises StepFailed when it cannot do its job."""

    def build(self, app: App, ref: str) -> Release:
        """Make a release of ``app`` at git ``ref`` without making it live."""
        ...

    def switch(self, app: App, release: str) -> str:
        """Make ``release`` the current one; returns the previous release ("" if none)."""
        ...

    def current_release(self, app: App) -> str:
        """Return the release that is live (or would be on the next start); "" if none."""
        ...

    def rollback(self, app: App, release: str = "") -> str:
        """Go back to ``release`` (default: the one before the current) and run it; returns it."""
        ...

    def start(self, app: App, replicas: int) -> list[ReplicaStatus]:
        """Start replicas 1..``replicas`` that are not already running."""
        ...

    def stop(self, app: App) -> None:
        """Stop every replica."""
        ...

    def restart(self, app: App) -> list[ReplicaStatus]:
        """Restart with the same number of replicas (one when none was running)."""
        ...

    def scale(self, app: App, replicas: int) -> list[ReplicaStatus]:
        """Run exactly ``replicas`` replicas."""
        ...

    def status(self, app: App) -> list[ReplicaStatus]:
        """Every known replica and whether it is alive."""
        ...

    def logs(self, app: App, *, since: str = "", pattern: str = "", lines: int = 100) -> list[str]:
        """Return the last ``lines`` lines newer than ``since`` matching the regex ``pattern``."""
        ...

    def health(
        self, app: App, *, path: str | None = None, expect_status: int = 200, timeout_s: float = 20
    ) -> list[HealthResult]:
        """Probe every replica until it is healthy or ``timeout_s`` has passed."""
        ...

    def version(self, app: App) -> str:
        """Return the version the running app reports ("" when unknown)."""
        ...


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(since: str, *, now: datetime | None = None) -> datetime | None:
    """Turn "10m", "1h", "2d" or an ISO time into an aware cutoff; "" means no cutoff."""
    if not since:
        return None
    now = now or datetime.now(UTC)
    match = _DURATION.match(since.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        cutoff = datetime.fromisoformat(since.strip())
    except ValueError:
        raise ValueError(
            f"since={since!r} is neither a duration like 10m/1h/2d nor an ISO time"
        ) from None
    return cutoff if cutoff.tzinfo else cutoff.astimezone()


def find_app(home: IntentHome, name: str) -> App:
    """Return the app ``name`` from the fleet file, or raise a FleetError saying what to do."""
    fleet_file = home.fleet_file
    if not fleet_file.exists():
        raise FleetError(
            f"no fleet file at {fleet_file} (looking for app {name!r})",
            hint="Run `intent init` for one with the sample app (format: docs/platforms.md), or set INTENT_FLEET.",
        )
    return load_fleet(fleet_file).app(name)


def platform_for(app: App, home: IntentHome, fleet_file: Path, ctx: ActionContext) -> Platform:
    """Return the platform ``app`` runs on, bound to the step that uses it."""
    # Imported here because each platform module imports this one for its types.
    from intent_pipelines.platforms.kubernetes import KubernetesPlatform
    from intent_pipelines.platforms.local import LocalPlatform

    match app.platform:
        case "local":
            return LocalPlatform(home, fleet_file, ctx)
        case "kubernetes":
            return KubernetesPlatform(ctx)
        case _:
            assert_never(app.platform)
