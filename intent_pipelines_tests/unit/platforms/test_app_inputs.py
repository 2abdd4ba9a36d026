"""Bad inputs to the app actions fail early with one clear error, before anything changes."""

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from intent_pipelines.actions.app import LogsInput, ScaleInput, StartInput
from intent_pipelines.actions.base import Outputs
from intent_pipelines.errors import FleetError, StepFailed
from intent_pipelines.home import IntentHome
from intent_pipelines.sample_fleet import install_sample_fleet


def test_unknown_app_lists_the_known_ones(sample: Path, run_action: Callable[..., Outputs]) -> None:
    """An app that is not in fleet.yaml is a FleetError naming the apps that are."""
    with pytest.raises(FleetError, match=r"app 'nope' is not in the fleet \(known: hello-api\)"):
        run_action("app.restart", app="nope")


def test_missing_fleet_file_says_where_it_looked(
    home: IntentHome, run_action: Callable[..., Outputs]
) -> None:
    """Without a fleet file the error names the path and how to create it."""
    with pytest.raises(FleetError, match="no fleet file at .*fleet.yaml") as failed:
        run_action("app.stop", app="hello-api")
    assert "INTENT_FLEET" in failed.value.hint


@pytest.mark.parametrize("replicas", [0, -1, 21])
def test_replica_counts_outside_1_to_20_are_rejected(replicas: int) -> None:
    """app.scale and app.start accept 1..20 replicas only."""
    with pytest.raises(ValidationError):
        ScaleInput(app="a", replicas=replicas)
    with pytest.raises(ValidationError):
        StartInput(app="a", replicas=replicas)


def test_logs_inputs_are_checked_up_front() -> None:
    """A malformed `since` or an invalid regex is rejected when the inputs are validated."""
    with pytest.raises(ValidationError, match="neither a duration like 10m/1h/2d nor an ISO time"):
        LogsInput(app="a", since="yesterday")
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        LogsInput(app="a", pattern="(")
    assert LogsInput(app="a", since="2h", pattern="ERROR|WARN").since == "2h"


def test_unknown_input_keys_are_mistakes() -> None:
    """A misspelt key is an error, not silently ignored."""
    with pytest.raises(ValidationError, match="replica"):
        ScaleInput(app="a", replica=2)  # type: ignore[call-arg]


def test_health_without_running_replicas_is_deterministic(
    sample: Path, run_action: Callable[..., Outputs]
) -> None:
    """Checking health of a stopped app fails at once and says to start it."""
    with pytest.raises(StepFailed, match="has no running replicas") as failed:
        run_action("app.health", app="hello-api", timeout_s=1)
    assert not failed.value.transient


def test_sample_fleet_install_is_idempotent(home: IntentHome) -> None:
    """Installing the sample twice keeps the repository, its history and the user's fleet edits."""
    fleet_file = install_sample_fleet(home)
    repo = home.fleet_dir / "src" / "hello-api"
    assert (repo / ".git").is_dir() and (repo / "app.py").exists()
    assert "source: fleet/src/hello-api" in fleet_file.read_text()
    edited = fleet_file.read_text().replace("port: 18080", "port: 19000")
    fleet_file.write_text(edited)
    (repo / "LOCAL_CHANGE").write_text("mine\n")
    assert install_sample_fleet(home) == fleet_file
    assert fleet_file.read_text() == edited and (repo / "LOCAL_CHANGE").exists()
