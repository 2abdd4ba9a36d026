"""A webhook that is down, slow, drips its answer or fails: one alert per failure, delivery within its deadline.

Each case runs a real failing request through `intent run` while a real HTTP server on loopback
misbehaves as the webhook, then checks: exactly one alert line for the request, delivery ended
within INTENT_ALERT_WEBHOOK_DEADLINE (plus a small margin), a one-line reason in the delivery log
without the URL's secret path or token, and the run's exit code and status untouched. A sensor
tick alerting on several runs to a dripping webhook waits on it for one deadline in all; the
alerts it did not wait for are still POSTed, in the background, and their failures logged.
"""

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.run_status_sensor_definition import RunStatusSensorCursor

from intent_pipelines.alerts.log import alert_log_path, read_alerts
from intent_pipelines.alerts.webhook import DELIVERY_LOG
from intent_pipelines.dagster_defs.failure_sensor import intent_failure_alerts_sensor
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.errors import StepFailed
from intent_pipelines.home import IntentHome
from intent_pipelines.status import RequestStatus
from intent_pipelines.store import StateStore
from intent_pipelines.testing import free_ports, invoke_cli, run_intent, wait_for

DEADLINE_S = 3.0
# For scheduling on a loaded machine (and a tick's own work): these assertions bound correctness,
# they are no benchmark.
MARGIN_S = 1.5
SECRET_PATH = "/services/T000/B000/secretpart"

FAILING = """\
name: webhook-fault
summary: a step that fails
steps:
  - id: fail
    run: ["false"]
"""

Behaviour = Callable[[BaseHTTPRequestHandler, int, threading.Event], None]


def answer(status: int) -> Behaviour:
    def behave(handler: BaseHTTPRequestHandler, n: int, stop: threading.Event) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")
    return behave


def fail_once(status: int) -> Behaviour:
    def behave(handler: BaseHTTPRequestHandler, n: int, stop: threading.Event) -> None:
        answer(status if n == 1 else 200)(handler, n, stop)
    return behave


def silent(handler: BaseHTTPRequestHandler, n: int, stop: threading.Event) -> None:
    stop.wait(60)  # no status line until the test ends


def drip(head: bytes) -> Behaviour:
    """Send ``head`` at once, then one more byte a second, forever."""
    def behave(handler: BaseHTTPRequestHandler, n: int, stop: threading.Event) -> None:
        handler.wfile.write(head)
        while not stop.wait(1.0):
            handler.wfile.write(b"x")
    return behave


