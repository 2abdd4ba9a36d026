"""Install the sample app (hello-api) as a git repository plus a fleet.yaml that lists it."""

import os
import subprocess
from pathlib import Path

from intent_pipelines.bundled import copy_sample_app, sample_dir
from intent_pipelines.errors import FleetError
from intent_pipelines.fleet import load_fleet, register_app
from intent_pipelines.home import IntentHome

SAMPLE_APP = "hello-api"
# git refuses to commit without an identity; this one works on a fresh machine.
_GIT_IDENTITY = ["-c", "user.name=intent", "-c", "user.email=intent@localhost"]


def _git(repo: Path, *args: str) -> None:
    # Setup, not a step: there is no ActionContext or step log, so failures surface as FleetError.
    result = subprocess.run(
        ["git", *_GIT_IDENTITY, "-C", str(repo), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FleetError(
            f"git {args[0]} failed in {repo}: {result.stderr.strip()}",
            hint="Check that git is installed and the directory is writable.",
        )


def install_sample_fleet(home: IntentHome) -> Path:
    """Copy hello-api to INTENT_HOME/fleet/src, commit it and list it in the fleet file.

    Idempotent: an existing repository is left as it is, and an existing fleet file only gains
    hello-api when it does not list it yet. Returns the fleet file.
    """
    repo = home.fleet_dir / "src" / SAMPLE_APP
    if not (repo / ".git").exists():
        copy_sample_app(SAMPLE_APP, repo)
        _git(repo, "init", "--quiet")
        _git(repo, "add", "--all")
        _git(repo, "commit", "--quiet", "-m", f"{SAMPLE_APP}: initial version")
    fleet_file = home.fleet_file
    if SAMPLE_APP not in load_fleet(fleet_file).apps:
        with sample_dir() as sample_files:
            sample = load_fleet(sample_files / "fleet.yaml").app(SAMPLE_APP)
        source = os.path.relpath(repo, fleet_file.parent)
        register_app(fleet_file, sample.model_copy(update={"source": source}))
    return fleet_file
