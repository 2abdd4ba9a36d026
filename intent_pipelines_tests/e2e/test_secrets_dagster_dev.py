"""Under a real `dagster dev`: no secret from a launchpad run or `--submit`; a stopped alert sensor is noticed."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from intent_pipelines.alerts.sensors import SENSOR_LOG
from intent_pipelines.dagster_dev import LOCATION, REPOSITORY, DagsterDev
from intent_pipelines.store import StateStore
from intent_pipelines.testing import http_answering, prepare_sample_home, stop_fleet, wait_for
from intent_pipelines_tests.support.secret_scan import AWS, CALLER_TOKEN, KEY, LEAKY, TOKEN, file_hits, hits

INTENT_BIN = str(Path(sys.executable).parent / "intent")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DagsterDev, dict[str, str]]]:
    """dagster dev whose environment holds the secrets, serving the leaky intent; the CLI's env to reach it."""
    root = tmp_path_factory.mktemp("secrets-e2e")
    home = prepare_sample_home(root / "home")
    intents = root / "intents"
    intents.mkdir()
    daemon_env = {"INTENTS_PATH": str(intents), "INTENT_SECRET_TOKEN": TOKEN, "TEST_SIGNING_KEY": KEY,
                  "AWS_SECRET_ACCESS_KEY": AWS}
    try:
        with http_answering(404) as port:
            (intents / "leaky.yaml").write_text(LEAKY.replace("@PORT@", str(port)))  # before dagster dev loads it
            with DagsterDev(home, env=daemon_env) as dev:
                cli_env = {k: v for k, v in os.environ.items() if k not in ("INTENT_FLEET", "INTENT_STORE_URL")}
                cli_env.update({"INTENT_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home),
                                "INTENTS_PATH": str(intents), "INTENT_DAGSTER_URL": dev.url,
                                "INTENT_SECRET_TOKEN": CALLER_TOKEN, "TEST_SIGNING_KEY": KEY})
                yield dev, cli_env
    finally:
        stop_fleet(home)


def test_launchpad_and_submit_runs_leave_no_secret_anywhere(served: tuple[DagsterDev, dict[str, str]]) -> None:
    """A GraphQL launch and a --submit fail on the probe; no form of any secret is in a file or the CLI output."""
    dev, cli_env = served
    run_id = dev.client.launch_run("leaky", {"reason": "e2e"}, {})
    assert dev.client.wait_for_run(run_id, timeout=120) == "FAILURE"
    messages = dev.client.failure_messages(run_id)
    assert messages and hits("\n".join(messages)) == []

    submitted = subprocess.run([INTENT_BIN, "run", "leaky", "--submit"], env=cli_env, capture_output=True,
                               text=True, timeout=180, check=False)
    assert submitted.returncode == 10, submitted.stderr
    assert ("note: the submitted run reads secret param 'token' from the environment of the Dagster daemon; "
            "INTENT_SECRET_TOKEN set here is not sent") in submitted.stderr
    assert hits(submitted.stdout + submitted.stderr) == []

    home = dev.home
    store = StateStore(home.store_url())
    assert store.request(run_id) is not None and store.request(run_id)["status"] == "FAILED"  # type: ignore[index]
    assert file_hits(home.root) == {}


_SENSOR_STATE = """
query SensorState($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { ... on Sensor { sensorState { id status } } }
}
"""
_STOP_SENSOR = """
mutation StopSensor($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}
"""


def test_stopping_the_failure_alert_sensor_is_alerted_and_shown(served: tuple[DagsterDev, dict[str, str]]) -> None:
    """Anyone may stop a sensor over GraphQL: the watchdog alerts once (sensors.log) and `intent status` warns."""
    dev, cli_env = served
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                "sensorName": "intent_failure_alerts_sensor"}
    state = dev.client.query(_SENSOR_STATE, {"selector": selector})["sensorOrError"]["sensorState"]
    stopped = dev.client.query(_STOP_SENSOR, {"id": state["id"]})["stopSensor"]
    assert stopped["__typename"] == "StopSensorMutationResult", stopped
    log = dev.home.alerts / SENSOR_LOG
    # The watchdog ticks every 30 s.
    wait_for(lambda: log.exists() and log.read_text().strip(), timeout=120, what="the sensor-stopped alert")
    time.sleep(35)  # one more watchdog tick: still one line
    [line] = [json.loads(text) for text in log.read_text().splitlines()]
    assert line["error_class"] == "SensorStopped" and "intent_failure_alerts_sensor" in line["message"]
    shown = subprocess.run([INTENT_BIN, "status"], env=cli_env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert shown.returncode == 0, shown.stderr
    assert "warning: sensor intent_failure_alerts_sensor is stopped" in shown.stderr
