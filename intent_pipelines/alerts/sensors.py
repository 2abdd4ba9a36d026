"""Alerts on the product's own sensors: one line (and a page) when one is stopped, again after each restart.

Stopping the failure-alert sensor silences every later failure, and anyone who can reach the
Dagster webserver can stop it (docs/security.md). The watchdog sensor checks the others on every
tick; ``intent status`` shows any stopped one.
"""

import json
from pathlib import Path

from intent_pipelines import secrets
from intent_pipelines.alerts.log import AlertRecord, now_ts
from intent_pipelines.alerts.webhook import WebhookConfig, deliver
from intent_pipelines.home import IntentHome

SENSOR_LOG = "sensors.log"
_STATE = "sensors-stopped.json"  # the sensors already alerted on, until they run again


def _state_path(home: IntentHome) -> Path:
    return home.alerts / _STATE


def alert_stopped_sensors(home: IntentHome, stopped: list[str], *, watched: list[str],
                          webhook: WebhookConfig | None = None) -> list[AlertRecord]:
    """Alert once on each of ``watched`` newly in ``stopped``; forget those running again. Returns new alerts."""
    path = _state_path(home)
    known = set(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else set()
    now_stopped = set(stopped) & set(watched)
    alerts = []
    for name in sorted(now_stopped - known):
        ts = now_ts()
        record = AlertRecord(
            ts=ts, request_id="", run_id=f"sensor:{name}:{ts}", intent="", step="", error_class="SensorStopped",
            exit_code=None, message=f"the sensor {name} was stopped: until it runs again, what it watches goes "
                                    "unnoticed. Start it in the Dagster UI (Automation) if the stop was not meant.",
            signature="", report="", reason="sensor_stopped", category="failure")
        home.alerts.mkdir(parents=True, exist_ok=True)
        with (home.alerts / SENSOR_LOG).open("a", encoding="utf-8") as fh:
            fh.write(secrets.mask(record.to_json()) + "\n")
        config = webhook if webhook is not None else WebhookConfig.from_env()
        if config.url:
            deliver(record, config, home=home)
        alerts.append(record)
    if now_stopped != known:
        home.alerts.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sorted(now_stopped)), encoding="utf-8")
    return alerts
