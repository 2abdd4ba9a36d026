"""End to end: under a real `dagster dev`, the daemon's failure sensor alerts on a failing intent run once."""

import json
import time
from pathlib import Path

from intent_pipelines.dagster_dev import LOCATION, REPOSITORY, DagsterDev, DagsterGraphQL
from intent_pipelines.testing import prepare_sample_home, stop_fleet

FAILING_INTENT = """\
name: always-fails
summary: exits 1
steps:
  - id: explode
    run: [python3, -c, "import sys; print('disk full on /var/lib/app'); sys.exit(1)"]
"""

SENSOR = "intent_failure_alerts_sensor"
INTERVAL_S = 5

_SENSOR_TICKS = """
query IntentSensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 5) { status } } }
    ... on Error { message }
  }
}
"""


def wait_for_first_tick(client: DagsterGraphQL, timeout_s: float = 60) -> None:
    """A run-status sensor's first tick only sets its cursor: failures before it are not its business."""
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": SENSOR}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sensor = client.query(_SENSOR_TICKS, {"selector": selector})["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        assert sensor["sensorState"]["status"] == "RUNNING"  # default_status=RUNNING, nobody switched it on
        if sensor["sensorState"]["ticks"]:
            return
        time.sleep(1)
    raise AssertionError(f"{SENSOR} did not tick within {timeout_s:.0f}s")


def test_failing_intent_produces_exactly_one_alert_and_a_report(tmp_path: Path) -> None:
    """A user intent that exits 1, launched over GraphQL, yields one alert line and a report within a minute."""
    home = prepare_sample_home(tmp_path / "home")
    intents = tmp_path / "intents"
    intents.mkdir()
    (intents / "always-fails.yaml").write_text(FAILING_INTENT)
    log = home.alerts / "intent-failures.log"
    try:
        with DagsterDev(home, env={"INTENTS_PATH": str(intents),
                                   "INTENT_ALERT_SENSOR_INTERVAL_S": str(INTERVAL_S)}) as dev:
            client = dev.client
            wait_for_first_tick(client)
            run_id = client.launch_run("always_fails", {})
            assert client.wait_for_run(run_id, timeout=60) == "FAILURE"

            deadline = time.monotonic() + 60
            while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline:
                time.sleep(1)
            assert log.exists(), f"no alert within 60 s\n{dev.log_tail()}"
            # Several more ticks: the sensor must not alert on the same run again.
            time.sleep(INTERVAL_S * 3)
            lines = [json.loads(line) for line in log.read_text().splitlines()]
    finally:
        stop_fleet(home)

    [line] = lines
    assert (line["run_id"], line["request_id"], line["intent"], line["step"]) == (run_id, run_id, "always-fails",
                                                                                  "explode")
    assert (line["exit_code"], line["process_exit_code"], line["reason"]) == (10, 1, "step_failed")
    report = Path(line["report"])
    assert report == home.reports / f"{run_id}.md"
    text = report.read_text()
    assert "disk full on /var/lib/app" in text and f"`intent resume {run_id}`" in text
