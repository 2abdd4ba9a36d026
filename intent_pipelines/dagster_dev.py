"""DagsterDev: a real `dagster dev` on a free loopback port, stopped by PID, and a small GraphQL client."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from intent_pipelines.home import IntentHome
from intent_pipelines.testing import free_ports

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION = "intent_pipelines"
REPOSITORY = "__repository__"
TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

# Query shapes follow dagster_graphql (schema/roots/mutation.py, client/client_queries.py) of 1.13.
_WORKSPACE_QUERY = """
query IntentWorkspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on Error { message }
  }
}
"""

_JOB_NAMES_QUERY = """
query IntentJobNames {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on Error { message }
  }
}
"""

_LAUNCH_ERRORS = """
    ... on RunConfigValidationInvalid { errors { message path reason } }
    ... on Error { message }
"""

_LAUNCH_RUN_MUTATION = """
mutation IntentLaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
""" + _LAUNCH_ERRORS + """
  }
}
"""

_REEXECUTE_MUTATION = """
mutation IntentReexecute($reexecutionParams: ReexecutionParams) {
  launchRunReexecution(reexecutionParams: $reexecutionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
""" + _LAUNCH_ERRORS + """
  }
}
"""

_RUN_QUERY = """
query IntentRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status rootRunId parentRunId jobName stepStats { stepKey status } }
    ... on Error { message }
  }
}
"""

_RUN_LOGS_QUERY = """
query IntentRunLogs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message }
        ... on ErrorEvent { error { message } }
        ... on ExecutionStepFailureEvent { stepKey failureMetadata { description } }
      }
    }
    ... on Error { message }
  }
}
"""


class DagsterDevError(RuntimeError):
    """`dagster dev` did not come up, or the GraphQL API refused a request; the message says why."""


class DagsterGraphQL:
    """The few GraphQL calls the tests and tools need, against one webserver."""

    def __init__(self, base_url: str, *, location: str = LOCATION, timeout_s: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.location = location
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST one query; GraphQL-level errors raise DagsterDevError."""
        response = self._session.post(f"{self.base_url}/graphql",
                                      json={"query": query, "variables": dict(variables or {})},
                                      timeout=self.timeout_s)
        response.raise_for_status()
        payload: dict[str, Any] = response.json()
        if payload.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {payload['errors']}")
        data: dict[str, Any] = payload["data"]
        return data

    def location_status(self) -> tuple[str | None, str | None]:
        """(loadStatus, load error message) of this client's code location; (None, None) when absent."""
        workspace = self.query(_WORKSPACE_QUERY)["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            raise DagsterDevError(f"workspace unavailable: {workspace.get('message')}")
        for entry in workspace["locationEntries"]:
            if entry["name"] == self.location:
                loaded = entry["locationOrLoadError"] or {}
                error = loaded.get("message") if loaded.get("__typename") == "PythonError" else None
                return entry["loadStatus"], error
        return None, None

    def job_names(self) -> list[str]:
        """Names of the jobs in this client's code location (Dagster's hidden jobs left out)."""
        result = self.query(_JOB_NAMES_QUERY)["repositoriesOrError"]
        if result["__typename"] != "RepositoryConnection":
            raise DagsterDevError(f"repositories unavailable: {result.get('message')}")
        return sorted(job["name"] for repo in result["nodes"] if repo["location"]["name"] == self.location
                      for job in repo["jobs"] if not job["name"].startswith("__"))

    def launch_run(self, job: str, run_config: Mapping[str, Any],
                   tags: Mapping[str, str] | None = None) -> str:
        """Launch ``job`` with ``run_config`` (queued by the run coordinator) and return the run id."""
        params: dict[str, Any] = {
            "selector": {"repositoryLocationName": self.location, "repositoryName": REPOSITORY,
                         "jobName": job},
            "runConfigData": dict(run_config),
        }
        if tags:
            params["executionMetadata"] = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
        result = self.query(_LAUNCH_RUN_MUTATION, {"executionParams": params})["launchRun"]
        return _run_id_of(result, f"launching {job}")

    def reexecute(self, run_id: str, strategy: str = "FROM_FAILURE") -> str:
        """Re-execute ``run_id`` (FROM_FAILURE or ALL_STEPS) and return the new run id."""
        params = {"parentRunId": run_id, "strategy": strategy}
        result = self.query(_REEXECUTE_MUTATION, {"reexecutionParams": params})["launchRunReexecution"]
        return _run_id_of(result, f"re-executing {run_id}")

    def run(self, run_id: str) -> dict[str, Any]:
        """Fetch the run's id, status, root/parent run ids, job name and per-step status."""
        result = self.query(_RUN_QUERY, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise DagsterDevError(f"run {run_id}: {result.get('message', result['__typename'])}")
        run: dict[str, Any] = result
        return run

    def run_status(self, run_id: str) -> str:
        """QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED, ..."""
        return str(self.run(run_id)["status"])

    def wait_for_run(self, run_id: str, timeout: float = 60, *, poll_s: float = 0.25) -> str:
        """Poll until the run ends and return its final status; DagsterDevError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        status = self.run_status(run_id)
        while status not in TERMINAL_STATUSES:
            if time.monotonic() > deadline:
                raise DagsterDevError(f"run {run_id} still {status} after {timeout:.0f}s")
            time.sleep(poll_s)
            status = self.run_status(run_id)
        return status

    def failure_messages(self, run_id: str) -> list[str]:
        """Messages of the run's error and step-failure events, oldest first."""
        result = self.query(_RUN_LOGS_QUERY, {"runId": run_id})["logsForRun"]
        if result["__typename"] != "EventConnection":
            raise DagsterDevError(f"logs of run {run_id}: {result.get('message', result['__typename'])}")
        found: list[str] = []
        for event in result["events"]:
            if "Failure" not in event["__typename"]:
                continue
            for text in (event.get("message"), (event.get("error") or {}).get("message"),
                         (event.get("failureMetadata") or {}).get("description")):
                if text:
                    found.append(str(text))
        return found


def _run_id_of(result: dict[str, Any], doing: str) -> str:
    if result["__typename"] == "LaunchRunSuccess":
        return str(result["run"]["runId"])
    detail = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
    raise DagsterDevError(f"{doing} failed: {result['__typename']}: {detail}")


def _reset_signals() -> None:
    # A parent started with `&` hands down ignored SIGINT/SIGTERM through exec; dagster dev would
    # then never shut down. Give the child the defaults back.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class DagsterDev:
    """`dagster dev` for the project's workspace on a free port, as a context manager."""

    def __init__(self, home: IntentHome, *, repo_root: Path = REPO_ROOT, port: int | None = None,
                 env: Mapping[str, str] | None = None, startup_timeout_s: float = 120,
                 stop_timeout_s: float = 20) -> None:
        self.home = home
        self.repo_root = repo_root
        self.port = port or free_ports(1)
        self.extra_env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = home.root / "logs" / "dagster-dev.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = DagsterGraphQL(self.url)
        self._process: subprocess.Popen[bytes] | None = None

    def prepare_dagster_home(self) -> Path:
        """DAGSTER_HOME under INTENT_HOME with the repo's dagster.yaml (kept when already there)."""
        dagster_home = self.home.dagster_home
        dagster_home.mkdir(parents=True, exist_ok=True)
        target = dagster_home / "dagster.yaml"
        if not target.exists():
            shutil.copyfile(self.repo_root / "dagster.yaml", target)
        return dagster_home

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("INTENT_FLEET", "INTENTS_PATH", "INTENT_STORE_URL")}
        env.update({"INTENT_HOME": str(self.home.root), "DAGSTER_HOME": str(self.home.dagster_home),
                    "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        return env

    def start(self) -> "DagsterDev":
        """Start the process and wait until the code location is loaded."""
        if self._process is not None:
            raise DagsterDevError("dagster dev is already running")
        self.prepare_dagster_home()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "dagster", "dev", "-w", str(self.repo_root / "workspace.yaml"),
                   "-h", "127.0.0.1", "-p", str(self.port)]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, cwd=self.repo_root, env=self._env(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_reset_signals)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise DagsterDevError(f"dagster dev exited with {self._process.returncode}\n"
                                      f"{self.log_tail()}")
            try:
                status, error = self.client.location_status()
            except (requests.RequestException, DagsterDevError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if error:
                    raise DagsterDevError(f"code location {LOCATION} failed to load: {error}")
                if status == "LOADED":
                    return
                last = f"location {LOCATION} is {status or 'absent'}"
            time.sleep(0.5)
        raise DagsterDevError(f"dagster dev not ready after {self.startup_timeout_s:.0f}s ({last})\n"
                              f"{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the dagster dev log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the whole process group, wait, then SIGKILL whatever is left of it."""
        process, self._process = self._process, None
        if process is None:
            return
        pgid = process.pid  # start_new_session made it the group leader
        _signal_group(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=self.stop_timeout_s)
        # The webserver, daemon, code server and run workers share the group; reap stragglers.
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(pgid, signal.SIGKILL)
        process.wait()

    def __enter__(self) -> "DagsterDev":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
