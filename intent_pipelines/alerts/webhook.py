"""Webhook delivery: POST each new alert to INTENT_ALERT_WEBHOOK_URL, with retries and a deadline, never raising.

The body is Slack-compatible (a ``text`` field) and carries the alert's structured fields beside it.
Delivery is best effort on top of the alert log: when every attempt fails, the failure is logged
to INTENT_HOME/logs/alerts/webhook-delivery.log and the caller carries on; a run's outcome never
depends on a webhook.

Time is bounded three ways. An attempt ends after ``timeout_s`` (the whole answer, which is its
status line and headers; the body is never read). requests' own timeouts apply to each read, so
a server that drips a byte every few seconds would hold them forever: the attempt's sockets are
shut when its time is up. A delivery, attempts and backoff together, ends at ``deadline_s``. And a caller
waits on one endpoint for at most ``deadline_s`` in any minute, so a sensor tick that alerts on
many runs still ends well inside Dagster's 60 s sensor timeout: a delivery it cannot wait for goes
on in the background, under its own deadline, and logs its failure the same way.
"""

import contextlib
import json
import logging
import random
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from intent_pipelines.alerts.log import AlertRecord, now_ts
from intent_pipelines.alerts.scrub import scrub
from intent_pipelines.home import IntentHome
from intent_pipelines.retries import Backoff
from intent_pipelines.settings import settings

DELIVERY_LOG = "webhook-delivery.log"
# A deadline longer than this could not be waited for inside a sensor tick (Dagster's sensor
# timeout is 60 s; the tick has other work), so it is capped here.
MAX_DEADLINE_S = 30.0
HOLD_WINDOW_S = 60.0  # callers wait on one endpoint for at most its deadline in any window this long
BACKGROUND_AT_ONCE = 4  # deliveries under way at once, so that a burst of alerts does not stampede the endpoint
# A cut comes this long after an attempt's time, so a silent server still ends it with requests'
# own ReadTimeout (the clearer message); the cut is for servers that keep sending, slowly.
_CUT_GRACE_S = 0.2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how to deliver; ``url`` empty means no webhook."""

    url: str = ""
    timeout_s: float = 5.0
    attempts: int = 3
    deadline_s: float = 20.0
    backoff: Backoff = field(default_factory=lambda: Backoff(delay_s=1.0, factor=2.0, jitter=0.2, max_delay_s=30))

    @classmethod
    def from_env(cls) -> "WebhookConfig":
        """INTENT_ALERT_WEBHOOK_URL, plus optional _TIMEOUT and _DEADLINE (seconds) and _ATTEMPTS."""
        current = settings()
        return cls(url=current.webhook_url, timeout_s=current.webhook_timeout_s, attempts=current.webhook_attempts,
                   deadline_s=current.webhook_deadline_s)


@dataclass(frozen=True)
class Delivery:
    """How a delivery went: delivered or not, after how many attempts, and the last error.

    ``pending``: the caller stopped waiting (the endpoint used up its share of this minute) while
    the delivery goes on in the background; a failure is still logged when it ends.
    """

    delivered: bool
    attempts: int
    error: str = ""
    status_code: int | None = None
    pending: bool = False


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


def _past_deadline(config: WebhookConfig) -> str:
    return f"webhook delivery exceeded its {_deadline_s(config):g}s deadline"


def _deadline_s(config: WebhookConfig) -> float:
    return min(config.deadline_s, MAX_DEADLINE_S)


# --- one attempt, cut at its time ----------------------------------------------------------------

_current = threading.local()  # the _Cut of the attempt this thread is making


class _Cut:
    """The sockets of one attempt, shut at once when a timer says the attempt is out of time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.fired = False

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.fired:
                _shut(sock)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # shutdown (not close) wakes a read blocked in another thread, which then fails at once.
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _track(sock: socket.socket | None) -> None:
    cut: _Cut | None = getattr(_current, "cut", None)
    if cut is not None and sock is not None:
        cut.track(sock)


class _TrackedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _track(self.sock)


class _TrackedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _track(self.sock)


class _CuttableAdapter(HTTPAdapter):
    """requests' adapter (proxies, CA bundles, TLS as usual) whose connections register with the attempt's cut."""

    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> HTTPConnectionPool:
        pool = super().get_connection_with_tls_context(*args, **kwargs)
        if isinstance(pool, HTTPSConnectionPool):
            pool.ConnectionCls = _TrackedHTTPSConnection
        else:
            pool.ConnectionCls = _TrackedHTTPConnection
        return pool


