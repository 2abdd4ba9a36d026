"""The scenario matrix: every way a request ends, made for real, and every surface agreeing on it.

One home runs all scenarios once (real intents on the sample fleet's host, real processes,
`intent` in process and as child processes killed, stopped and frozen), then each scenario is
checked on every surface: the store row, `intent explain`, `intent status`, `audit show`, the
alert log, `intent failures`, `intent metrics`, the `intent_requests` asset materialized from the
real export, and the Dagster run's status and tags. Nothing here writes an event by hand.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest

from intent_pipelines import run_tags
from intent_pipelines.alerts.log import AlertRecord, read_alerts
from intent_pipelines.audit.export import request_timeline
from intent_pipelines.dagster_defs.audit_assets import AuditWarehouse, audit_events
from intent_pipelines.dagster_defs.jobs import RUNTIME_KEY
from intent_pipelines.dagster_defs.metrics_assets import MetricsWarehouse, intent_metrics, intent_requests
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.home import IntentHome
from intent_pipelines.status import RequestStatus, StepStatus
from intent_pipelines.store import StateStore
from intent_pipelines.testing import invoke_cli, prepare_sample_home, stop_fleet, wait_for
from intent_pipelines.watchdog import check_stuck_requests

INTENT_BIN = str(Path(sys.executable).parent / "intent")

FAIL = '[python3, -c, "import sys; print(sys.argv[1]); sys.exit(1)", "@MSG@"]'
INTENTS = {
    "m-ok": """
summary: one step; n must be a positive integer and 13 is denied
params:
  n: {type: integer, min: 1, default: 1}
policy:
  deny:
    - {when: "params.n == 13", reason: 13 is not deployed on Fridays}
steps:
  - id: work
    run: [true]
""",
    "m-confirm": """
summary: always asks for confirmation
policy: {confirm: true}
steps:
  - id: work
    run: [true]
""",
    "m-fail": """
summary: a change, then a failing step (the change is rolled back)
steps:
  - id: change
    run: [true]
    rollback: {run: [true]}
  - id: boom
    needs: [change]
    run: @FAIL_BOOM@
""",
    "m-verify": """
summary: a change whose verification fails
steps:
  - id: change
    run: [true]
    rollback: {run: [true]}
verify:
  - id: healthy
    run: @FAIL_VERIFY@
""",
    "m-undo-fails": """
summary: a failing step whose rollback fails too
steps:
  - id: change
    run: [true]
    rollback: {run: [false]}
  - id: boom
    needs: [change]
    run: [false]
""",
    "m-flaky": """
summary: a transient failure that never clears
steps:
  - id: call
    run: [python3, -c, "import sys; print('curl: (7) Failed to connect: Connection refused'); sys.exit(1)"]
    retry: {attempts: 2, delay: 0.1, jitter: 0}
""",
    "m-timeout": """
summary: a step past its timeout
steps:
  - id: wait
    run: [sleep, "30"]
    timeout: 1
""",
    "m-gated": """
summary: a, a manual gate, b
steps:
  - id: a
    run: [true]
  - id: gate
    needs: [a]
    uses: gate.manual
  - id: b
    needs: [gate]
    run: [true]
""",
    "m-two-step": """
summary: a fails until @WORK@/flag exists, then b
steps:
  - id: a
    run: [python3, -c, "import os, sys; sys.exit(0 if os.path.exists(sys.argv[1]) else 3)", "@WORK@/flag"]
  - id: b
    needs: [a]
    run: [true]
""",
    "m-sleep": """
summary: holds its lock for a minute
policy: {lock: m-sleep}
steps:
  - id: hold
    run: [sleep, "60"]
