"""Stopped product sensors: one alert per stop, none while it stays stopped, a new one after a restart."""

import json
from pathlib import Path

from intent_pipelines.alerts.sensors import SENSOR_LOG, alert_stopped_sensors
from intent_pipelines.alerts.webhook import WebhookConfig
from intent_pipelines.home import IntentHome

WATCHED = ["intent_failure_alerts_sensor", "intent_cancel_alerts_sensor"]
NO_WEBHOOK = WebhookConfig(url="")


def lines(home: IntentHome) -> list[dict[str, object]]:
    path = home.alerts / SENSOR_LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_stop_is_alerted_once_and_again_after_the_sensor_ran(tmp_path: Path) -> None:
    """Stopped: one line; still stopped: nothing new; running, then stopped again: a second line."""
    home = IntentHome(tmp_path).ensure()
    stopped = ["intent_failure_alerts_sensor"]
    assert [a.error_class for a in alert_stopped_sensors(home, stopped, watched=WATCHED, webhook=NO_WEBHOOK)] \
        == ["SensorStopped"]
    assert alert_stopped_sensors(home, stopped, watched=WATCHED, webhook=NO_WEBHOOK) == []
    assert alert_stopped_sensors(home, [], watched=WATCHED, webhook=NO_WEBHOOK) == []
    assert len(alert_stopped_sensors(home, stopped, watched=WATCHED, webhook=NO_WEBHOOK)) == 1
    assert [line["error_class"] for line in lines(home)] == ["SensorStopped", "SensorStopped"]


def test_sensors_that_are_not_watched_are_ignored(tmp_path: Path) -> None:
    """The watchdog does not alert on itself (it is not ticking when stopped) nor on unknown sensors."""
    home = IntentHome(tmp_path).ensure()
    assert alert_stopped_sensors(home, ["stuck_request_watchdog_sensor", "other"], watched=WATCHED,
                                 webhook=NO_WEBHOOK) == []
    assert lines(home) == []