def _post(url: str, body: bytes, *, seconds: float) -> int:
    """POST ``body`` and return the status within ``seconds``; raises requests' errors, or TimeoutError when cut."""
    cut = _Cut()
    timer = threading.Timer(seconds + _CUT_GRACE_S, cut.fire)
    timer.daemon = True
    _current.cut = cut
    timer.start()
    try:
        with requests.Session() as session:
            adapter = _CuttableAdapter(max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            # stream=True: the status line and headers are the answer; the body is never read, so a
            # server that drips it cannot hold the attempt.
            with session.post(url, data=body, timeout=(seconds, seconds), stream=True,
                              headers={"Content-Type": "application/json"}) as response:
                if cut.fired:  # http.client takes the end of a cut stream for the end of the headers
                    raise requests.ConnectionError("cut")
                return response.status_code
    except requests.RequestException:
        if cut.fired:
            raise TimeoutError(f"webhook attempt exceeded its {seconds:g}s timeout") from None
        raise
    finally:
        timer.cancel()
        _current.cut = None


# --- a delivery: attempts and backoff under one deadline ------------------------------------------


class _Outcome:
    """A delivery's result, settled once: by its attempts, or by its caller when the deadline passes first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = threading.Event()  # set once the result is in and its failure, if any, logged
        self.delivery: Delivery | None = None
        self.started = False  # False while waiting for one of the BACKGROUND_AT_ONCE slots
        self.attempts = 0

    def settle(self, delivery: Delivery, home: IntentHome | None, record: AlertRecord,
               config: WebhookConfig) -> bool:
        """Keep ``delivery`` (and log it when it failed) unless a result is already in; whether it was kept."""
        with self._lock:
            if self.delivery is not None:
                return False
            self.delivery = delivery
        if not delivery.delivered and home is not None:
            log_delivery_failure(home, record, delivery, config)
        self.done.set()
        return True


def _attempt_all(record: AlertRecord, config: WebhookConfig, outcome: _Outcome,
                 rng: random.Random | None) -> Delivery:
    outcome.started = True
    body = json.dumps(payload(record), sort_keys=True).encode("utf-8")
    deadline = time.monotonic() + _deadline_s(config)
    error, status = "", None
    for attempt in range(1, config.attempts + 1):
        outcome.attempts = attempt
        left = deadline - time.monotonic()
        seconds = min(config.timeout_s, left)
        try:
            status = _post(config.url, body, seconds=seconds)
            if 200 <= status < 300:
                return Delivery(delivered=True, attempts=attempt, status_code=status)
            error = f"HTTP {status}"
            if status < 500 and status != 429:
                break  # the endpoint refuses this request; repeating it will not help
        except (requests.Timeout, TimeoutError) as exc:  # requests' own, or _post's cut
            status = None
            error = _past_deadline(config) if seconds >= left else _describe(exc, config.url)
        except Exception as exc:  # delivery must never raise into the caller, whatever happens
            status = None
            error = _describe(exc, config.url)
        wait = config.backoff.wait_before(attempt, rng)
        if attempt == config.attempts or time.monotonic() + wait >= deadline:
            break  # no time for another attempt before the deadline
        if outcome.done.wait(wait):
            break  # the caller gave up at the deadline
    return Delivery(delivered=False, attempts=outcome.attempts, error=error, status_code=status)


# --- how long callers wait ------------------------------------------------------------------------


class _Holds:
    """How long callers waited on each endpoint in the last HOLD_WINDOW_S."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waits: dict[str, list[tuple[float, float]]] = {}  # url -> [(ended at, seconds)]

    def left(self, url: str, limit_s: float) -> float:
        """Seconds a caller may still wait on ``url`` now."""
        with self._lock:
            since = time.monotonic() - HOLD_WINDOW_S
            recent = [(end, spent) for end, spent in self._waits.get(url, []) if end > since]
            self._waits[url] = recent
            return max(0.0, limit_s - sum(spent for _, spent in recent))

    def add(self, url: str, spent_s: float) -> None:
        with self._lock:
            self._waits.setdefault(url, []).append((time.monotonic(), spent_s))


_holds = _Holds()
_at_once = threading.BoundedSemaphore(BACKGROUND_AT_ONCE)


def deliver(record: AlertRecord, config: WebhookConfig, *, home: IntentHome | None = None,
            rng: random.Random | None = None) -> Delivery:
    """POST the alert; retry timeouts, connection errors, 429 and 5xx with backoff, all within the deadline.

    Never raises, and never blocks past the deadline. A delivery the caller cannot wait for (see the
    module docstring) returns ``pending`` and logs its own failure, if any, when it ends.
    """
    if not config.url:
        return Delivery(delivered=False, attempts=0, error="no webhook configured")
    outcome = _Outcome()

    def run() -> None:
        with _at_once:
            delivery = _attempt_all(record, config, outcome, rng)
        outcome.settle(delivery, home, record, config)

    may_wait = _holds.left(config.url, _deadline_s(config))
    started = time.monotonic()
    threading.Thread(target=run, name=f"webhook-{record.run_id}", daemon=True).start()
    outcome.done.wait(may_wait)
    _holds.add(config.url, time.monotonic() - started)
    if not outcome.done.is_set():
        if may_wait < _deadline_s(config):
            return Delivery(delivered=False, attempts=0, pending=True,
                            error=f"not waited for: this endpoint already held callers for {_deadline_s(config):g}s "
                                  "in the last minute; delivery goes on in the background")
        if not outcome.started:
            return Delivery(delivered=False, attempts=0, pending=True,
                            error=f"not waited for: {BACKGROUND_AT_ONCE} deliveries were already under way; "
                                  "this one goes on in the background")
        late = Delivery(delivered=False, attempts=outcome.attempts, error=_past_deadline(config))
        if outcome.settle(late, home, record, config):
            return late
        outcome.done.wait()  # the attempts settled in the same instant: their line is being appended
    assert outcome.delivery is not None  # done is set only once a delivery is kept
    return outcome.delivery


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
