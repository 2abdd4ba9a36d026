"""The fleet: apps listed in fleet.yaml, each on a platform (local or kubernetes)."""

import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from intent_pipelines.errors import FleetError
from intent_pipelines.spec.models import ENV_NAME_PATTERN


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KubernetesTarget(_Strict):
    """Where an app lives in a cluster."""

    namespace: str = "default"
    deployment: str
    container: str = ""
    image: str = Field(description="image repository; deploy sets <image>:<ref>")
    context: str = ""


class App(_Strict):
    """One app of the fleet."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    platform: Literal["local", "kubernetes"] = "local"
    # local platform: a source directory (a git repository when deploying by ref)
    source: str = ""
    start: list[str] = Field(default_factory=list, description="argv; {port} is substituted")
    build: list[str] = Field(default_factory=list, description="optional build argv run in the release")
    port: int = Field(default=8000, ge=1, le=65535)
    health_path: str = "/health"
    version_path: str = "/version"
    database: str = Field(default="", description="SQLAlchemy URL; relative sqlite paths are under fleet/<app>/data")
    migrations: str = Field(default="migrations", description="directory of NNNN_name.up.sql/.down.sql")
    env: dict[str, str] = Field(default_factory=dict)
    # Variables the app's commands (replicas, builds, kubectl) take from the operator's environment by
    # name; they get nothing else beyond a base (PATH, HOME, locale), see execution/environment.py.
    inherit_env: list[Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]] = Field(default_factory=list)
    kubernetes: KubernetesTarget | None = None

    def source_path(self, fleet_file: Path) -> Path:
        """The source directory, relative paths taken from the fleet file's folder."""
        path = Path(self.source)
        return path if path.is_absolute() else (fleet_file.parent / path).resolve()


class Fleet(_Strict):
    """All apps by name."""

    apps: dict[str, App] = Field(default_factory=dict)

    def app(self, name: str) -> App:
        """The app called ``name``, or a FleetError listing the known ones."""
        try:
            return self.apps[name]
        except KeyError:
            known = ", ".join(sorted(self.apps)) or "none"
            hint = ("Add it to fleet.yaml or check the spelling." if self.apps
                    else "Run `intent init` for the sample fleet, or add the app to fleet.yaml.")
            raise FleetError(f"app {name!r} is not in the fleet (known: {known})", hint=hint) from None


def load_fleet(path: Path) -> Fleet:
    """Read fleet.yaml; a missing file is an empty fleet, an invalid one a FleetError."""
    if not path.exists():
        return Fleet()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise FleetError(f"{path}: not valid YAML ({exc})", hint="Fix the file.") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("apps", {}), list | dict):
        raise FleetError(f"{path}: expected a mapping with `apps:`",
                         hint="See docs/platforms.md; `intent init` writes a sample one.")
    apps = raw.get("apps") or {}
    if isinstance(apps, list):
        apps = {item.get("name"): item for item in apps if isinstance(item, dict)}
    for name, item in apps.items():
        if isinstance(item, dict):
            item.setdefault("name", name)
    try:
        return Fleet(apps=apps)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FleetError(f"{path}: apps.{where}: {first['msg']}", hint="Fix fleet.yaml.") from None


def save_fleet(path: Path, fleet: Fleet) -> None:
    """Write fleet.yaml atomically (temp file + rename) so a reader never sees half a file."""
    data = {"apps": {name: app.model_dump(exclude_defaults=True, exclude={"name"})
                     for name, app in sorted(fleet.apps.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fleet-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    os.replace(tmp, path)


def register_app(path: Path, app: App) -> None:
    """Add (or replace) ``app`` in the fleet file."""
    fleet = load_fleet(path)
    fleet.apps[app.name] = app
    save_fleet(path, fleet)
