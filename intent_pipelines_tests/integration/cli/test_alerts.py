"""Failure alerting: the sensors, alert lines, reports, forensics, webhook delivery and `intent failures`."""

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner

from intent_pipelines.alerts.log import AlertRecord, alert_log_path, find_alert, read_alerts
from intent_pipelines.alerts.notify import notify_request, notify_unrecorded
from intent_pipelines.alerts.webhook import DELIVERY_LOG, WebhookConfig, deliver
from intent_pipelines.cli.main import main
from intent_pipelines.dagster_defs.failure_sensor import intent_cancel_alerts_sensor, intent_failure_alerts_sensor
from intent_pipelines.dagster_defs.jobs import make_intent_job
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.engine import Engine
from intent_pipelines.errors import StoreError
from intent_pipelines.home import IntentHome
from intent_pipelines.retries import Backoff
from intent_pipelines.spec.loader import IntentCatalog
from intent_pipelines.store import StateStore
from intent_pipelines.testing import free_ports, run_intent

FAILING_INTENT = """\
name: boom
summary: prepares, then fails with a message that changes every run
steps:
  - id: prepare
    run: [python3, -c, "print('preparing')"]
  - id: explode
    needs: [prepare]
    run: [python3, -c, "import sys; print('cannot read /srv/app/%s.conf' % sys.argv[1]); sys.exit(1)",
          "{{ request.id }}", "password=hunter2"]
"""

SLOW_INTENT = """\
name: slow
summary: hangs past its timeout
steps:
  - id: hang
    run: [sleep, "30"]
    timeout: 1
"""

FAST_WEBHOOK = dict(timeout_s=0.5, backoff=Backoff(delay_s=0.05, factor=2.0, jitter=0.1))


@pytest.fixture
def user_intents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_home: IntentHome) -> Path:
    directory = tmp_path / "intents"
    directory.mkdir()
    (directory / "boom.yaml").write_text(FAILING_INTENT)
    (directory / "slow.yaml").write_text(SLOW_INTENT)
    monkeypatch.setenv("INTENTS_PATH", str(directory))
    monkeypatch.delenv("INTENT_ALERT_WEBHOOK_URL", raising=False)
    return directory


