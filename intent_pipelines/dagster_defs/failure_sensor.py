"""Run-status sensors that turn every failed or canceled intent run into one alert (alerts/notify.py)."""

import os

import dagster as dg

from intent_pipelines import run_tags
from intent_pipelines.alerts.failure import RUN_CANCELED, RUN_FAILURE
from intent_pipelines.alerts.notify import notify_request, notify_unrecorded
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.lifecycle.crash import end_crashed_run
from intent_pipelines.settings import settings

# Dagster's run-status sensors handle 5 runs per tick (of 25 fetched) unless these are set, so a
# burst of 30 failures took 6 ticks (a minute) to alert. Read at every tick in the code server,
# which imports this module; a value set by the operator wins. 100 alerts take about a second.
ALERTS_PER_TICK = 100
os.environ.setdefault("DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT", str(ALERTS_PER_TICK))
os.environ.setdefault("DAGSTER_RUN_STATUS_SENSOR_FETCH_LIMIT", str(2 * ALERTS_PER_TICK))


def _interval_s() -> int:
    return settings().alert_sensor_interval_s


def _alert(context: dg.RunStatusSensorContext, intent: IntentRuntime, run_status: str) -> None:
    run = context.dagster_run
    name = run.tags.get(run_tags.NAME)
    if not name:
        return  # not an intent run
    engine = intent.engine()
    event = context.dagster_event
    message = (event.message or "") if event is not None else ""
    request_id = run.root_run_id or run.run_id
    # The lifecycle alerted when it ended the request; this covers runs whose worker died (or were
    # terminated) before the request ended, and runs that never reached preflight. Dagster advances
    # the cursor past a run even when this raises, so a store that cannot be read still gets a line.
    try:
        ended = end_crashed_run(engine.store, engine.home, request_id, run_id=run.run_id, run_status=run_status,
                                message=message)
        row = engine.store.request(request_id) if ended else None
        if row is not None:
            context.instance.add_run_tags(run.run_id, run_tags.outcome_tags(row))
        outcome = notify_request(engine.home, engine.store, run_id=run.run_id, request_id=request_id,
                                 run_status=run_status)
        if outcome is None and engine.store.request(request_id) is None:
            outcome = notify_unrecorded(engine.home, run_id=run.run_id, request_id=request_id, intent=name,
                                        run_status=run_status, fallback_message=message,
                                        problem="the run ended before its preflight recorded the request")
    except Exception as exc:
        outcome = notify_unrecorded(engine.home, run_id=run.run_id, request_id=request_id, intent=name,
                                    run_status=run_status, fallback_message=message,
                                    problem=f"the state store could not be read: {type(exc).__name__}: {exc}")
        ended = False
    if outcome is None:
        context.log.info(f"request {request_id} of run {run.run_id} did not end badly: no alert")
        return
    alert = outcome.alert
    delivery = ""
    if outcome.delivery is not None:
        delivery = "; webhook delivered" if outcome.delivery.delivered else \
            f"; webhook failed ({outcome.delivery.error})"
    context.log.info(f"{'alerted' if outcome.new else 'already alerted'}: {alert.intent} request "
                     f"{alert.request_id} {alert.status} ({alert.reason}) at {alert.step or '-'} "
                     f"(signature {alert.signature}){'; ended it now' if ended else ''}; report {alert.report}"
                     f"{delivery}")


# Why: a failed intent run must reach a person within a minute, with a reason and the next command.
# RUNNING by default because a run-status sensor's first tick only sets its cursor; the cursor then
# carries across daemon restarts, so no failure between two ticks is lost.
@dg.run_failure_sensor(
    name="intent_failure_alerts_sensor",
    minimum_interval_seconds=_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="For every failed intent run: one line in INTENT_HOME/logs/alerts/intent-failures.log, a runbook "
                "report in INTENT_HOME/reports/, forensics, and a webhook POST when INTENT_ALERT_WEBHOOK_URL is set.",
)
def intent_failure_alerts_sensor(context: dg.RunFailureSensorContext, intent: IntentRuntime) -> None:
    _alert(context, intent, RUN_FAILURE)


# Why: a run terminated from the UI ends CANCELED, not FAILURE, and must be alerted on too.
@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    name="intent_cancel_alerts_sensor",
    minimum_interval_seconds=_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="For every canceled intent run: the same alert line, report and webhook as a failure, with "
                "reason operator_stop.",
)
def intent_cancel_alerts_sensor(context: dg.RunStatusSensorContext, intent: IntentRuntime) -> None:
    _alert(context, intent, RUN_CANCELED)


def alert_definitions() -> dg.Definitions:
    """The two alert sensors (the runtime resource comes from the intent definitions)."""
    return dg.Definitions(sensors=[intent_failure_alerts_sensor, intent_cancel_alerts_sensor])
