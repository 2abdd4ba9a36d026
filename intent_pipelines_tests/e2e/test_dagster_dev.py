"""End to end: a real `dagster dev` serving the workspace; runs launched and re-executed over GraphQL."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from intent_pipelines.dagster_dev import DagsterDev
from intent_pipelines.fleet import load_fleet
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore
from intent_pipelines.testing import prepare_sample_home, stop_fleet

BUNDLED_JOBS = {"deploy_app", "restart_app", "scale_app", "check_logs", "observe_app", "migrate_schema",
                "create_nextjs_app"}

# A user intent whose second step fails until a flag file exists; the first step counts its runs.
FLAKY_INTENT = """\
name: flaky
summary: Fails its second step until {work}/flag exists
steps:
  - id: count
    run: [python3, -c, "open('{work}/count', 'a').write('x')"]
  - id: check
    needs: [count]
    run: [python3, -c, "import os, sys; sys.exit(0 if os.path.exists('{work}/flag') else 3)"]
    retry: {{attempts: 1}}
"""


@dataclass(frozen=True)
class Stack:
    """The running dagster dev, its INTENT_HOME and the flaky intent's work directory."""

    dev: DagsterDev
    home: IntentHome
    work: Path

    def store(self) -> StateStore:
        return StateStore(self.home.store_url())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One dagster dev for the module, with the sample fleet and a user intent directory."""
    root = tmp_path_factory.mktemp("e2e")
    home = prepare_sample_home(root / "home")
    work = root / "flaky"
    intents = root / "intents"
    work.mkdir()
    intents.mkdir()
    (intents / "flaky.yaml").write_text(FLAKY_INTENT.format(work=work))
    try:
        with DagsterDev(home, env={"INTENTS_PATH": str(intents)}) as dev:
            yield Stack(dev, home, work)
    finally:
        stop_fleet(home)


def test_job_list_has_every_bundled_intent(stack: Stack) -> None:
    """The code location served by dagster dev lists a job for each of the seven bundled intents."""
    names = set(stack.dev.client.job_names())
    assert names >= BUNDLED_JOBS
    assert "flaky" in names


def test_deploy_over_graphql_succeeds_and_app_is_healthy(stack: Stack) -> None:
    """A deploy launched over GraphQL goes through the queue to SUCCESS, is recorded, and the app serves."""
    client = stack.dev.client
    run_id = client.launch_run("deploy_app", {"app": "hello-api", "ref": "HEAD", "dry_run": False,
                                              "confirm": False, "reason": "e2e"})
    assert client.wait_for_run(run_id, timeout=90) == "SUCCESS", client.failure_messages(run_id)

    store = stack.store()
    request = store.request(run_id)
    assert request is not None and request["status"] == "SUCCEEDED"
    steps = {s["step_id"]: s["status"] for s in store.steps(run_id)}
    assert steps == {"build": "SUCCEEDED", "switch": "SUCCEEDED", "migrate": "SUCCEEDED",
                     "restart": "SUCCEEDED"}

    port = load_fleet(stack.home.fleet_file).apps["hello-api"].port
    response = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    assert response.status_code == 200


def test_reexecute_from_failure_continues_the_same_request(stack: Stack) -> None:
    """Re-executing a failed run from failure reruns only the failed step and completes the same request."""
    client = stack.dev.client
    run_id = client.launch_run("flaky", {})
    assert client.wait_for_run(run_id, timeout=60) == "FAILURE"
    store = stack.store()
    failed = store.request(run_id)
    assert failed is not None and failed["status"] == "FAILED"

    (stack.work / "flag").touch()
    rerun_id = client.reexecute(run_id, "FROM_FAILURE")
    assert rerun_id != run_id
    assert client.wait_for_run(rerun_id, timeout=60) == "SUCCESS", client.failure_messages(rerun_id)

    assert client.run(rerun_id)["rootRunId"] == run_id
    request = store.request(run_id)
    assert request is not None and request["status"] == "SUCCEEDED"
    assert store.request(rerun_id) is None  # the re-execution is not a request of its own
    assert {s["step_id"]: s["status"] for s in store.steps(run_id)} == {"count": "SUCCEEDED",
                                                                       "check": "SUCCEEDED"}
    assert (stack.work / "count").read_text() == "x"


def test_bad_param_fails_in_preflight_without_running_a_step(stack: Stack) -> None:
    """Deploying an unknown app over GraphQL is refused in preflight, runs no step, and names the app."""
    client = stack.dev.client
    run_id = client.launch_run("deploy_app", {"app": "no-such-app"})
    assert client.wait_for_run(run_id, timeout=60) == "FAILURE"

    step_stats = {s["stepKey"]: s["status"] for s in client.run(run_id)["stepStats"]}
    assert step_stats == {"preflight": "FAILURE"}
    store = stack.store()
    request = store.request(run_id)
    assert request is not None and (request["status"], request["reason_code"]) == ("REFUSED", "bad_input")
    assert store.steps(run_id) == []
    assert "no-such-app" in "\n".join(client.failure_messages(run_id))
