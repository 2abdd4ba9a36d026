"""The stuck-request watchdog as a Dagster sensor; the logic lives in intent_pipelines.watchdog."""

import dagster as dg

from intent_pipelines.alerts.sensors import alert_stopped_sensors
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.dagster_defs.sensor_health import ALERT_SENSORS, WATCHDOG_SENSOR, stopped_product_sensors
from intent_pipelines.lifecycle.crash import reap_dead_owners, run_failer
from intent_pipelines.watchdog import check_stuck_requests


# Stuck runs that hold a target's lock block its queue: the most common complaint about runbook
# tools. Dagster's run monitoring catches dead run workers it launched and runs past
# dagster/max_runtime; this sensor catches what only the state store knows about: a request that
# shows no sign of life (no heartbeat), whoever started it (`intent run`, the UI, a schedule).
# It never launches runs; it only yields a SkipReason with what it found and did.
@dg.sensor(
    name=WATCHDOG_SENSOR,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Ends RUNNING requests whose process died on this host (CRASHED); finds RUNNING requests "
                "whose heartbeat is older than INTENT_WATCHDOG_STALE_S "
                "(default 900 s) or whose Dagster run ended without ending them; collects forensics "
                "under INTENT_HOME/forensics, stops them as WATCHDOG_STUCK, releases their locks and "
                "appends an alert to INTENT_HOME/logs/alerts/watchdog.log. Alerts (sensors.log, webhook) when "
                "a failure-alert sensor is stopped.",
)
def stuck_request_watchdog_sensor(context: dg.SensorEvaluationContext, intent: IntentRuntime) -> dg.SkipReason:
    engine = intent.engine()
    crashed = reap_dead_owners(engine.store, engine.home, seen_by="watchdog",
                               on_crashed=run_failer(context.instance))
    for request_id in crashed:
        context.log.warning(f"request {request_id}: its process died; ended CRASHED")
    stopped = stopped_product_sensors(context.instance)
    for alert in alert_stopped_sensors(engine.home, stopped, watched=list(ALERT_SENSORS)):
        context.log.warning(alert.message)
    report = check_stuck_requests(engine.home, engine.store, context.instance)
    for stuck in report.stuck:
        context.log.warning(f"stuck request {stuck.request_id} ({stuck.intent}): {stuck.why}; "
                            f"ended by {stuck.ended_by} as {stuck.status}; forensics {stuck.forensics}")
    return dg.SkipReason(report.summary())


def watchdog_definitions() -> dg.Definitions:
    """The watchdog sensor (the `intent` runtime resource comes from the main Definitions)."""
    return dg.Definitions(sensors=[stuck_request_watchdog_sensor])
