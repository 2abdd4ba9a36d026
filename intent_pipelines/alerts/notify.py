"""Alerting on an ending: one alert line per run, a runbook report, forensics, and a webhook POST for pages.

Idempotent per run id: calling it again for the same run (the lifecycle ended the request, then the
failure sensor saw its run fail; a redelivered sensor tick) returns the alert already written.
"""

from dataclasses import dataclass

from intent_pipelines.alerts.failure import FailureFacts, dagster_only_failure, read_failure
from intent_pipelines.alerts.forensics import write_forensics
from intent_pipelines.alerts.log import AlertRecord, append_once, now_ts
from intent_pipelines.alerts.report import write_report
from intent_pipelines.alerts.signatures import signature
from intent_pipelines.alerts.webhook import Delivery, WebhookConfig, deliver
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore


@dataclass(frozen=True)
class Notification:
    """The alert, whether it is new, and how webhook delivery went (None: no page)."""

    alert: AlertRecord
    new: bool
    delivery: Delivery | None = None


def notify(home: IntentHome, facts: FailureFacts, *, webhook: WebhookConfig | None = None) -> Notification:
    """Alert on one ending once per run: its line (with its category), report, forensics, webhook.

    Refusals and stops get a line and a report but no page (no webhook POST) and no forensics.
    """

    def build() -> AlertRecord:
        ts = now_ts()
        sig = facts.signature or signature(facts.message, step=facts.step, error_class=facts.error_class)
        forensics = write_forensics(home, facts, ts=ts) if facts.category.pages else None
        report = write_report(home, facts, ts=ts, signature=sig, forensics=forensics)
        return AlertRecord(
            ts=ts, request_id=facts.request_id, run_id=facts.run_id, intent=facts.intent, step=facts.step,
            error_class=facts.error_class, exit_code=facts.exit_code, message=facts.message, signature=sig,
            report=str(report), reason=facts.reason.value, phase=facts.phase, status=facts.request_status,
            run_status=facts.run_status, process_exit_code=facts.process_exit_code,
            forensics=str(forensics or ""), category=facts.category.value)

    alert, new = append_once(home, facts.run_id, build)
    if not new or not facts.category.pages:
        return Notification(alert, new=new)
    config = webhook if webhook is not None else WebhookConfig.from_env()
    delivery = deliver(alert, config, home=home) if config.url else None
    return Notification(alert, new=True, delivery=delivery)


def notify_request(home: IntentHome, store: StateStore, *, run_id: str, request_id: str, run_status: str = "",
                   webhook: WebhookConfig | None = None) -> Notification | None:
    """Alert on how ``request_id`` ended in ``run_id``; None when it has not ended (or ended well)."""
    facts = read_failure(store, run_id=run_id, request_id=request_id, run_status=run_status)
    if facts is None or not facts.category.alerts:
        return None
    return notify(home, facts, webhook=webhook)


def notify_unrecorded(home: IntentHome, *, run_id: str, request_id: str, intent: str, run_status: str,
                      fallback_message: str, problem: str = "") -> Notification:
    """Alert on a run that left no request to read (it failed before preflight, or the store is down)."""
    facts = dagster_only_failure(run_id=run_id, request_id=request_id, intent=intent, run_status=run_status,
                                 fallback_message=fallback_message, problem=problem)
    return notify(home, facts)
