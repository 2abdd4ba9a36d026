"""SIGKILL of `intent run` mid-step, mid-rollback and mid-verify: no orphan command, a truthful status, a rollback finished once.

Each case kills a real `intent run` child process at a chosen point (seen in the store), then
checks the invariants: the step's command does not go on (its marker file is never written),
`intent status` says CRASHED with no lock held, the audit chain verifies, one failure alert is
written, and `intent resume` finishes exactly what was left: a forward step is not re-run after
a rollback began, a rollback already done is not done again.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from intent_pipelines.alerts.log import read_alerts
from intent_pipelines.home import IntentHome
from intent_pipelines.status import RequestStatus, StepStatus
from intent_pipelines.store import StateStore
from intent_pipelines.testing import invoke_cli, wait_for

INTENT_BIN = str(Path(sys.executable).parent / "intent")

# Each command appends its name to a journal; "late" commands append only after sleeping, so a
# killed runner's command shows up in the journal only if it outlived its runner.
APPEND = 'import pathlib, sys, time; time.sleep(float(sys.argv[2])); open(sys.argv[1], "a").write(sys.argv[3] + "\\n")'
INTENT = """\
name: chaos-kill
summary: a change, a step that sleeps past the kill, then a failing step whose rollback is slow
policy: {{lock: "chaos-target"}}
steps:
  - id: change
    run: [python3, -c, '{append}', "{journal}", "0", change]
    rollback: {{run: [python3, -c, '{append}', "{journal}", "{undo_s}", undo-change]}}
  - id: second
    needs: [change]
    run: [python3, -c, '{append}', "{journal}", "0", second]
    rollback: {{run: [python3, -c, '{append}', "{journal}", "0", undo-second]}}
  - id: slow
    needs: [second]
    run: [python3, -c, '{append}', "{journal}", "{slow_s}", slow]
  - id: boom
    needs: [slow]
    run: [python3, -c, 'open("{journal}", "a").write("boom\\n"); raise SystemExit(3)']
"""
# A change whose verify check is slow: the runner is killed while the check runs.
VERIFY_INTENT = """\
name: chaos-verify
summary: a change, then a verify check that sleeps past the kill
policy: {{lock: "chaos-target"}}
steps:
  - id: change
    run: [python3, -c, '{append}', "{journal}", "0", change]
    rollback: {{run: [python3, -c, '{append}', "{journal}", "0", undo-change]}}
verify:
  - id: slow_check
    run: [python3, -c, '{append}', "{journal}", "{check_s}", check]
"""


def _write_intent(directory: Path, journal: Path, *, slow_s: float, undo_s: float) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "chaos-kill.yaml").write_text(
        INTENT.format(append=APPEND, journal=journal, slow_s=slow_s, undo_s=undo_s))


def _journal(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _spawn_until(home: IntentHome, point: Callable[[StateStore, str], bool], what: str,
                 intent: str = "chaos-kill") -> tuple[subprocess.Popen[bytes], str]:
    """`intent run INTENT` in a child process, returned once ``point(store, request_id)`` holds."""
    store = StateStore(home.store_url())
    proc = subprocess.Popen([INTENT_BIN, "run", intent, "--json"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ.copy())

    def reached() -> str | None:
        for row in store.requests_by_status(RequestStatus.RUNNING):
            if row["intent"] == intent and point(store, str(row["request_id"])):
                return str(row["request_id"])
        assert proc.poll() is None, f"intent run exited {proc.returncode} before {what}"
        return None

    request_id: str = wait_for(reached, timeout=60, what=what)
    return proc, request_id


def _step_running(step: str) -> Callable[[StateStore, str], bool]:
    def check(store: StateStore, request_id: str) -> bool:
        state = store.step_state(request_id, step)
        return state is not None and state["status"] == StepStatus.RUNNING.value
    return check


def _verifying(store: StateStore, request_id: str) -> bool:
    row = store.request(request_id)
    return row is not None and row["phase"] == "VERIFY"


def _rolling_back(store: StateStore, request_id: str) -> bool:
    return any(r.kind == "rollback.start" and json.loads(r.body).get("step") == "change"
               for r in store.audit_records(request_id=request_id))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _status(request_id: str) -> dict[str, object]:
    code, out, err = invoke_cli("status", "--all", "--json")
    assert code == 0, err
    (row,) = [r for r in json.loads(out) if r["request_id"] == request_id]
    return dict(row)


def _assert_invariants(home: IntentHome, request_id: str, *statuses: RequestStatus) -> None:
    """The chain verifies, no lock is held, and the request's alerts are one per ending, in order."""
    code, out, err = invoke_cli("audit", "verify")
    assert code == 0, out + err
    assert StateStore(home.store_url()).locks() == []
    alerts = [a for a in read_alerts(home) if a.request_id == request_id]
    assert [a.status for a in alerts] == [s.value for s in statuses], alerts


