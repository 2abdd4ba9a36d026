"""Webhook delivery: POST each new alert to INTENT_ALERT_WEBHOOK_URL, with retries, never raising.

The body is Slack-compatible (a ``text`` field) and carries the alert's structured fields beside it.
Delivery is best effort on top of the alert log: when every attempt fails, the failure is logged
to INTENT_HOME/logs/alerts/webhook-delivery.log and the caller carries on; a run's outcome never
depends on a webhook.
"""

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from intent_pipelines.alerts.log import AlertRecord, now_ts
from intent_pipelines.alerts.scrub import scrub
from intent_pipelines.home import IntentHome
from intent_pipelines.retries import Backoff
from intent_pipelines.settings import settings

DELIVERY_LOG = "webhook-delivery.log"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how to deliver; ``url`` empty means no webhook."""

    url: str = ""
    timeout_s: float = 5.0
    attempts: int = 3
    backoff: Backoff = field(default_factory=lambda: Backoff(delay_s=1.0, factor=2.0, jitter=0.2, max_delay_s=30))

    @classmethod
    def from_env(cls) -> "WebhookConfig":
        """INTENT_ALERT_WEBHOOK_URL, plus optional _TIMEOUT (seconds) and _ATTEMPTS."""
        current = settings()
        return cls(url=current.webhook_url, timeout_s=current.webhook_timeout_s, attempts=current.webhook_attempts)


@dataclass(frozen=True)
class Delivery:
    """How a delivery went: delivered or not, after how many attempts, and the last error."""

    delivered: bool
    attempts: int
    error: str = ""
    status_code: int | None = None


def payload(record: AlertRecord) -> dict[str, Any]:
    """The JSON body: Slack's ``text`` plus every field of the alert line."""
    where = f" at step `{record.step}`" if record.step else ""
    text = (f":rotating_light: *{record.intent or 'intent'}* request `{record.request_id}` failed{where} "
            f"({record.reason or 'failure'}, exit {record.exit_code}): {scrub(record.message)}\n"
            f"Report: {record.report}")
    return {"text": text, "alert": {**asdict(record), "message": scrub(record.message)}}


def _safe_url(url: str) -> str:
    # Webhook URLs carry their secret in the path (Slack, Discord): log the scheme and host only.
    try:
        parsed = urlsplit(url)
        port = f":{parsed.port}" if parsed.port else ""
    except ValueError:
        return "(unparsable webhook URL)"
    return f"{parsed.scheme}://{parsed.hostname or ''}{port}/..."


def _describe(exc: Exception, url: str) -> str:
    """The exception in one line, without the webhook URL or its path (requests quotes both)."""
    text = str(exc).replace(url, _safe_url(url))
    path = urlsplit(url).path
    if len(path) > 1:
        text = text.replace(path, "/...")
    return f"{type(exc).__name__}: {scrub(text)}"[:300]


def deliver(record: AlertRecord, config: WebhookConfig, *, home: IntentHome | None = None,
            sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> Delivery:
    """POST the alert; retry timeouts, connection errors, 429 and 5xx with backoff. Never raises."""
    if not config.url:
        return Delivery(delivered=False, attempts=0, error="no webhook configured")
    body = json.dumps(payload(record), sort_keys=True).encode("utf-8")
    error, status = "", None
    attempt = 0
    for attempt in range(1, config.attempts + 1):
        try:
            response = requests.post(config.url, data=body, timeout=config.timeout_s,
                                     headers={"Content-Type": "application/json"})
            status = response.status_code
            if 200 <= status < 300:
                return Delivery(delivered=True, attempts=attempt, status_code=status)
            error = f"HTTP {status}"
            if status < 500 and status != 429:
                break  # the endpoint refuses this request; repeating it will not help
        except requests.RequestException as exc:
            error = _describe(exc, config.url)
        except Exception as exc:  # delivery must never raise into the caller, whatever happens
            error = _describe(exc, config.url)
        if attempt < config.attempts:
            sleep(config.backoff.wait_before(attempt, rng))
    delivery = Delivery(delivered=False, attempts=attempt, error=error, status_code=status)
    if home is not None:
        log_delivery_failure(home, record, delivery, config)
    return delivery


def log_delivery_failure(home: IntentHome, record: AlertRecord, delivery: Delivery, config: WebhookConfig) -> None:
    """Append one JSON line to webhook-delivery.log; a failure to write it goes to the process log."""
    line = {"ts": now_ts(), "run_id": record.run_id, "request_id": record.request_id, "url": _safe_url(config.url),
            "attempts": delivery.attempts, "error": delivery.error, "status_code": delivery.status_code}
    try:
        home.alerts.mkdir(parents=True, exist_ok=True)
        with (home.alerts / DELIVERY_LOG).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")
    except OSError:
        log.warning("could not append to %s: %s", home.alerts / DELIVERY_LOG, line, exc_info=True)
