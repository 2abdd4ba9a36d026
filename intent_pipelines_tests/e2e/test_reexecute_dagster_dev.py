"""End to end: a manual gate under a real `dagster dev`, approved from the CLI, continued by re-execution.

The approval is given with `intent approve` (CliRunner, same INTENT_HOME and DAGSTER_HOME as the
dagster dev process). The request then continues two ways: the UI's "Re-execute from failure"
(GraphQL FROM_FAILURE, run by the daemon's run worker), and `intent resume`, which re-executes the
daemon-launched run from failure in the CLI's own process on the same Dagster instance.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from intent_pipelines.dagster_dev import DagsterDev
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore
from intent_pipelines.testing import invoke_cli, prepare_sample_home, stop_fleet

# Steps a and b append their id to @WORK@/<run tag>.events, so each request's executions can be counted.
GATED_INTENT = """\
name: gated
summary: a, then a manual approval, then b
params:
  tag: {type: string, default: x, pattern: "[a-z0-9]+"}
steps:
  - id: a
    run: [python3, -c, "import sys; open(sys.argv[1], 'a').write('a\\\\n')", "@WORK@/{{ params.tag }}.events"]
  - id: gate
    needs: [a]
    uses: gate.manual
    with: {message: check a}
  - id: b
    needs: [gate]
    run: [python3, -c, "import sys; open(sys.argv[1], 'a').write('b\\\\n')", "@WORK@/{{ params.tag }}.events"]
"""


@dataclass(frozen=True)
class Stack:
    """The running dagster dev, its INTENT_HOME, the intents directory and the work directory."""

    dev: DagsterDev
    home: IntentHome
    intents: Path
    work: Path

    def store(self) -> StateStore:
        return StateStore(self.home.store_url())

    def events(self, tag: str) -> list[str]:
        path = self.work / f"{tag}.events"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One dagster dev for the module, serving the gated intent from an INTENTS_PATH directory."""
    root = tmp_path_factory.mktemp("e2e-gates")
    home = prepare_sample_home(root / "home")
    intents, work = root / "intents", root / "work"
    intents.mkdir()
    work.mkdir()
    (intents / "gated.yaml").write_text(GATED_INTENT.replace("@WORK@", str(work)))
    try:
        with DagsterDev(home, env={"INTENTS_PATH": str(intents)}) as dev:
            yield Stack(dev, home, intents, work)
    finally:
        stop_fleet(home)


@pytest.fixture
def cli_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """This process sees the same INTENT_HOME, DAGSTER_HOME and intents as the dagster dev process."""
    monkeypatch.setenv("INTENT_HOME", str(stack.home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(stack.home.dagster_home))
    monkeypatch.setenv("INTENTS_PATH", str(stack.intents))
    for name in ("INTENT_FLEET", "INTENT_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    return stack


def launch_until_gate(stack: Stack, tag: str) -> str:
    """Launch the gated job over GraphQL and wait until its run fails at the gate; return the run id."""
    client = stack.dev.client
    run_id = client.launch_run("gated", {"tag": tag})
    assert client.wait_for_run(run_id, timeout=60) == "FAILURE", client.failure_messages(run_id)
    request = stack.store().request(run_id)
    assert request is not None
    assert (request["status"], request["exit_code"]) == ("NEEDS_APPROVAL", 16)
    assert "step gate waits for approval" in "\n".join(client.failure_messages(run_id))
    assert stack.events(tag) == ["a"]
    return run_id


def approve(request_id: str) -> None:
    code, out, err = invoke_cli("approve", request_id, "--step", "gate", "--reason", "looked at a")
    assert code == 0, err
    assert "approved" in out


def test_ui_reexecute_from_failure_after_cli_approval(cli_env: Stack) -> None:
    """A gated run fails waiting; after `intent approve`, GraphQL FROM_FAILURE re-execution completes the same request."""
    stack = cli_env
    client = stack.dev.client
    run_id = launch_until_gate(stack, "ui")
    approve(run_id)

    rerun_id = client.reexecute(run_id, "FROM_FAILURE")
    assert client.wait_for_run(rerun_id, timeout=60) == "SUCCESS", client.failure_messages(rerun_id)
    assert client.run(rerun_id)["rootRunId"] == run_id
    store = stack.store()
    request = store.request(run_id)
    assert request is not None and (request["status"], request["run_id"]) == ("SUCCEEDED", rerun_id)
    assert store.request(rerun_id) is None
    assert stack.events("ui") == ["a", "b"]
    kinds = [r.kind for r in store.audit_records(request_id=run_id)]
    assert kinds.index("gate.approval_required") < kinds.index("gate.approved") < kinds.index("gate.passed")
    assert {r.run_id for r in store.audit_records(request_id=run_id) if r.kind == "gate.passed"} == {rerun_id}


def test_cli_resume_continues_a_run_launched_over_graphql(cli_env: Stack) -> None:
    """`intent resume` re-executes a daemon-launched gated run from failure in process and completes its request."""
    stack = cli_env
    run_id = launch_until_gate(stack, "cli")
    approve(run_id)

    code, out, err = invoke_cli("resume", run_id, "--json")
    assert code == 0, err
    outcome: dict[str, Any] = json.loads(out)
    assert (outcome["request_id"], outcome["status"]) == (run_id, "SUCCEEDED")
    assert stack.events("cli") == ["a", "b"]
    request = stack.store().request(run_id)
    assert request is not None and request["run_id"] != run_id
    # The CLI's re-execution is a run in the same instance, so the UI shows it under the original.
    rerun = stack.dev.client.run(request["run_id"])
    assert (rerun["rootRunId"], rerun["status"]) == (run_id, "SUCCESS")
