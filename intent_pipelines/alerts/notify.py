"""handle_failure: one failed run -> report, forensics, one alert line, and a webhook POST.

Idempotent per run id: calling it again for the same run (a redelivered sensor tick, a daemon
restart) returns the alert already written and changes nothing.
"""

from dataclasses import dataclass

from intent_pipelines.alerts.failure import RUN_FAILURE, dagster_only_failure, read_failure
from intent_pipelines.alerts.forensics import write_forensics
from intent_pipelines.alerts.log import AlertRecord, append_once, now_ts
from intent_pipelines.alerts.report import write_report
from intent_pipelines.alerts.signatures import signature
from intent_pipelines.alerts.webhook import Delivery, WebhookConfig, deliver
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore


@dataclass(frozen=True)
class Notification:
    """The outcome of handle_failure: the alert, whether it is new, and how webhook delivery went."""

    alert: AlertRecord
    new: bool
    delivery: Delivery | None = None


def handle_failure(home: IntentHome, store: StateStore, run_id: str, request_id: str, *, intent: str = "",
                   run_status: str = RUN_FAILURE, fallback_message: str = "",
                   webhook: WebhookConfig | None = None) -> AlertRecord:
    """Alert on a failed run once; returns its alert line (the existing one on a repeat call)."""
    return notify_failure(home, store, run_id, request_id, intent=intent, run_status=run_status,
                          fallback_message=fallback_message, webhook=webhook).alert


def notify_failure(home: IntentHome, store: StateStore, run_id: str, request_id: str, *, intent: str = "",
                   run_status: str = RUN_FAILURE, fallback_message: str = "",
                   webhook: WebhookConfig | None = None) -> Notification:
    """handle_failure, also saying whether the alert is new and how webhook delivery went."""

    def build() -> AlertRecord:
        ts = now_ts()
        try:
            facts = read_failure(store, run_id=run_id, request_id=request_id, intent=intent,
                                 run_status=run_status, fallback_message=fallback_message)
        except Exception as exc:  # the store is down or inconsistent: alert with what Dagster knows
            facts = dagster_only_failure(run_id=run_id, request_id=request_id, intent=intent, run_status=run_status,
                                         fallback_message=fallback_message, problem=f"{type(exc).__name__}: {exc}")
        sig = signature(facts.error, step=facts.step, error_class=facts.error_class)
        forensics = write_forensics(home, facts, ts=ts)
        report = write_report(home, facts, ts=ts, signature=sig, forensics=forensics)
        return AlertRecord(
            ts=ts, request_id=request_id, run_id=run_id, intent=facts.intent, step=facts.step,
            error_class=facts.error_class, exit_code=facts.exit_code, message=facts.message, signature=sig,
            report=str(report), reason=facts.reason.value, phase=facts.phase, status=facts.request_status,
            run_status=run_status, process_exit_code=facts.process_exit_code, forensics=str(forensics))

    alert, new = append_once(home, run_id, build)
    if not new:
        return Notification(alert, new=False)
    config = webhook if webhook is not None else WebhookConfig.from_env()
    delivery = deliver(alert, config, home=home) if config.url else None
    return Notification(alert, new=True, delivery=delivery)