@pytest.fixture
def journal(tmp_path: Path, sample_home: IntentHome, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INTENTS_PATH", str(tmp_path / "intents"))
    return tmp_path / "journal"


def test_a_killed_runner_takes_its_step_command_with_it(sample_home: IntentHome, journal: Path,
                                                        tmp_path: Path) -> None:
    _write_intent(tmp_path / "intents", journal, slow_s=4, undo_s=0)
    proc, request_id = _spawn_until(sample_home, _step_running("slow"), "step slow to run")
    _kill(proc)
    time.sleep(6)  # longer than the slow step would have taken: an orphan would have written by now
    assert _journal(journal) == ["change", "second"]
    row = _status(request_id)
    assert row["status"] == RequestStatus.CRASHED.value, row
    _assert_invariants(sample_home, request_id, RequestStatus.CRASHED)

    # Resume continues from the step that was cut short: the first two are not run again.
    code, out, err = invoke_cli("resume", request_id, "--json")
    assert code == 12, out + err  # boom fails, so the request rolls back
    assert _journal(journal) == ["change", "second", "slow", "boom", "undo-second", "undo-change"]
    _assert_invariants(sample_home, request_id, RequestStatus.CRASHED, RequestStatus.ROLLED_BACK)


def test_a_rollback_cut_short_is_finished_once_by_resume(sample_home: IntentHome, journal: Path,
                                                         tmp_path: Path) -> None:
    _write_intent(tmp_path / "intents", journal, slow_s=0, undo_s=4)
    proc, request_id = _spawn_until(sample_home, _rolling_back, "the rollback of change to begin")
    _kill(proc)
    time.sleep(6)
    # undo-second finished before the kill; undo-change was killed with its runner.
    assert _journal(journal) == ["change", "second", "slow", "boom", "undo-second"]

    # Resumed at once, with no other command in between: resume itself sees the runner is dead.
    code, out, err = invoke_cli("resume", request_id, "--json")
    assert code == 12, out + err
    outcome = json.loads(out)
    assert outcome["status"] == RequestStatus.ROLLED_BACK.value
    # No forward step again, undo-second not again: only the rollback that was cut short.
    assert _journal(journal) == ["change", "second", "slow", "boom", "undo-second", "undo-change"]
    steps = {s["step_id"]: s["status"] for s in StateStore(sample_home.store_url()).steps(request_id)}
    assert steps == {"change": "ROLLED_BACK", "second": "ROLLED_BACK", "slow": "SUCCEEDED", "boom": "FAILED"}
    code, out, err = invoke_cli("resume", request_id)
    assert code == 2 and "was rolled back" in err
    _assert_invariants(sample_home, request_id, RequestStatus.CRASHED, RequestStatus.ROLLED_BACK)


def test_a_runner_killed_mid_verify_is_verified_again_by_resume(sample_home: IntentHome, journal: Path,
                                                               tmp_path: Path) -> None:
    (tmp_path / "intents").mkdir()
    (tmp_path / "intents" / "chaos-verify.yaml").write_text(
        VERIFY_INTENT.format(append=APPEND, journal=journal, check_s=4))
    proc, request_id = _spawn_until(sample_home, _verifying, "the verify phase", intent="chaos-verify")
    _kill(proc)
    time.sleep(6)  # the check's command died with its runner: it never writes
    assert _journal(journal) == ["change"]
    row = _status(request_id)
    assert row["status"] == RequestStatus.CRASHED.value, row
    _assert_invariants(sample_home, request_id, RequestStatus.CRASHED)

    # Resume runs the check again, not the change (recorded as done), and nothing is rolled back.
    code, out, err = invoke_cli("resume", request_id, "--json")
    assert code == 0, out + err
    assert json.loads(out)["status"] == RequestStatus.SUCCEEDED.value
    assert _journal(journal) == ["change", "check"]
    kinds = [r.kind for r in StateStore(sample_home.store_url()).audit_records(request_id=request_id)]
    assert kinds.count("verify.pass") == 1 and "rollback.start" not in kinds, kinds
    _assert_invariants(sample_home, request_id, RequestStatus.CRASHED)