DRIP_HEADERS = drip(b"HTTP/1.1 200 OK\r\nX-Drip: ")
DRIP_BODY = drip(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")


@dataclass
class Webhook:
    """A webhook URL (with a secret path and token) and the POST bodies its server read."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def webhook_server(behaviour: Behaviour | None) -> Iterator[Webhook]:
    """A loopback server behaving as told on every POST; None: nothing listens on the port."""
    # A path of its own: delivery rations waiting per URL, and a port may come round again.
    path = f"{SECRET_PATH}/{uuid.uuid4().hex[:8]}?token=hunter2"
    if behaviour is None:
        yield Webhook(url=f"http://127.0.0.1:{free_ports(1)}{path}")
        return
    stop = threading.Event()
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            with suppress(OSError):  # the client gave up and closed the connection, as it should
                behaviour(self, len(hook.bodies), stop)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield hook
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def failing_intent(tmp_path: Path, sample_home: IntentHome, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user intent whose only step fails, and small webhook knobs: 3 attempts within a 3 s deadline."""
    directory = tmp_path / "intents"
    directory.mkdir()
    (directory / "webhook-fault.yaml").write_text(FAILING)
    monkeypatch.setenv("INTENTS_PATH", str(directory))
    # The per-attempt timeout is above the deadline, so every slow attempt ends at the deadline.
    monkeypatch.setenv("INTENT_ALERT_WEBHOOK_TIMEOUT", "5")
    monkeypatch.setenv("INTENT_ALERT_WEBHOOK_ATTEMPTS", "3")
    monkeypatch.setenv("INTENT_ALERT_WEBHOOK_DEADLINE", str(DEADLINE_S))
    monkeypatch.delenv("INTENT_ALERT_WEBHOOK_URL", raising=False)
    return "webhook-fault"


def delivery_log(home: IntentHome) -> list[dict[str, Any]]:
    path = home.alerts / DELIVERY_LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@dataclass(frozen=True)
class Case:
    """A webhook fault and what delivery must make of it (``reason`` None: delivered)."""

    behaviour: Behaviour | None
    reason: str | None
    posts: tuple[int, ...]  # how many POSTs the server may read


CASES = {
    "down": Case(None, "Connection refused", (0,)),
    "slow-headers": Case(silent, f"webhook delivery exceeded its {DEADLINE_S:g}s deadline", (1,)),
    "dripping-headers": Case(DRIP_HEADERS, f"webhook delivery exceeded its {DEADLINE_S:g}s deadline", (1,)),
    # The status line is the answer: a body that never ends does not hold the delivery.
    "dripping-body": Case(DRIP_BODY, None, (1,)),
    # The third attempt goes out only when the backoff (1 s, then 2 s, +-20 %) leaves time for it.
    "500-always": Case(answer(500), "HTTP 500", (2, 3)),
    "500-then-200": Case(fail_once(500), None, (2,)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_webhook_fault_costs_neither_the_alert_nor_the_run(
        name: str, failing_intent: str, sample_home: IntentHome, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the webhook does, the failure has one alert line, delivery ends by its deadline, the run is as it was."""
    case = CASES[name]
    with webhook_server(case.behaviour) as hook:
        monkeypatch.setenv("INTENT_ALERT_WEBHOOK_URL", hook.url)
        code, out, err = invoke_cli("run", failing_intent)
        # Delivery begins once the alert line is written and is the last thing the run does.
        delivery_s = time.time() - alert_log_path(sample_home).stat().st_mtime
        posts = len(hook.bodies)

    assert code == StepFailed.exit_code, out + err
    [alert] = list(read_alerts(sample_home))
    assert alert.intent == failing_intent and alert.step == "fail"
    request = StateStore(sample_home.store_url()).request(alert.request_id)
    assert request is not None and request["status"] == RequestStatus.FAILED.value
    assert delivery_s < DEADLINE_S + MARGIN_S, f"{name}: delivery took {delivery_s:.1f}s"
    assert posts in case.posts, f"{name}: {posts} POSTs"
    if posts:
        assert hook.bodies[0]["alert"]["request_id"] == alert.request_id
    logged = delivery_log(sample_home)
    if case.reason is None:
        assert logged == []
        return
    [line] = logged
    assert line["request_id"] == alert.request_id and case.reason in line["error"]
    assert "\n" not in line["error"]
    text = (sample_home.alerts / DELIVERY_LOG).read_text()
    assert "secretpart" not in text and "hunter2" not in text and "/services" not in text


def test_a_tick_waits_on_a_dripping_webhook_for_one_deadline_and_loses_no_alert(
        failing_intent: str, sample_home: IntentHome, instance: dg.DagsterInstance,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sensor tick alerting on three runs waits one deadline in all; the other two deliveries end in the background."""
    results = [run_intent(failing_intent, {}, instance)[0] for _ in range(3)]
    # Alert again, now from the sensor: as if the runs' workers had died before alerting.
    alert_log_path(sample_home).unlink()
    (sample_home.alerts / "alerted-runs.idx").unlink()
    with webhook_server(DRIP_HEADERS) as hook:
        monkeypatch.setenv("INTENT_ALERT_WEBHOOK_URL", hook.url)
        # A cursor before every run (a first tick would only set it): this tick sees all three failures.
        context = dg.build_sensor_context(instance=instance, cursor=RunStatusSensorCursor(record_id=0).to_json(),
                                          resources={"intent": IntentRuntime()})
        started = time.monotonic()
        intent_failure_alerts_sensor.evaluate_tick(context)
        elapsed = time.monotonic() - started
        logged = wait_for(lambda: (lines := delivery_log(sample_home)) and len(lines) == 3 and lines,
                          timeout=DEADLINE_S + MARGIN_S, what="a delivery-log line for each alert")

    assert elapsed < DEADLINE_S + MARGIN_S, f"the tick took {elapsed:.1f}s"
    assert sorted(body["alert"]["run_id"] for body in hook.bodies) == sorted(r.run_id for r in results)
    alerts = list(read_alerts(sample_home))
    assert sorted(a.run_id for a in alerts) == sorted(r.run_id for r in results)
    assert sorted(line["run_id"] for line in logged) == sorted(r.run_id for r in results)
    assert all("exceeded its" in line["error"] for line in logged)
