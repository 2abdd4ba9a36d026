"""A lock holder frozen with SIGSTOP past its lease: kept on its own host, fenced off from another host.

On the holder's host its live process decides: a second request is refused (the holder is stuck,
not gone), `intent unlock` without --force refuses, and the holder finishes once it is continued.
From another host (a UTS namespace with its own hostname, sharing the state store) nothing can be
checked but the lease, so a second request takes the expired lock; the first, once continued,
finds its lease lost before its next step and changes nothing more.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from intent_pipelines.home import IntentHome
from intent_pipelines.status import RequestStatus, StepStatus
from intent_pipelines.store import StateStore
from intent_pipelines.testing import invoke_cli, wait_for

INTENT_BIN = str(Path(sys.executable).parent / "intent")
TTL_S = 2

INTENT = """\
name: chaos-lock
summary: hold a shared target for `nap` seconds, then change it once more
params:
  who: {{type: string, pattern: "^[a-z]+$"}}
  nap: {{type: number, default: 0}}
policy: {{lock: "shared-target"}}
steps:
  - id: hold
    run: [python3, -c, 'import sys, time; time.sleep(float(sys.argv[1])); open("{journal}", "a").write(sys.argv[2] + "-hold\\n")', "{{{{ params.nap }}}}", "{{{{ params.who }}}}"]
  - id: after
    needs: [hold]
    run: [python3, -c, 'import sys; open("{journal}", "a").write(sys.argv[1] + "-after\\n")', "{{{{ params.who }}}}"]
"""


@pytest.fixture
def journal(tmp_path: Path, sample_home: IntentHome, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "intents"
    directory.mkdir()
    path = tmp_path / "journal"
    (directory / "chaos-lock.yaml").write_text(INTENT.format(journal=path))
    monkeypatch.setenv("INTENTS_PATH", str(directory))
    monkeypatch.setenv("INTENT_LOCK_TTL_S", str(TTL_S))
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _holder(home: IntentHome, argv: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start `argv` (an `intent run chaos-lock` for who=a) and return it once step hold's command runs."""
    store = StateStore(home.store_url())
    proc = subprocess.Popen(argv, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def holding() -> str | None:
        assert proc.poll() is None, f"the holder exited {proc.returncode} early"
        for row in store.requests_by_status(RequestStatus.RUNNING):
            state = store.step_state(str(row["request_id"]), "hold")
            if state is not None and state["status"] == StepStatus.RUNNING.value and row["step_pgid"]:
                return str(row["request_id"])
        return None

    request_id: str = wait_for(holding, timeout=60, what="the holder's step to run")
    return proc, request_id


def _frozen_past_lease(proc: subprocess.Popen[bytes], store: StateStore) -> None:
    os.kill(proc.pid, signal.SIGSTOP)
    wait_for(lambda: all(h.expires_at < time.time() for h in store.locks()), timeout=TTL_S * 5,
             what="the frozen holder's lease to run out")


def _kinds(store: StateStore, request_id: str) -> list[str]:
    return [r.kind for r in store.audit_records(request_id=request_id)]


def test_a_frozen_holder_on_this_host_keeps_its_lock(sample_home: IntentHome, journal: Path) -> None:
    store = StateStore(sample_home.store_url())
    proc, holder = _holder(sample_home, [INTENT_BIN, "run", "chaos-lock", "-p", "who=a", "-p", "nap=3"])
    try:
        _frozen_past_lease(proc, store)
        code, out, err = invoke_cli("run", "chaos-lock", "-p", "who=b", "--json")
        assert code == 7, out + err
        outcome = json.loads(out)
        assert outcome["status"] == RequestStatus.REFUSED.value and "stuck, not gone" in outcome["error"]
        code, _, err = invoke_cli("unlock", "shared-target")
        assert code == 7 and "live holder" in err, err
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=60) == 0
    assert _lines(journal) == ["a-hold", "a-after"]
    assert "lock.lost" not in _kinds(store, holder)
    assert store.locks() == []


def test_a_frozen_holder_on_another_host_is_fenced_off(sample_home: IntentHome, journal: Path) -> None:
    store = StateStore(sample_home.store_url())
    alpha = ["unshare", "--uts", "sh", "-c", 'hostname alpha && exec "$@"', "sh",
             INTENT_BIN, "run", "chaos-lock", "-p", "who=a", "-p", "nap=1"]
    proc, holder = _holder(sample_home, alpha)
    try:
        _frozen_past_lease(proc, store)
        time.sleep(1)  # the frozen holder's command finishes its step meanwhile
        code, out, err = invoke_cli("run", "chaos-lock", "-p", "who=b", "--json")
        assert code == 0, out + err
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=60) == 19  # LeaseLost
    # a's command was already past its point of no return; its next step never started.
    assert _lines(journal) == ["a-hold", "b-hold", "b-after"]
    row = store.request(holder)
    assert row is not None and row["status"] == RequestStatus.FAILED.value and row["reason_code"] == "lease_lost"
    assert "lock.lost" in _kinds(store, holder)
    assert store.step_state(holder, "after") is None or store.step_state(holder, "after")["status"] != "SUCCEEDED"
    code, out, err = invoke_cli("audit", "verify")
    assert code == 0, out + err