""",
}


@dataclass(frozen=True)
class Expected:
    """How a scenario must end, on every surface."""

    status: RequestStatus
    reason: str
    outcome: str  # the metrics' outcome
    alerts: tuple[str, ...] = ()  # categories of the alert lines its runs wrote, in order
    dagster_run: bool = True  # False: `intent run` refused it before a run existed (recorded all the same)


EXPECTED: dict[str, Expected] = {
    "success": Expected(RequestStatus.SUCCEEDED, "", "success"),
    "dry_run": Expected(RequestStatus.DRY_RUN, "", "dry_run"),
    "refused_bad_input": Expected(RequestStatus.REFUSED, "bad_input", "refused", ("refused",), dagster_run=False),
    "refused_policy": Expected(RequestStatus.REFUSED, "policy", "refused", ("refused",), dagster_run=False),
    "refused_confirmation": Expected(RequestStatus.REFUSED, "confirmation", "refused", ("refused",), dagster_run=False),
    "refused_lock_busy": Expected(RequestStatus.REFUSED, "lock_busy", "refused", ("refused",)),
    "step_failed_rolled_back": Expected(RequestStatus.ROLLED_BACK, "step_failed", "failure", ("failure",)),
    "verify_failed_rolled_back": Expected(RequestStatus.ROLLED_BACK, "verify_failed", "failure", ("failure",)),
    "rollback_failed": Expected(RequestStatus.ROLLBACK_FAILED, "step_failed", "failure", ("failure",)),
    "retries_exhausted": Expected(RequestStatus.FAILED, "retries_exhausted", "failure", ("failure",)),
    "timeout": Expected(RequestStatus.FAILED, "timeout", "failure", ("failure",)),
    "gate_waiting": Expected(RequestStatus.NEEDS_APPROVAL, "approval", "waiting", ("waiting",)),
    "approved_resumed": Expected(RequestStatus.SUCCEEDED, "", "success", ("waiting",)),
    "rejected": Expected(RequestStatus.REJECTED, "rejected", "cancelled", ("waiting", "stopped")),
    "failed_then_resumed": Expected(RequestStatus.SUCCEEDED, "", "success", ("failure",)),
    "stopped_by_operator": Expected(RequestStatus.STOPPED_BY_OPERATOR, "operator_stop", "cancelled", ("stopped",)),
    "watchdog_stuck": Expected(RequestStatus.WATCHDOG_STUCK, "stuck", "failure", ("failure",)),
    "cli_killed": Expected(RequestStatus.CRASHED, "crash", "failure", ("failure",)),
}


@dataclass
class World:
    """The home after every scenario ran: request ids, exit codes, and what the surfaces showed."""

    home: IntentHome
    work: Path
    ids: dict[str, str] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    crash_seen_after_s: float = 0.0
    unlock_output: str = ""
    status_json: list[dict[str, Any]] = field(default_factory=list)
    failures_json: dict[str, Any] = field(default_factory=dict)
    metrics_json: dict[str, Any] = field(default_factory=dict)
    asset_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    asset_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> StateStore:
        return StateStore(self.home.store_url())


def _cli_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = invoke_cli(*args, "--json")
    assert out.strip(), f"intent {' '.join(args)} printed nothing (exit {code}): {err}"
    parsed: dict[str, Any] = json.loads(out)
    return code, parsed


def _spawn(home: IntentHome, env: dict[str, str], intent: str) -> tuple[subprocess.Popen[bytes], str]:
    """`intent run` in a child process, once its step is running: (process, request id)."""
    store = StateStore(home.store_url())
    known = {r["request_id"] for r in store.recent_requests(100)}
    proc = subprocess.Popen([INTENT_BIN, "run", intent, "--json"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def running() -> str | None:
        for row in store.requests_by_status(RequestStatus.RUNNING):
            if row["request_id"] not in known and row["intent"] == intent:
                step = store.step_state(row["request_id"], "hold")
                if step is not None and step["status"] == StepStatus.RUNNING.value:
                    return str(row["request_id"])
        return None

    request_id: str = wait_for(running, timeout=60, what=f"{intent} to run its step")
    return proc, request_id


def _run_scenarios(world: World, env: dict[str, str]) -> None:
    ids, codes = world.ids, world.exit_codes

    def run(name: str, *args: str) -> dict[str, Any]:
        codes[name], outcome = _cli_json("run", *args)
        ids[name] = outcome["request_id"]
        return outcome

    run("success", "m-ok")
    run("dry_run", "m-ok", "--dry-run")
    run("refused_bad_input", "m-ok", "-p", "n=0")
    run("refused_policy", "m-ok", "-p", "n=13")
    run("refused_confirmation", "m-confirm")
    run("step_failed_rolled_back", "m-fail")
    run("verify_failed_rolled_back", "m-verify")
    run("rollback_failed", "m-undo-fails")
    run("retries_exhausted", "m-flaky")
    run("timeout", "m-timeout")
    run("gate_waiting", "m-gated")

    run("approved_resumed", "m-gated")
    assert invoke_cli("approve", ids["approved_resumed"][:8], "--step", "gate", "--reason", "ok")[0] == 0
    codes["approved_resumed"] = _cli_json("resume", ids["approved_resumed"])[0]
    run("rejected", "m-gated")
    assert invoke_cli("reject", ids["rejected"], "--step", "gate", "--reason", "not today")[0] == 0
    codes["rejected"] = _cli_json("resume", ids["rejected"])[0]
    run("failed_then_resumed", "m-two-step")
    (world.work / "flag").write_text("")
    codes["failed_then_resumed"] = _cli_json("resume", ids["failed_then_resumed"])[0]

    # A live holder: the lock is busy for a second request, then the operator stops the first.
    proc, ids["stopped_by_operator"] = _spawn(world.home, env, "m-sleep")
    run("refused_lock_busy", "m-sleep")
    assert invoke_cli("stop", ids["stopped_by_operator"][:8], "--reason", "matrix")[0] == 0
    codes["stopped_by_operator"] = proc.wait(timeout=60)

    # Frozen: the process lives but its heartbeat stops; the watchdog ends the request.
    proc, ids["watchdog_stuck"] = _spawn(world.home, env, "m-sleep")
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        store = world.store
        wait_for(lambda: time.time() - float(store.request(ids["watchdog_stuck"])["heartbeat_at"]) > 3,
                 timeout=30, what="the frozen run's heartbeat to go stale")
        with dg.DagsterInstance.get() as instance:
            report = check_stuck_requests(world.home, store, instance, stale_s=3, grace_s=1)
        assert [s.request_id for s in report.stuck] == [ids["watchdog_stuck"]], report.summary()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    codes["watchdog_stuck"] = int(store.request(ids["watchdog_stuck"])["exit_code"])

    # Killed: SIGKILL of `intent run` itself; status must show CRASHED at once and unlock must work.
    proc, ids["cli_killed"] = _spawn(world.home, env, "m-sleep")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = time.monotonic()
    code, out, err = invoke_cli("unlock", "m-sleep")
    assert code == 0, err
    world.unlock_output = out
    world.crash_seen_after_s = time.monotonic() - killed_at
    codes["cli_killed"] = int(store.request(ids["cli_killed"])["exit_code"])


def _collect_surfaces(world: World, tmp: Path) -> None:
    world.status_json = json.loads(invoke_cli("status", "--all", "--json")[1])
    code, out, err = invoke_cli("failures", "--format", "json")
    assert code == 0, err
    world.failures_json = json.loads(out)["days"][0]
    code, out, err = invoke_cli("metrics", "--format", "json")
    assert code == 0, err
    world.metrics_json = json.loads(out)

    day = datetime.now(UTC).date().isoformat()
    warehouse = tmp / "warehouse"
    resources = {RUNTIME_KEY: IntentRuntime(intent_home=str(world.home.root)),
                 "audit_warehouse": AuditWarehouse(root=str(warehouse / "audit_events")),
                 "metrics_warehouse": MetricsWarehouse(root=str(warehouse))}
    assert dg.materialize([audit_events], partition_key=day, resources=resources).success
    result = dg.materialize([intent_requests, intent_metrics], partition_key=day, resources=resources)
    assert result.success
    rows = pq.read_table(warehouse / "intent_requests" / f"date={day}" / "intent_requests.parquet").to_pylist()
    world.asset_rows = {row["request_id"]: row for row in rows}
    (materialization,) = result.asset_materializations_for_node("intent_metrics")
    world.asset_metrics = materialization.metadata["rollup"].value


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("matrix")
    home = prepare_sample_home(tmp / "home")
    work, intents = tmp / "work", tmp / "intents"
    work.mkdir()
    intents.mkdir()
    for name, body in INTENTS.items():
        text = (body.replace("@FAIL_BOOM@", FAIL.replace("@MSG@", "boom: exit 1 while switching"))
                .replace("@FAIL_VERIFY@", FAIL.replace("@MSG@", "GET /health returned 503"))
                .replace("@WORK@", str(work)))
        (intents / f"{name}.yaml").write_text(f"name: {name}{text}")
    env = {"INTENT_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home), "INTENTS_PATH": str(intents)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("INTENT_FLEET", "INTENT_STORE_URL", "INTENT_WEBHOOK_URL"):
            patch.delenv(key, raising=False)
        world = World(home, work)
        try:
            _run_scenarios(world, {**os.environ, **env})
            _collect_surfaces(world, tmp)
            yield world
        finally:
            stop_fleet(home)


SCENARIOS = list(EXPECTED)
RESUMED = ("approved_resumed", "rejected", "failed_then_resumed")


def _alerts_of(world: World, request_id: str) -> list[AlertRecord]:
    return [a for a in read_alerts(world.home) if a.request_id == request_id]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_store_explain_status_and_audit_agree(world: World, scenario: str) -> None:
    """The row, `intent explain`, `intent status --all` and the last request.complete say the same."""
    expected, request_id = EXPECTED[scenario], world.ids[scenario]
    row = world.store.request(request_id)
    assert row is not None
    assert (row["status"], row["reason_code"] or "") == (expected.status.value, expected.reason)
    code, out, err = invoke_cli("explain", request_id)
    assert code == 0, err
    assert out.splitlines()[0].endswith(f": {expected.status.value}")
    [shown] = [v for v in world.status_json if v["request_id"] == request_id]
    assert shown["status"] == expected.status.value and shown["next_action"]
    completes = [e for e in request_timeline(world.store, request_id) if e["kind"] == "request.complete"]
    last = completes[-1]
    assert (last["status"], last.get("reason", "")) == (expected.status.value, expected.reason)
    assert last["exit_code"] == row["exit_code"] == world.exit_codes[scenario]
    # Each ending of the request is one request.complete; a resume ends it a second time.
    assert len(completes) == (2 if scenario in RESUMED else 1)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_alert_log_and_failures_agree(world: World, scenario: str) -> None:
    """One alert line per ended run that did not end well, its category and signature from the ending."""
    expected, request_id = EXPECTED[scenario], world.ids[scenario]
    alerts = _alerts_of(world, request_id)
    assert tuple(a.category for a in alerts) == expected.alerts
    completes = [e for e in request_timeline(world.store, request_id) if e["kind"] == "request.complete"]
    alerted = [c for c in completes if c["status"] not in ("SUCCEEDED", "DRY_RUN")]
    for alert, ending in zip(alerts, alerted, strict=True):
        assert (alert.status, alert.reason) == (ending["status"], ending["reason"])
        assert alert.signature == ending.get("signature", alert.signature)
        assert Path(alert.report).is_file()
    grouped = {rid for group in world.failures_json["groups"] for rid in group["request_ids"]}
    assert (request_id in grouped) == ("failure" in expected.alerts)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_requests_asset_and_dagster_run_agree(world: World, scenario: str) -> None:
    """The intent_requests row from the real export, and the Dagster run's status and tags."""
    expected, request_id = EXPECTED[scenario], world.ids[scenario]
    asset = world.asset_rows[request_id]
    assert (asset["status"], asset["outcome"], asset["reason"] or "") == (
        expected.status.value, expected.outcome, expected.reason)
    row = world.store.request(request_id)
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(row["run_id"])
    if not expected.dagster_run:
        assert run is None
        return
    assert run is not None
    assert (run.status.value == "SUCCESS") == (expected.outcome in ("success", "dry_run"))
    assert run.status.value in ("SUCCESS", "FAILURE", "CANCELED")
    assert run.tags.get(run_tags.STATUS) == expected.status.value
    assert run.tags.get(run_tags.REASON, "") == expected.reason


