"""Which of the product's sensors are stopped, read from the instance's sensor states."""

from typing import Any

from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

# The sensors whose silence loses facts: failures not alerted, stuck requests not ended.
WATCHDOG_SENSOR = "stuck_request_watchdog_sensor"
ALERT_SENSORS = ("intent_failure_alerts_sensor", "intent_cancel_alerts_sensor")
PRODUCT_SENSORS = (*ALERT_SENSORS, WATCHDOG_SENSOR)


def stopped_product_sensors(instance: Any) -> list[str]:
    """The product sensors an operator stopped (a sensor never toggled has no state: it runs by default)."""
    states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR,
                                           instigator_statuses={InstigatorStatus.STOPPED})
    return sorted({s.instigator_name for s in states if s.instigator_name in PRODUCT_SENSORS})
