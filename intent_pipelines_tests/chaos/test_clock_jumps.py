"""Clock jumps seen by the engine (through its seams, never the machine's clock).

A clock that jumps back must not make the audit chain's timestamps go backwards; one that jumps
forward must not make the watchdog stop a live request whose heartbeats look old, while a really
frozen request is still found.
"""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from intent_pipelines.home import IntentHome
from intent_pipelines.status import RequestStatus, StepStatus
from intent_pipelines.store import StateStore
from intent_pipelines.testing import invoke_cli, wait_for
from intent_pipelines.watchdog import check_stuck_requests

INTENT_BIN = str(Path(sys.executable).parent / "intent")

NAP = """\
name: nap
summary: a step that prints, then sleeps
steps:
  - id: nap
    run: [python3, -c, "import time; print('napping', flush=True); time.sleep(float('{seconds}'))"]
"""


@pytest.fixture
def intents(tmp_path: Path, sample_home: IntentHome, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "intents"
    directory.mkdir()
    monkeypatch.setenv("INTENTS_PATH", str(directory))
    return directory


def test_a_clock_jumping_back_keeps_the_chain_in_order(sample_home: IntentHome, intents: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (intents / "nap.yaml").write_text(NAP.format(seconds=0))
    assert invoke_cli("run", "nap")[0] == 0
    import intent_pipelines.store.state as state

    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    monkeypatch.setattr(state, "now_iso", lambda: an_hour_ago)
    assert invoke_cli("run", "nap")[0] == 0
    stamps = [r.ts for r in StateStore(sample_home.store_url()).audit_records()]
    assert len(stamps) > 10 and stamps == sorted(stamps) and an_hour_ago not in stamps
    code, out, err = invoke_cli("audit", "verify")
    assert code == 0, out + err


def test_a_clock_jumping_forward_does_not_make_a_live_request_stuck(sample_home: IntentHome, intents: Path) -> None:
    (intents / "nap.yaml").write_text(NAP.format(seconds=60))
    store = StateStore(sample_home.store_url())
    proc = subprocess.Popen([INTENT_BIN, "run", "nap"], env=os.environ.copy(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def napping() -> str | None:
            rows = store.requests_by_status(RequestStatus.RUNNING)
            state = store.step_state(str(rows[0]["request_id"]), "nap") if rows else None
            return str(rows[0]["request_id"]) if state and state["status"] == StepStatus.RUNNING.value else None

        request_id: str = wait_for(napping, timeout=60, what="the nap step to run")
        an_hour_on = time.time() + 3600
        report = check_stuck_requests(sample_home, store, None, stale_s=60, grace_s=1, now=an_hour_on)
        assert report.stuck == [], report.summary()
        assert store.request(request_id)["status"] == RequestStatus.RUNNING.value  # type: ignore[index]

        # Frozen for real: the same jump now finds it, and it ends.
        os.kill(proc.pid, signal.SIGSTOP)
        report = check_stuck_requests(sample_home, store, None, stale_s=60, grace_s=1, now=an_hour_on)
        assert [s.request_id for s in report.stuck] == [request_id], report.summary()
        assert store.request(request_id)["status"] == RequestStatus.WATCHDOG_STUCK.value  # type: ignore[index]
    finally:
        proc.kill()
        proc.wait(timeout=30)
