"""A small client for the Dagster webserver's GraphQL API: launch, re-execute, read runs.

Used by `intent run --submit` (to queue a run on a running instance) and by the `intent up`
test harness. Query shapes follow dagster_graphql 1.13 (schema/roots/mutation.py,
client/client_queries.py). Only `requests`; no dagster import, so the CLI stays light.

Behind the login proxy (proxy.py) the client sends HTTP basic auth. The credentials come from the
environment only (BasicAuth.from_env): a password in argv or in a URL is visible to every user of
the host in `ps`, so a URL with ``user:password@`` is refused.
"""

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from intent_pipelines import secrets
from intent_pipelines.errors import UsageError

LOCATION = "intent_pipelines"
REPOSITORY = "__repository__"
TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

USER_VARIABLE = "INTENT_DAGSTER_USER"
PASSWORD_VARIABLE = "INTENT_DAGSTER_PASSWORD"  # pragma: allowlist secret (a variable's name)
PASSWORD_FILE_VARIABLE = "INTENT_DAGSTER_PASSWORD_FILE"  # pragma: allowlist secret (a variable's name)
CREDENTIALS_HINT = (f"Set {USER_VARIABLE} and {PASSWORD_VARIABLE} (or {PASSWORD_FILE_VARIABLE}, a file holding "
                    "only the password) in the environment")

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
    ... on Run {
      runId status rootRunId parentRunId jobName startTime endTime
      tags { key value }
      stepStats { stepKey status }
    }
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


class DagsterGraphQLError(RuntimeError):
    """The GraphQL API refused a request or a run did not end in time; the message says why."""


class DagsterUnauthorized(DagsterGraphQLError):
    """The webserver's proxy answered 401: no credentials were sent, or it refused them; set or fix them."""


@dataclass(frozen=True)
class BasicAuth:
    """A user and password for the login proxy in front of the webserver (the password is never shown)."""

    user: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "BasicAuth | None":
        """The credentials the environment sets, registered for masking; None when it sets none.

        UsageError (one line, naming the variable) when only half is set, both password forms are,
        or the password file cannot be read.
        """
        env = os.environ if environ is None else environ
        user = env.get(USER_VARIABLE, "").strip()
        password = env.get(PASSWORD_VARIABLE, "")
        password_file = env.get(PASSWORD_FILE_VARIABLE, "").strip()
        if password and password_file:
            raise UsageError(f"both {PASSWORD_VARIABLE} and {PASSWORD_FILE_VARIABLE} are set",
                             hint="Unset one of them.")
        if password_file:
            try:
                password = Path(password_file).expanduser().read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"{PASSWORD_FILE_VARIABLE}={password_file} cannot be read ({type(exc).__name__})",
                                 hint="Point it at a readable file that holds only the password.") from None
        secrets.register(password, f"{user}:{password}" if user and password else None)
        if not user and not password:
            if password_file:
                raise UsageError(f"the file {PASSWORD_FILE_VARIABLE} names is empty",
                                 hint="Write the password into it, on one line.")
            return None
        if not user:
            raise UsageError(f"a Dagster password is set but {USER_VARIABLE} is not", hint=f"Set {USER_VARIABLE}.")
        if not password:
            raise UsageError(f"{USER_VARIABLE} is set but no password",
                             hint=f"Set {PASSWORD_VARIABLE} or {PASSWORD_FILE_VARIABLE}.")
        if ":" in user:
            raise UsageError(f"{USER_VARIABLE} holds a colon", hint="Basic auth user names cannot; check the value.")
        return cls(user, password)


def login_in_url(url: str) -> bool:
    """Whether ``url`` carries a user or password (``user:password@`` before the host)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "@" in url
    return parts.username is not None or parts.password is not None


def without_login(url: str) -> str:
    """``url`` with any ``user:password@`` removed, for messages; the password is registered for masking."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a malformed URL)"
    secrets.register(parts.password)
    return str(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())


class DagsterGraphQL:
    """The few GraphQL calls the tests and tools need, against one webserver (behind a login, with ``auth``)."""

    def __init__(self, base_url: str, *, location: str = LOCATION, timeout_s: float = 30,
                 auth: BasicAuth | None = None) -> None:
        if login_in_url(base_url):
            raise DagsterGraphQLError(f"the URL {without_login(base_url)} carries a login; pass auth= instead")
        self.base_url = base_url.rstrip("/")
        self.location = location
        self.timeout_s = timeout_s
        self.auth = auth
        self._session = requests.Session()
        if auth is not None:
            self._session.auth = (auth.user, auth.password)

    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST one query; GraphQL-level errors raise DagsterGraphQLError, a 401 DagsterUnauthorized."""
        response = self._session.post(f"{self.base_url}/graphql",
                                      json={"query": query, "variables": dict(variables or {})},
                                      timeout=self.timeout_s)
        if response.status_code == 401:
            raise DagsterUnauthorized(f"the webserver at {self.base_url} answered 401 Unauthorized")
        response.raise_for_status()
        payload: dict[str, Any] = response.json()
        if payload.get("errors"):
            raise DagsterGraphQLError(f"GraphQL errors: {payload['errors']}")
        data: dict[str, Any] = payload["data"]
        return data

    def location_status(self) -> tuple[str | None, str | None]:
        """(loadStatus, load error message) of this client's code location; (None, None) when absent."""
        workspace = self.query(_WORKSPACE_QUERY)["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            raise DagsterGraphQLError(f"workspace unavailable: {workspace.get('message')}")
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
            raise DagsterGraphQLError(f"repositories unavailable: {result.get('message')}")
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
            raise DagsterGraphQLError(f"run {run_id}: {result.get('message', result['__typename'])}")
        run: dict[str, Any] = result
        return run

    def run_status(self, run_id: str) -> str:
        """QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED, ..."""
        return str(self.run(run_id)["status"])

    def wait_for_run(self, run_id: str, timeout: float = 60, *, poll_s: float = 0.25) -> str:
        """Poll until the run ends and return its final status; DagsterGraphQLError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        status = self.run_status(run_id)
        while status not in TERMINAL_STATUSES:
            if time.monotonic() > deadline:
                raise DagsterGraphQLError(f"run {run_id} still {status} after {timeout:.0f}s")
            time.sleep(poll_s)
            status = self.run_status(run_id)
        return status

    def failure_messages(self, run_id: str) -> list[str]:
        """Messages of the run's error and step-failure events, oldest first."""
        result = self.query(_RUN_LOGS_QUERY, {"runId": run_id})["logsForRun"]
        if result["__typename"] != "EventConnection":
            raise DagsterGraphQLError(f"logs of run {run_id}: {result.get('message', result['__typename'])}")
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
    raise DagsterGraphQLError(f"{doing} failed: {result['__typename']}: {detail}")
