"""Operator control plane in process: heartbeats, status/explain, stop of an `intent run`, unlock, the watchdog."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.dagster_defs.watchdog import stuck_request_watchdog_sensor
from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome
from intent_pipelines.lifecycle.lease import HEARTBEAT_S
from intent_pipelines.status import RequestStatus, StepStatus
from intent_pipelines.store import StateStore
from intent_pipelines.testing import group_gone, invoke_cli, run_intent, wait_for
from intent_pipelines.watchdog import check_stuck_requests, group_alive

INTENT_BIN = str(Path(sys.executable).parent / "intent")

SILENT = """\
name: silent
summary: one line, then a long silence
policy:
  lock: "target:silent"
steps:
  - id: nap
    run: [python3, -c, "import time; print('started-nap', flush=True); time.sleep(12)"]
"""

SLEEPY = """\
name: sleepy
summary: a step that sleeps until stopped
policy:
  lock: "target:sleepy"
steps:
  - id: nap
    run: [python3, -c, "import time; print('napping', flush=True); time.sleep(120)"]
"""


def audit_kinds(store: StateStore, request_id: str) -> list[str]:
    return [r.kind for r in store.audit_records(request_id=request_id)]


@pytest.fixture
def user_intents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_home: IntentHome) -> Path:
    directory = tmp_path / "intents"
    directory.mkdir()
    (directory / "silent.yaml").write_text(SILENT)
    (directory / "sleepy.yaml").write_text(SLEEPY)
    monkeypatch.setenv("INTENTS_PATH", str(directory))
    return directory


@pytest.fixture
def store(sample_home: IntentHome) -> StateStore:
    return Engine(sample_home).store


@pytest.fixture
def home_instance(sample_home: IntentHome) -> Iterator[dg.DagsterInstance]:
    """The instance under INTENT_HOME/dagster that the CLI uses (with the project's dagster.yaml)."""
    from intent_pipelines.cli.context import CliContext

    CliContext().ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        yield instance


def orphan_group() -> int:
    """A process group whose parent already exited, like a step left behind by a dead run worker."""
    spawn = ("import subprocess; p = subprocess.Popen(['sleep', '300'], start_new_session=True, "
             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)")
    done = subprocess.run([sys.executable, "-c", spawn], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def make_request(store: StateStore, request_id: str, *, lock: str | None = None, status: RequestStatus | None = None,
                 phase: str | None = None, error: str = "", intent: str = "sleepy") -> None:
    store.create_request(request_id=request_id, intent=intent, run_id=f"{request_id}-run", params={"secret": "x"},
                         context={}, plan_hash="p" * 64, intent_sha256="s" * 64, lock_key=lock, dry_run=False,
                         reason="test", who="tester")
    if lock:
        store.acquire_lock(lock, request_id=request_id, run_id=f"{request_id}-run", ttl_s=600)
    if phase or status:
        store.update_request(request_id, status=status, phase=phase, error=error or None)


# --- telemetry ---------------------------------------------------------------------------------

def test_heartbeat_advances_during_a_silent_step(user_intents: Path, instance: dg.DagsterInstance,
                                                 store: StateStore) -> None:
    """While a step prints nothing for 12 s, heartbeat_at keeps advancing and the last output line is kept."""
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(row=run_intent("silent", {}, instance)[1]))
    worker.start()
    try:
        row = wait_for(lambda: next((r for r in store.requests_by_status(RequestStatus.RUNNING)
                                     if r["phase"] == "STEP nap"), None), timeout=60, what="step nap to start")
        request_id = row["request_id"]
        beats: list[float] = []
        seen_line = None
        while worker.is_alive():
            current = store.request(request_id)
            assert current is not None
            if current["status"] != RequestStatus.RUNNING.value:
                break
            assert current["phase"] == "STEP nap" and current["attempt"] == 1
            if current["heartbeat_at"] not in beats:
                beats.append(current["heartbeat_at"])
            seen_line = current["last_log_line"] or seen_line
            time.sleep(0.5)
    finally:
        worker.join(timeout=60)
    assert outcome["row"]["status"] == RequestStatus.SUCCEEDED.value
    # A phase change at the start, then at least two more beats during the 12 s of silence.
    assert len(beats) >= 3, beats
    assert beats == sorted(beats)
    assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) <= HEARTBEAT_S + 2
    assert seen_line == "started-nap"
    phases = [json.loads(r.body)["phase"] for r in store.audit_records(request_id=request_id)
              if r.kind == "phase.change"]
    assert phases[:1] == ["STEP nap"] and phases[-1] == "VERIFY"