def failure_context(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> dg.RunFailureSensorContext:
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return dg.build_run_status_sensor_context(
        sensor_name=intent_failure_alerts_sensor.name, dagster_event=result.get_run_failure_event(),
        dagster_instance=instance, dagster_run=run, resources={"intent": IntentRuntime()},
    ).for_run_failure()


def alert_of(home: IntentHome, run_id: str) -> AlertRecord:
    """The alert line the run's own ending wrote (no sensor involved)."""
    alert = find_alert(home, run_id)
    assert alert is not None, f"run {run_id} wrote no alert line"
    return alert


def alert_lines(home: IntentHome) -> list[dict[str, Any]]:
    path = alert_log_path(home)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- a real HTTP server on loopback ---------------------------------------------------------------


@dataclass
class Hook:
    """A webhook endpoint: fails the first ``fail_first`` requests with 503, or hangs on every request."""

    fail_first: int = 0
    fail_code: int = 503
    hang: bool = False
    bodies: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.bodies.append(body)
            if state.hang:
                state.release.wait(30)  # longer than the client's timeout; released at teardown
            code = state.fail_code if len(state.bodies) <= state.fail_first else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/secretpart"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- the sensor ------------------------------------------------------------------------------------


def test_failed_run_writes_one_alert_line_report_and_forensics(user_intents: Path, instance: dg.DagsterInstance,
                                                               sample_home: IntentHome) -> None:
    """A failed run alerts as it ends (no sensor, no daemon): one line, a report, forensics; the sensor adds nothing."""
    result, request = run_intent("boom", {}, instance)
    assert not result.success and request["status"] == "FAILED"
    written = alert_lines(sample_home)

    intent_failure_alerts_sensor(failure_context(instance, result))

    [line] = alert_lines(sample_home)
    assert [line] == written and line["category"] == "failure" and line["status"] == "FAILED"
    assert line["run_id"] == line["request_id"] == result.run_id
    assert (line["intent"], line["step"], line["error_class"], line["exit_code"]) == ("boom", "explode",
                                                                                     "StepFailed", 10)
    assert line["process_exit_code"] == 1 and line["reason"] == "step_failed" and line["phase"] == "STEP explode"
    assert "hunter2" not in json.dumps(line) and "password=***" in line["message"]
    assert len(line["signature"]) == 12

    report = Path(line["report"]).read_text()
    assert report.startswith(f"# boom request {result.run_id}: FAILED")
    assert "deterministic step failure" in report and "**Exit code:** 10 (command exited 1)" in report
    assert f"`intent resume {result.run_id}`" in report and "re-execute the run from failure" in report
    assert "cannot read /srv/app/" in report and "preparing" in report  # both step logs' tails
    assert "hunter2" not in report

    forensics = Path(line["forensics"])
    assert forensics.parent == sample_home.forensics / result.run_id
    assert "python3 -c" in (forensics / "command.txt").read_text()
    assert json.loads((forensics / "failure.json").read_text())["process_exit_code"] == 1
    assert "cannot read" in (forensics / "output-tail.txt").read_text()
    environment = json.loads((forensics / "environment.json").read_text())
    assert environment["INTENT_HOME"] == str(sample_home.root)


def test_sensor_twice_writes_no_duplicate(user_intents: Path, instance: dg.DagsterInstance,
                                          sample_home: IntentHome, engine: Engine) -> None:
    """Sensor evaluations (also redelivered) and a direct notify_request add nothing for an alerted run."""
    result, _ = run_intent("boom", {}, instance)
    context = failure_context(instance, result)
    intent_failure_alerts_sensor(context)
    first = alert_lines(sample_home)
    intent_failure_alerts_sensor(context)
    again = notify_request(sample_home, engine.store, run_id=result.run_id, request_id=result.run_id)

    assert alert_lines(sample_home) == first and len(first) == 1
    assert again is not None and not again.new
    assert again.alert.ts == first[0]["ts"] and again.alert.signature == first[0]["signature"]
    assert len(list(sample_home.forensics.joinpath(result.run_id).iterdir())) == 1


def test_sensor_ignores_runs_that_are_not_intents(sample_home: IntentHome, instance: dg.DagsterInstance) -> None:
    """A failed run of a job without the intent/name tag is skipped without writing anything."""
    @dg.op
    def fails() -> None:
        raise RuntimeError("not an intent")

    @dg.job
    def plain_job() -> None:
        fails()

    result = plain_job.execute_in_process(instance=instance, raise_on_error=False)
    assert intent_failure_alerts_sensor(failure_context(instance, result)) is None
    assert alert_lines(sample_home) == []


def test_canceled_run_is_alerted_as_operator_stop(user_intents: Path, instance: dg.DagsterInstance,
                                                  sample_home: IntentHome) -> None:
    """A run canceled before the engine ran anything is alerted by the cancel sensor as a stop, not a failure."""
    job = make_intent_job(IntentCatalog.discover().get("boom"))
    run = instance.create_run_for_job(job, tags={"intent/name": "boom"}, run_config={})
    event = instance.report_run_canceled(run, message="terminated from the UI")
    canceled = instance.get_run_by_id(run.run_id)
    assert canceled is not None
    context = dg.build_run_status_sensor_context(sensor_name=intent_cancel_alerts_sensor.name, dagster_event=event,
                                                 dagster_instance=instance, dagster_run=canceled,
                                                 resources={"intent": IntentRuntime()})
    intent_cancel_alerts_sensor(context)

    [line] = alert_lines(sample_home)
    assert (line["intent"], line["reason"], line["run_status"], line["phase"]) == ("boom", "operator_stop",
                                                                                  "CANCELED", "LAUNCH")
    assert line["category"] == "stopped" and line["status"] == "STOPPED_BY_OPERATOR"
    assert "intent resume" in Path(line["report"]).read_text()


def test_timeout_is_categorised_and_its_process_group_captured(user_intents: Path, instance: dg.DagsterInstance,
                                                               sample_home: IntentHome, engine: Engine) -> None:
    """A step killed by its timeout alerts with reason timeout, exit 11 and a `ps` of its process group."""
    result, request = run_intent("slow", {}, instance)
    assert request["exit_code"] == 11
    alert = alert_of(sample_home, result.run_id)
    assert (alert.reason, alert.error_class, alert.step) == ("timeout", "StepTimeout", "hang")
    ps = (Path(alert.forensics) / "ps.txt").read_text()
    assert ps.splitlines()[0].split()[:3] == ["PID", "PPID", "PGID"]
    assert "raise the step's `timeout`" in Path(alert.report).read_text()


def test_bad_input_is_refused_in_preflight_with_fix_the_input_advice(sample_home: IntentHome,
                                                                     instance: dg.DagsterInstance) -> None:
    """An unknown app is a refusal (not a failure page): bad_input in preflight, with the commands to check and rerun."""
    result, request = run_intent("deploy-app", {"app": "no-such-app"}, instance)
    assert request["exit_code"] == 4 and request["status"] == "REFUSED"
    alert = alert_of(sample_home, result.run_id)
    assert (alert.reason, alert.step, alert.phase, alert.error_class) == ("bad_input", "preflight", "PREFLIGHT",
                                                                          "FleetError")
    assert alert.category == "refused" and alert.forensics == ""
    report = Path(alert.report).read_text()
    assert "`intent plan deploy-app -p NAME=VALUE`" in report and "`intent validate`" in report


def test_lock_busy_names_the_unlock_command(user_intents: Path, instance: dg.DagsterInstance,
                                            sample_home: IntentHome, engine: Engine) -> None:
    """A request refused because its lock is held is alerted as lock_busy, naming `intent unlock <lock>`."""
    (user_intents / "locked.yaml").write_text(
        "name: locked\nsummary: takes a lock\npolicy: {lock: 'target:one'}\n"
        "steps:\n  - id: work\n    run: [python3, -c, 'pass']\n")
    engine.store.acquire_lock("target:one", request_id="someone-else", run_id="someone-else", ttl_s=600)
    result, request = run_intent("locked", {}, instance)
    assert request["exit_code"] == 7 and request["status"] == "REFUSED"
    alert = alert_of(sample_home, result.run_id)
    assert (alert.reason, alert.error_class, alert.category) == ("lock_busy", "LockBusy", "refused")
    report = Path(alert.report).read_text()
    assert "`intent unlock target:one`" in report and "someone-else" in report


def test_signatures_cluster_repeated_failures(user_intents: Path, instance: dg.DagsterInstance,
                                              sample_home: IntentHome, engine: Engine) -> None:
    """Two failures whose messages differ only by the request id share one signature; another step does not."""
    first, _ = run_intent("boom", {}, instance)
    second, _ = run_intent("boom", {}, instance)
    slow, _ = run_intent("slow", {}, instance)
    alerts = [alert_of(sample_home, r.run_id) for r in (first, second, slow)]
    assert alerts[0].message != alerts[1].message
    assert alerts[0].signature == alerts[1].signature != alerts[2].signature


# --- webhook delivery ------------------------------------------------------------------------------


def sample_alert(run_id: str = "run-1") -> AlertRecord:
    return AlertRecord(ts="2026-11-21T10:00:00Z", request_id=run_id, run_id=run_id, intent="deploy-app",
                       step="build", error_class="StepFailed", exit_code=10, message="exit 1: npm install token=abc",
                       signature="0123456789ab", report="/tmp/report.md", reason="step_failed")


def test_webhook_retries_until_the_server_recovers(hook: Hook, sample_home: IntentHome) -> None:
    """A server failing the first two POSTs with 503 gets the alert on the third, Slack text and fields intact."""
    hook.fail_first = 2
    delivery = deliver(sample_alert(), WebhookConfig(url=hook.url, attempts=4, **FAST_WEBHOOK), home=sample_home,
                       rng=random.Random(1))
    assert delivery.delivered and delivery.attempts == 3 and delivery.status_code == 200
    assert len(hook.bodies) == 3 and hook.bodies[0] == hook.bodies[2]
    body = hook.bodies[-1]
    assert "deploy-app" in body["text"] and "abc" not in body["text"]
    assert body["alert"]["signature"] == "0123456789ab" and body["alert"]["exit_code"] == 10
    assert not (sample_home.alerts / DELIVERY_LOG).exists()


def test_webhook_gives_up_on_a_client_error_at_once(hook: Hook, sample_home: IntentHome) -> None:
    """A 4xx answer is not retried (the request itself is wrong) and the failure is logged without the URL."""
    hook.fail_first, hook.fail_code = 10, 400
    delivery = deliver(sample_alert(), WebhookConfig(url=hook.url, attempts=4, **FAST_WEBHOOK), home=sample_home)
    assert not delivery.delivered and delivery.attempts == 1 and delivery.status_code == 400
    assert len(hook.bodies) == 1
    [logged] = [json.loads(x) for x in (sample_home.alerts / DELIVERY_LOG).read_text().splitlines()]
    assert logged["error"] == "HTTP 400" and "secretpart" not in json.dumps(logged)


def test_unreachable_webhook_is_retried_then_logged(sample_home: IntentHome) -> None:
    """A closed port is retried with backoff, then the delivery failure is logged; nothing is raised."""
    closed = WebhookConfig(url=f"http://127.0.0.1:{free_ports(1)}/hook/secretpart", attempts=3, **FAST_WEBHOOK)
    failed = deliver(sample_alert(), closed, home=sample_home)
    assert not failed.delivered and failed.attempts == 3
    logged = (sample_home.alerts / DELIVERY_LOG).read_text()
    assert "ConnectionError" in logged and "secretpart" not in logged


def test_hanging_webhook_logs_the_delivery_failure_and_keeps_the_alert(
        hook: Hook, user_intents: Path, instance: dg.DagsterInstance, sample_home: IntentHome,
        engine: Engine) -> None:
    """A webhook that never answers times out, the failure is logged, and the alert line stands."""
    hook.hang = True
    result, _ = run_intent("boom", {}, instance)
    (sample_home.alerts / "intent-failures.log").unlink()  # alert again, now through the hanging webhook
    (sample_home.alerts / "alerted-runs.idx").unlink()
    config = WebhookConfig(url=hook.url, attempts=2, **FAST_WEBHOOK)
    started = time.monotonic()
    outcome = notify_request(sample_home, engine.store, run_id=result.run_id, request_id=result.run_id,
                             webhook=config)
    elapsed = time.monotonic() - started

    assert outcome is not None and outcome.new and outcome.delivery is not None and not outcome.delivery.delivered
    assert "Timeout" in outcome.delivery.error and outcome.delivery.attempts == 2
    assert elapsed < 5, f"delivery took {elapsed:.1f}s; the timeout was not applied"
    [line] = alert_lines(sample_home)
    assert line["run_id"] == result.run_id
    [failure] = [json.loads(x) for x in (sample_home.alerts / DELIVERY_LOG).read_text().splitlines()]
    assert failure["run_id"] == result.run_id and failure["attempts"] == 2
    assert "secretpart" not in json.dumps(failure)
    assert len(hook.bodies) == 2


def test_sensor_delivers_to_the_webhook_from_the_environment(
        hook: Hook, user_intents: Path, instance: dg.DagsterInstance, sample_home: IntentHome,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With INTENT_ALERT_WEBHOOK_URL set, the ending POSTs the alert once; the sensor does not POST it again."""
    monkeypatch.setenv("INTENT_ALERT_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("INTENT_ALERT_WEBHOOK_TIMEOUT", "0.5")
    result, _ = run_intent("boom", {}, instance)
    context = failure_context(instance, result)
    intent_failure_alerts_sensor(context)
    intent_failure_alerts_sensor(context)
    assert len(hook.bodies) == 1 and hook.bodies[0]["alert"]["run_id"] == result.run_id


# --- intent failures -------------------------------------------------------------------------------


def test_intent_failures_summarises_by_intent_step_and_signature(user_intents: Path, instance: dg.DagsterInstance,
                                                                 sample_home: IntentHome, engine: Engine) -> None:
    """`intent failures` groups today's alerts by intent, step and signature, in text and in JSON."""
    runs = [run_intent(name, {}, instance)[0] for name in ("boom", "boom", "slow")]
    run_intent("deploy-app", {"app": "no-such-app"}, instance)  # a refusal: on the record, not a failure
    alerts = [alert_of(sample_home, r.run_id) for r in runs]
    runner = CliRunner()

    as_json = runner.invoke(main, ["failures", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    [day] = data["days"]
    assert day["total"] == data["total"] == 3
    assert day["by_intent"] == {"boom": 2, "slow": 1}
    assert day["by_reason"] == {"step_failed": 2, "timeout": 1}
    assert day["refused"] == 1
    top = day["groups"][0]
    assert (top["intent"], top["step"], top["count"], top["signature"]) == ("boom", "explode", 2,
                                                                            alerts[0].signature)
    assert top["request_ids"] == [runs[0].run_id, runs[1].run_id]

    text = runner.invoke(main, ["failures"])
    assert text.exit_code == 0, text.output
    assert f"Intent failures - {day['date']}: 3" in text.output
    assert f"2x  boom / explode  [{alerts[0].signature}] step_failed" in text.output

    week = json.loads(runner.invoke(main, ["failures", "--days", "7", "--format", "json"]).output)
    assert [d["total"] for d in week["days"]] == [0, 0, 0, 0, 0, 0, 3]
    other = runner.invoke(main, ["failures", "--date", "2020-01-01"])
    assert other.exit_code == 0 and "Intent failures - 2020-01-01: 0" in other.output


def test_intent_failures_rejects_bad_options(sample_home: IntentHome) -> None:
    """Both --date and --days, or a malformed date, exit 2 with one line saying what to do."""
    runner = CliRunner()
    both = runner.invoke(main, ["failures", "--date", "2026-01-01", "--days", "2"])
    assert both.exit_code == 2 and "not both" in both.output
    bad = runner.invoke(main, ["failures", "--date", "yesterday"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


def test_alert_log_survives_a_line_missing_from_the_index(sample_home: IntentHome, engine: Engine) -> None:
    """A crash between the log append and the index append still never duplicates the alert."""
    first = notify_unrecorded(sample_home, run_id="run-x", request_id="run-x", intent="boom", run_status="FAILURE",
                              fallback_message="died").alert
    (sample_home.alerts / "alerted-runs.idx").write_text("")  # as if the process died before indexing
    again = notify_unrecorded(sample_home, run_id="run-x", request_id="run-x", intent="boom", run_status="FAILURE",
                              fallback_message="died again").alert
    assert again == first
    assert [a.run_id for a in read_alerts(sample_home)] == ["run-x"]
    assert first.reason == "crash" and first.message == "died" and first.status == "CRASHED"


def test_definitions_load_with_both_alert_sensors_running(sample_home: IntentHome) -> None:
    """The code location loads with the failure and cancel sensors, both RUNNING by default."""
    from intent_pipelines.definitions import make_definitions

    defs = make_definitions()
    dg.Definitions.validate_loadable(defs)
    sensors = {s.name: s for s in defs.sensors or []}
    for name in (intent_failure_alerts_sensor.name, intent_cancel_alerts_sensor.name):
        assert sensors[name].default_status is dg.DefaultSensorStatus.RUNNING
        assert sensors[name].description


class UnreachableStore(StateStore):
    """A state store whose reads fail, as when PostgreSQL is down."""

    def request(self, request_id: str) -> dict[str, Any] | None:
        raise StoreError("cannot open the state store at postgresql://db/intent: OperationalError")


def test_alert_is_written_even_when_the_store_cannot_be_read(sample_home: IntentHome, instance: dg.DagsterInstance,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With the state store down, the failure sensor still writes the alert line, from Dagster's own message."""
    job = make_intent_job(IntentCatalog.discover().get("deploy-app"))
    run = instance.create_run_for_job(job, tags={"intent/name": "deploy-app"}, run_config={"app": "hello-api"})
    event = instance.report_run_failed(run, message='Execution of run for "deploy_app" failed. Steps failed: [\'build\'].')
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None
    store = UnreachableStore(sample_home.store_url())
    monkeypatch.setattr(IntentRuntime, "engine", lambda self: Engine(sample_home, store))
    context = dg.build_run_status_sensor_context(sensor_name=intent_failure_alerts_sensor.name, dagster_event=event,
                                                 dagster_instance=instance, dagster_run=failed,
                                                 resources={"intent": IntentRuntime()}).for_run_failure()
    intent_failure_alerts_sensor(context)
    alert = alert_of(sample_home, run.run_id)
    [line] = alert_lines(sample_home)
    assert line["run_id"] == run.run_id and alert.reason == "crash" and alert.intent == "deploy-app"
    assert "Steps failed" in alert.message and "state store could not be read" in alert.message
    assert Path(alert.report).exists()