def test_metrics_cli_asset_and_failures_count_the_same(world: World) -> None:
    """`intent metrics`, the intent_metrics asset and `intent failures` count the scenarios by outcome."""
    tally = Counter(e.outcome for e in EXPECTED.values())
    for doc in (world.metrics_json, world.asset_metrics):
        overall = doc["overall"]
        assert (overall["success_count"], overall["failure_count"], overall["cancelled_count"],
                overall["dry_run_count"], overall["refused_count"], overall["waiting_count"]) == (
            tally["success"], tally["failure"], tally["cancelled"], tally["dry_run"], tally["refused"],
            tally["waiting"])
        assert overall["total_executions"] == tally["success"] + tally["failure"] + tally["cancelled"]
        assert doc["refused_by_reason"] == {"bad_input": 1, "confirmation": 1, "lock_busy": 1, "policy": 1}
    alert_lines = Counter(c for e in EXPECTED.values() for c in e.alerts)
    assert world.failures_json["total"] == alert_lines["failure"]
    assert (world.failures_json["refused"], world.failures_json["waiting"], world.failures_json["stopped"]) == (
        alert_lines["refused"], alert_lines["waiting"], alert_lines["stopped"])


def test_a_killed_cli_run_is_crashed_at_once_and_its_lock_released_without_force(world: World) -> None:
    """SIGKILL of `intent run`: the next command sees CRASHED, unlock needs no --force, the run is failed."""
    assert world.crash_seen_after_s < 60
    request_id = world.ids["cli_killed"]
    assert f"released m-sleep (was held by request {request_id})" in world.unlock_output
    assert world.store.lock_holder("m-sleep") is None
    code, out, _ = invoke_cli("explain", request_id)
    assert code == 0 and f"intent resume {request_id}" in out
    kinds = [e["kind"] for e in request_timeline(world.store, request_id)]
    assert "request.owner_dead" in kinds and kinds[-1] == "request.complete"