# --- status and explain ------------------------------------------------------------------------

def test_status_and_explain_show_phase_lock_reason_and_next_action(sample_home: IntentHome,
                                                                   home_instance: dg.DagsterInstance,
                                                                   store: StateStore) -> None:
    """status lists running requests with phase, attempt, heartbeat and lock; explain gives reason and next step."""
    make_request(store, "req-running-1", lock="app:alpha", phase="STEP build")
    store.update_request("req-running-1", phase="STEP build", attempt=2)
    store.heartbeat("req-running-1", last_log_line="compiling 3/7")
    make_request(store, "req-failed-1", status=RequestStatus.FAILED, phase="FAILED",
                 error="exit 3: make test. See the step log.")
    store.set_step("req-failed-1", "test", StepStatus.FAILED, run_id="req-failed-1-run")
    log = sample_home.step_log("req-failed-1", "test")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"line {i}\n" for i in range(30)) + "FAILED: 2 tests\n")

    code, out, _ = invoke_cli("status")
    assert code == 0
    assert "req-runn" in out and "STEP build" in out and "app:alpha" in out and "UNKNOWN" in out
    assert "req-fail" not in out
    code, out, _ = invoke_cli("status", "--json")
    assert code == 0
    [running] = json.loads(out)
    assert running["request_id"] == "req-running-1" and running["attempt"] == 2 and running["lock"] == "app:alpha"
    assert running["heartbeat_age_s"] < 30 and running["last_log_line"] == "compiling 3/7"
    assert running["log_dir"].endswith("logs/steps/req-running-1")
    code, out, _ = invoke_cli("status", "--all", "--json")
    assert {r["request_id"] for r in json.loads(out)} == {"req-running-1", "req-failed-1"}

    code, out, _ = invoke_cli("explain", "req-failed-1")
    assert code == 0
    assert "FAILED" in out and "reason: exit 3: make test" in out and "test=FAILED" in out
    assert "[test] FAILED: 2 tests" in out and "line 29" in out and "line 10" not in out
    assert "next: fix the cause, then re-execute" in out
    code, out, _ = invoke_cli("explain", "req-running-1")
    assert code == 0 and "STEP build (attempt 2)" in out and "intent stop req-running-1" in out
    code, _, err = invoke_cli("explain", "no-such-request")
    assert code == 2 and "no request or run 'no-such-request'" in err


# --- stop --------------------------------------------------------------------------------------

