"""End to end under one real `dagster dev`: stop running and queued runs, serialized submits, max runtime."""

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from intent_pipelines.dagster_dev import DagsterDev
from intent_pipelines.home import IntentHome
from intent_pipelines.status import RequestStatus
from intent_pipelines.store import StateStore
from intent_pipelines.testing import group_gone, prepare_sample_home, stop_fleet, wait_for

INTENT_BIN = str(Path(sys.executable).parent / "intent")

SLEEPY = """\
name: sleepy
summary: a step that sleeps until stopped
policy:
  lock: "target:sleepy"
steps:
  - id: nap
    run: [python3, -c, "import time; print('napping', flush=True); time.sleep(120)"]
"""

QUICK = """\
name: quick
summary: a short step on a shared target
policy:
  lock: "target:quick"
steps:
  - id: work
    run: [sleep, "3"]
"""

# The shipped dagster.yaml, with run monitoring polling every 3 s so the max-runtime check
# shows within the test's time.
DAGSTER_YAML_POLL = ("poll_interval_seconds: 30", "poll_interval_seconds: 3")


@dataclass(frozen=True)
class Stack:
    """The running dagster dev, its INTENT_HOME and the env the `intent` CLI needs to reach it."""

    dev: DagsterDev
    home: IntentHome
    env: dict[str, str]

    def store(self) -> StateStore:
        return StateStore(self.home.store_url())

    def intent(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([INTENT_BIN, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One dagster dev for the module, serving two user intents that share nothing but their lock tags."""
    root = tmp_path_factory.mktemp("ops-e2e")
    home = prepare_sample_home(root / "home")
    intents = root / "intents"
    intents.mkdir()
    (intents / "sleepy.yaml").write_text(SLEEPY)
    (intents / "quick.yaml").write_text(QUICK)
    repo_yaml = files("intent_pipelines.bundled").joinpath("dagster.yaml").read_text()
    assert DAGSTER_YAML_POLL[0] in repo_yaml
    home.dagster_home.mkdir(parents=True, exist_ok=True)
    (home.dagster_home / "dagster.yaml").write_text(repo_yaml.replace(*DAGSTER_YAML_POLL))
    env = {k: v for k, v in os.environ.items() if k not in ("INTENT_FLEET", "INTENT_STORE_URL")}
    env.update({"INTENT_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home),
                "INTENTS_PATH": str(intents)})
    try:
        with DagsterDev(home, env={"INTENTS_PATH": str(intents)}) as dev:
            env["INTENT_DAGSTER_URL"] = dev.url
            yield Stack(dev, home, env)
    finally:
        stop_fleet(home)


def launch_sleepy(stack: Stack, **tags: str) -> str:
    return stack.dev.client.launch_run("sleepy", {"reason": "e2e"}, {"intent/lock": "target:sleepy", **tags})


def running_step(stack: Stack, run_id: str) -> dict[str, Any]:
    """The request row once its step's process group is recorded."""
    store = stack.store()
    return wait_for(lambda: (lambda r: r if r and r["step_pgid"] else None)(store.request(run_id)),
                    timeout=60, what=f"run {run_id}'s step to start")


def test_stop_a_running_run_launched_over_graphql(stack: Stack) -> None:
    """`intent stop` ends a daemon-launched run: step group gone, run final, STOPPED_BY_OPERATOR, lock free."""
    run_id = launch_sleepy(stack)
    row = running_step(stack, run_id)
    pgid = row["step_pgid"]
    done = stack.intent("stop", run_id, "--grace", "2", "--reason", "e2e stop")
    assert done.returncode == 0, done.stderr
    assert "STOPPED_BY_OPERATOR" in done.stdout
    assert stack.dev.client.wait_for_run(run_id, timeout=60) in ("CANCELED", "FAILURE")
    wait_for(lambda: group_gone(pgid), timeout=10, what=f"process group {pgid} to go")
    store = stack.store()
    final = store.request(run_id)
    assert final is not None and final["status"] == RequestStatus.STOPPED_BY_OPERATOR.value
    assert store.lock_holder("target:sleepy") is None
    kinds = [r.kind for r in store.audit_records(request_id=run_id)]
    for kind in ("run.cancel_requested", "run.cancelled", "lock.release", "request.complete"):
        assert kind in kinds


def test_stop_a_queued_run_cancels_it_before_it_starts(stack: Stack) -> None:
    """A second run for the same lock waits QUEUED; stopping it cancels it without ever starting it."""
    client = stack.dev.client
    first = launch_sleepy(stack)
    running_step(stack, first)
    second = launch_sleepy(stack)
    time.sleep(3)  # a few queue-daemon ticks: the tag limit must keep it queued
    assert client.run_status(second) == "QUEUED"
    done = stack.intent("stop", second, "--reason", "not needed")
    assert done.returncode == 0, done.stderr
    assert "CANCELED" in done.stdout
    assert client.run_status(second) == "CANCELED"
    assert stack.store().request(second) is None  # preflight never ran
    assert all(s["status"] != "SUCCESS" for s in client.run(second)["stepStats"])
    cancelled = [json.loads(r.body) for r in stack.store().audit_records(request_id=second) if r.kind == "run.cancelled"]
    assert cancelled and cancelled[0]["queued"] is True
    assert stack.intent("stop", first, "--grace", "1").returncode == 0
    assert client.wait_for_run(first, timeout=60) in ("CANCELED", "FAILURE")


def test_two_submits_for_one_target_run_one_after_the_other(stack: Stack) -> None:
    """Two `intent run --submit` of one target both succeed; the second waits QUEUED until the first ends."""
    first = subprocess.Popen([INTENT_BIN, "run", "quick", "--submit"], env=stack.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert first.stdout is not None
    first_line = first.stdout.readline()
    second = subprocess.Popen([INTENT_BIN, "run", "quick", "--submit"], env=stack.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    out1 = first_line + out1
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 0, out2 + err2
    ids = [re.search(r"submitted run (\S+)", out).group(1) for out in (out1, out2)]  # type: ignore[union-attr]
    assert "is QUEUED" in out2 and "request " + ids[1] + ": SUCCEEDED" in out2
    assert "[work] $ sleep 3" in out1
    runs = [stack.dev.client.run(run_id) for run_id in ids]
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"]
    assert all(r["tags"] and {"key": "intent/source", "value": "submit"} in r["tags"] for r in runs)
    assert runs[1]["startTime"] >= runs[0]["endTime"], runs


def test_submit_to_a_dead_webserver_fails_in_one_line(stack: Stack) -> None:
    """With nothing listening at the URL, --submit exits 2 with one line and queues nothing."""
    done = stack.intent("run", "quick", "--submit", "--dagster-url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no Dagster webserver answers at http://127.0.0.1:9" in done.stderr


def test_max_runtime_tag_ends_a_run_through_run_monitoring(stack: Stack) -> None:
    """Run monitoring in dagster dev fails a run past its dagster/max_runtime tag and its step group goes."""
    run_id = launch_sleepy(stack, **{"dagster/max_runtime": "3"})
    pgid = running_step(stack, run_id)["step_pgid"]
    assert stack.dev.client.wait_for_run(run_id, timeout=60) == "FAILURE"
    wait_for(lambda: group_gone(pgid), timeout=15, what=f"process group {pgid} to go")
    messages = " ".join(stack.dev.client.failure_messages(run_id))
    assert "maximum runtime of 3 seconds" in messages
