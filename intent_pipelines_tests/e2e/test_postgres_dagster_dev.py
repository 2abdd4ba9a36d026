"""End to end on PostgreSQL: `intent init --postgres`, then `intent up`, the CLI, sensors and schedules on one server."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from intent_pipelines.dagster_dev import LOCATION, REPOSITORY, DagsterDev
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore
from intent_pipelines.testing import fresh_database, prepare_sample_home, stop_fleet, wait_for
from intent_pipelines_tests.e2e.test_alerts_dagster_dev import FAILING_INTENT, wait_for_first_tick

INTENT_BIN = str(Path(sys.executable).parent / "intent")
SLEEPY = """\
name: sleepy
summary: sleeps long enough to be stopped
steps:
  - id: nap
    run: [sleep, "120"]
"""
_SCHEDULES = """
query IntentSchedules($repo: RepositorySelector!) {
  schedulesOrError(repositorySelector: $repo) {
    __typename
    ... on Schedules { results { name scheduleState { status } } }
    ... on Error { message }
  }
}
"""


@dataclass(frozen=True)
class Stack:
    """`intent up` on a home whose state store and Dagster storage are one PostgreSQL database."""

    dev: DagsterDev
    home: IntentHome
    url: str
    env: dict[str, str]

    def intent(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([INTENT_BIN, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("pg-e2e")
    intents = root / "intents"
    intents.mkdir()
    (intents / "always-fails.yaml").write_text(FAILING_INTENT)
    (intents / "sleepy.yaml").write_text(SLEEPY)
    with fresh_database(postgres_url) as url:
        home = prepare_sample_home(root / "home")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INTENT", "DAGSTER"))}
        env.update({"INTENT_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home),
                    "INTENT_STORE_URL": url, "INTENTS_PATH": str(intents)})
        init = subprocess.run([INTENT_BIN, "init", "--postgres"], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert init.returncode == 0, init.stderr
        try:
            with DagsterDev(home, env={"INTENT_STORE_URL": url, "INTENTS_PATH": str(intents),
                                       "INTENT_ALERT_SENSOR_INTERVAL_S": "5"}) as dev:
                yield Stack(dev, home, url, env)
        finally:
            stop_fleet(home)


def test_init_writes_postgres_storage_without_the_url(stack: Stack) -> None:
    text = (stack.home.dagster_home / "dagster.yaml").read_text()
    assert "env: INTENT_STORE_URL" in text
    assert "postgresql" not in text.replace("# Runs, event logs and schedules in PostgreSQL", "")
    assert not (stack.home.root / "state.db").exists()  # the state store is on the server too


def test_ui_launch_and_cli_run_land_in_postgres(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    client = stack.dev.client
    run_id = client.launch_run("deploy_app", {"app": "hello-api", "ref": "HEAD", "reason": "pg e2e"})
    assert client.wait_for_run(run_id, timeout=120) == "SUCCESS", client.failure_messages(run_id)
    cli = stack.intent("run", "restart-app", "-p", "app=hello-api", "--json")
    assert cli.returncode == 0, cli.stderr
    cli_run = json.loads(cli.stdout)
    store = StateStore(stack.url)
    assert store.request(run_id)["status"] == "SUCCEEDED"  # type: ignore[index]
    assert store.request(cli_run["request_id"])["status"] == "SUCCEEDED"  # type: ignore[index]
    monkeypatch.setenv("INTENT_STORE_URL", stack.url)  # dagster.yaml names the variable, not the URL
    with dg.DagsterInstance.from_config(str(stack.home.dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_run_by_id(run_id) is not None
        assert instance.get_run_by_id(cli_run["run_id"]) is not None
    verify = stack.intent("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    metrics = stack.intent("metrics", "--format", "json")
    assert metrics.returncode == 0, metrics.stderr
    assert json.loads(metrics.stdout)["overall"]["success_count"] >= 2


def test_failure_alerted_once_and_schedule_running_on_postgres(stack: Stack) -> None:
    client = stack.dev.client
    wait_for_first_tick(client)
    data = client.query(_SCHEDULES, {"repo": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}})
    schedules = {s["name"]: s["scheduleState"]["status"] for s in data["schedulesOrError"]["results"]}
    assert schedules["audit_integrity_daily"] == "RUNNING"
    run_id = client.launch_run("always_fails", {})
    assert client.wait_for_run(run_id, timeout=90) == "FAILURE"
    log = stack.home.alerts / "intent-failures.log"

    def alerted() -> list[dict[str, object]]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in map(json.loads, lines) if line["run_id"] == run_id]

    wait_for(alerted, timeout=90, what="an alert for the failed run")
    time.sleep(15)  # three more sensor ticks: no second alert
    assert len(alerted()) == 1


def test_stop_and_status_on_postgres(stack: Stack) -> None:
    client = stack.dev.client
    run_id = client.launch_run("sleepy", {})
    store = StateStore(stack.url)
    wait_for(lambda: (store.request(run_id) or {}).get("status") == "RUNNING", timeout=90,
             what="the sleepy request to run")
    status = stack.intent("status", "--json")
    assert run_id in status.stdout, status.stdout + status.stderr
    stopped = stack.intent("stop", run_id)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert client.wait_for_run(run_id, timeout=90) in {"FAILURE", "CANCELED"}
    assert store.request(run_id)["status"] == "STOPPED_BY_OPERATOR"  # type: ignore[index]