def test_stop_ends_a_running_cli_run(user_intents: Path, sample_home: IntentHome, home_instance: dg.DagsterInstance,
                                     store: StateStore) -> None:
    """`intent stop` on an `intent run` in another process kills its step's group, frees the lock, exits 15."""
    proc = subprocess.Popen([INTENT_BIN, "run", "sleepy"], env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        row = wait_for(lambda: next((r for r in store.requests_by_status(RequestStatus.RUNNING)
                                     if r["step_pgid"]), None), timeout=90, what="the step's process group")
        request_id, pgid = row["request_id"], row["step_pgid"]
        assert store.lock_holder("target:sleepy") is not None
        code, out, err = invoke_cli("stop", request_id, "--grace", "2", "--reason", "test stop")
        assert code == 0, err
        assert f"request {request_id}: STOPPED_BY_OPERATOR" in out
        assert proc.wait(timeout=60) == 15
        wait_for(lambda: group_gone(pgid), timeout=10, what=f"process group {pgid} to go")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    final = store.request(request_id)
    assert final is not None and final["status"] == RequestStatus.STOPPED_BY_OPERATOR.value
    assert final["exit_code"] == 15
    assert store.lock_holder("target:sleepy") is None
    kinds = audit_kinds(store, request_id)
    assert "run.cancel_requested" in kinds and "run.cancelled" in kinds and "lock.release" in kinds
    assert kinds.index("run.cancel_requested") < kinds.index("run.cancelled") < kinds.index("request.complete")
    cancelled = [json.loads(r.body) for r in store.audit_records(request_id=request_id) if r.kind == "run.cancelled"]
    assert cancelled[0]["status"] == "STOPPED_BY_OPERATOR" and 0 < cancelled[0]["latency_ms"] < 30_000
    code, _, err = invoke_cli("stop", request_id)
    assert code == 2 and "is not running" in err


# --- unlock ------------------------------------------------------------------------------------

def test_unlock_refuses_a_live_holder_and_frees_dead_ones(sample_home: IntentHome, home_instance: dg.DagsterInstance,
                                                          store: StateStore) -> None:
    """A live holder keeps its lock (exit 7, named); an expired lease or a finished run's lock is released."""
    make_request(store, "req-live", lock="app:live", phase="STEP s")
    code, _, err = invoke_cli("unlock", "app:live")
    assert code == 7 and "request req-live" in err and "live holder" in err
    code, _, err = invoke_cli("unlock", "app:live", "--force")
    assert code == 2 and "--force needs --reason" in err
    assert store.lock_holder("app:live") is not None

    # An expired lease: the holder stopped renewing it.
    make_request(store, "req-expired", phase="STEP s")
    store.acquire_lock("app:expired", request_id="req-expired", run_id="req-expired-run", ttl_s=0.01)
    time.sleep(0.05)
    code, out, err = invoke_cli("unlock", "app:expired")
    assert code == 0, err
    assert "released app:expired (was held by request req-expired)" in out
    assert store.lock_holder("app:expired") is None

    # A lock left by a run that already finished in Dagster.
    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def finished_job() -> None:
        noop()

    run_id = finished_job.execute_in_process(instance=home_instance).run_id
    make_request(store, "req-finished", phase="STEP s")
    store.acquire_lock("app:finished", request_id="req-finished", run_id=run_id, ttl_s=600)
    code, out, err = invoke_cli("unlock", "app:finished")
    assert code == 0, err
    assert store.lock_holder("app:finished") is None
    unlocks = [json.loads(r.body) for r in store.audit_records() if r.kind == "lock.unlock"]
    assert [(u["lock"], u["forced"]) for u in unlocks] == [("app:expired", False), ("app:finished", False)]
    assert "SUCCESS" in unlocks[1]["why"]

    code, _, err = invoke_cli("unlock", "app:live", "--force", "--reason", "   ")
    assert code == 2 and "--force needs --reason" in err
    code, _, err = invoke_cli("unlock", "app:live", "--force", "--reason", "host died")
    assert code == 0, err
    forced = [json.loads(r.body) for r in store.audit_records() if r.kind == "lock.unlock"][-1]
    assert forced["forced"] and forced["holder_alive"] and forced["reason"] == "host died"
    code, _, err = invoke_cli("unlock", "app:nothing")
    assert code == 2 and "no lock 'app:nothing'" in err


# --- watchdog ----------------------------------------------------------------------------------

def test_watchdog_ends_a_request_whose_worker_is_dead(sample_home: IntentHome, store: StateStore,
                                                      instance: dg.DagsterInstance,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A request with a frozen heartbeat and an orphaned step gets forensics, WATCHDOG_STUCK, a free lock and an alert."""
    monkeypatch.setenv("INTENT_WATCHDOG_STALE_S", "3")
    pgid = orphan_group()
    try:
        make_request(store, "req-stuck", lock="app:stuck", phase="STEP hang")
        store.set_step("req-stuck", "hang", StepStatus.RUNNING, run_id="req-stuck-run")
        store.heartbeat("req-stuck", last_log_line="still here", pgid=pgid)
        log = sample_home.step_log("req-stuck", "hang")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(f"out {i}\n" for i in range(300)))
        time.sleep(3.5)  # the worker is "dead": nothing beats any more
        make_request(store, "req-alive", lock="app:alive", phase="STEP s")  # fresh: must be left alone

        report = check_stuck_requests(sample_home, store, instance, grace_s=1)

        assert [s.request_id for s in report.stuck] == ["req-stuck"]
        stuck = report.stuck[0]
        assert stuck.ended_by == "watchdog" and stuck.killed and stuck.lock_released and not stuck.errors
        assert "no heartbeat" in report.summary()
        wait_for(lambda: group_gone(pgid), timeout=15, what=f"orphan group {pgid} to be gone")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    assert not group_alive(pgid)
    row = store.request("req-stuck")
    assert row is not None and row["status"] == RequestStatus.WATCHDOG_STUCK.value and row["exit_code"] == 15
    assert store.lock_holder("app:stuck") is None
    assert store.request("req-alive")["status"] == RequestStatus.RUNNING.value  # type: ignore[index]
    assert store.lock_holder("app:alive") is not None
    assert store.step_state("req-stuck", "hang")["status"] == StepStatus.FAILED.value  # type: ignore[index]
    kinds = audit_kinds(store, "req-stuck")
    for kind in ("watchdog.stuck", "run.cancel_requested", "run.cancelled", "lock.release", "request.complete"):
        assert kind in kinds
    complete = [json.loads(r.body) for r in store.audit_records(request_id="req-stuck")
                if r.kind == "request.complete"][-1]
    assert complete["status"] == "WATCHDOG_STUCK"

    forensics = Path(stuck.forensics)
    assert forensics.parent == sample_home.forensics / "req-stuck"
    request = json.loads((forensics / "request.json").read_text())
    assert "params" not in request and request["last_log_line"] == "still here"
    processes = (forensics / "processes.txt").read_text()
    assert "ps -o pid,pgid,stat,etime,args -g" in processes and str(pgid) in processes and "sleep 300" in processes
    tail = (forensics / "log_tail.txt").read_text().splitlines()
    assert "out 299" in tail and "out 100" in tail and "out 99" not in tail
    lock = json.loads((forensics / "lock.json").read_text())
    assert lock["lock"] == "app:stuck" and lock["held_by_this_request"]
    assert json.loads((forensics / "dagster_run.json").read_text())["status"] == "UNKNOWN"

    [alert] = [json.loads(line) for line in (sample_home.alerts / "watchdog.log").read_text().splitlines()]
    assert alert["request_id"] == "req-stuck" and alert["status"] == "WATCHDOG_STUCK"
    assert alert["ended_by"] == "watchdog" and alert["forensics"] == str(forensics) and alert["threshold_s"] == 3

    store.heartbeat("req-alive")
    again = check_stuck_requests(sample_home, store, instance, grace_s=1)
    assert again.stuck == [] and again.running == 1


def test_watchdog_sensor_reports_what_it_found(sample_home: IntentHome, store: StateStore,
                                               instance: dg.DagsterInstance) -> None:
    """The sensor runs the watchdog for INTENT_HOME and skips with a summary (it never launches runs)."""
    make_request(store, "req-fresh", phase="STEP s")
    context = dg.build_sensor_context(instance=instance, resources={"intent": IntentRuntime()})
    result = stuck_request_watchdog_sensor(context)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "no stuck requests (1 running, threshold 900s)"


def test_submit_options_need_submit(user_intents: Path) -> None:
    """--no-wait and --dagster-url without --submit are refused in one line with exit 2, before any run."""
    code, _, err = invoke_cli("run", "sleepy", "--no-wait")
    assert code == 2 and "go with --submit" in err
    code, _, err = invoke_cli("run", "sleepy", "--submit", "--dagster-url", "ftp://example")
    assert code == 2 and "is not an http(s) URL" in err
