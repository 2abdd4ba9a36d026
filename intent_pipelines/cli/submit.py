"""`intent run --submit`: queue the run on a running Dagster webserver over GraphQL, then follow it.

Unlike `intent run` (which executes in this process and bypasses Dagster's queue), a submitted run
goes through the instance's QueuedRunCoordinator with tag ``intent/lock``: a second request for
the same target waits QUEUED until the first ends instead of failing on the lock.
"""

import os
import time
from collections.abc import Mapping
from typing import Any

import requests

from intent_pipelines import run_tags
from intent_pipelines.cli.context import CliContext
from intent_pipelines.cli.operate import LogFollower
from intent_pipelines.cli.output import console, err_console
from intent_pipelines.dagster_graphql_client import (
    CREDENTIALS_HINT,
    PASSWORD_VARIABLE,
    TERMINAL_STATUSES,
    USER_VARIABLE,
    BasicAuth,
    DagsterGraphQL,
    DagsterGraphQLError,
    DagsterUnauthorized,
    login_in_url,
    without_login,
)
from intent_pipelines.errors import StepStopped, UsageError
from intent_pipelines.settings import DEFAULT_DAGSTER_URL, settings
from intent_pipelines.spec.loader import LoadedIntent
from intent_pipelines.spec.models import IntentSpec
from intent_pipelines.spec.params import secret_env_var
from intent_pipelines.status import RequestStatus

# After the request ends, how long to wait for Dagster to record the run's end too.
RUN_END_WAIT_S = 30.0


def dagster_url(option: str | None) -> str:
    """--dagster-url, else $INTENT_DAGSTER_URL, else the local default; a URL with a login is refused.

    A password in argv is visible to every user of the host (ps), and one in the URL variable
    ends up in messages: both belong in the credential variables (BasicAuth.from_env).
    """
    url = option.rstrip("/") if option else settings().dagster_url
    if login_in_url(url):
        source = "--dagster-url" if option else "INTENT_DAGSTER_URL"
        raise UsageError(f"{source} {without_login(url)} carries a login (user:password@), which other users "
                         "of this host can read", hint=f"Drop it from the URL. {CREDENTIALS_HINT}.")
    return url


def _unauthorized(url: str, auth: BasicAuth | None) -> UsageError:
    if auth is None:
        return UsageError(f"the Dagster webserver at {url} asks for a login (HTTP 401)", hint=f"{CREDENTIALS_HINT}.")
    return UsageError(f"the Dagster webserver at {url} refused the login of user {auth.user!r} (HTTP 401)",
                      hint=f"Check {USER_VARIABLE} and {PASSWORD_VARIABLE} (or the file it is read from).")


def _client(url: str) -> DagsterGraphQL:
    """A client for ``url`` that has answered once; UsageError (exit 2) when nothing answers or the login fails."""
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--dagster-url {url!r} is not an http(s) URL", hint=f"E.g. {DEFAULT_DAGSTER_URL}.")
    auth = BasicAuth.from_env()
    client = DagsterGraphQL(url, timeout_s=15, auth=auth)
    try:
        status, error = client.location_status()
    except DagsterUnauthorized:
        raise _unauthorized(url, auth) from None
    except (requests.RequestException, DagsterGraphQLError, ValueError, KeyError) as exc:
        raise UsageError(f"no Dagster webserver answers at {url} ({type(exc).__name__})",
                         hint="Start one with `intent up`, or pass --dagster-url / set INTENT_DAGSTER_URL.") from None
    if error or status not in (None, "LOADED"):
        raise UsageError(f"the code location {client.location} at {url} is {status}: {error or 'not loaded'}",
                         hint="Fix it (see the Dagster UI), then submit again.")
    if status is None:
        raise UsageError(f"the webserver at {url} does not serve the {client.location} code location",
                         hint="Point --dagster-url at the webserver `intent up` started for this INTENT_HOME.")
    return client


def _note_secrets_stay_here(spec: IntentSpec) -> None:
    """Say (by name, never by value) which secrets set here the submitted run will not use.

    A submitted run executes in the Dagster daemon's run worker, which reads secret params from its
    own environment: sending the caller's value would write it into the run config (Dagster storage).
    """
    for name, param in spec.params.items():
        variable = secret_env_var(name, param)
        if param.secret and os.environ.get(variable):
            err_console.print(f"note: the submitted run reads secret param {name!r} from the environment of the "
                              f"Dagster daemon; {variable} set here is not sent", markup=False)


def submit(cli: CliContext, loaded: LoadedIntent, given: Mapping[str, Any], *, dry_run: bool, confirm: str,
           reason: str, lock: str | None, url: str, wait: bool, quiet: bool, plan: str = "",
           poll_s: float = 0.5) -> dict[str, Any]:
    """Queue the intent's job on the webserver at ``url``; follow it unless ``wait`` is false.

    Returns the request's outcome (the same shape as `intent run` in process). Nothing is submitted
    when the webserver does not answer or does not know the job.
    """
    spec = loaded.spec
    client = _client(url)
    _note_secrets_stay_here(spec)
    run_config: dict[str, Any] = dict(given)
    run_config.update({"dry_run": dry_run, "confirm": confirm, "reason": reason, "plan": plan})
    tags = {run_tags.NAME: spec.name, run_tags.SOURCE: run_tags.SOURCE_SUBMIT}
    if lock and not dry_run:
        tags[run_tags.LOCK] = lock
    try:
        run_id = client.launch_run(spec.job_name, run_config, tags)
    except DagsterUnauthorized:
        raise _unauthorized(url, client.auth) from None
    except DagsterGraphQLError as exc:
        raise UsageError(f"the webserver at {url} refused the run: {str(exc).splitlines()[0]}",
                         hint="Check that it serves this project's intents (INTENTS_PATH).") from None
    except requests.RequestException as exc:
        raise UsageError(f"submitting to {url} failed ({type(exc).__name__})",
                         hint="Check the webserver; see the Dagster UI for whether a run was queued.") from None
    if not quiet:
        console.print(f"submitted run {run_id} to {url}" + (f" (lock {lock})" if lock and not dry_run else ""),
                      markup=False)
    if not wait:
        return {"request_id": run_id, "run_id": run_id, "intent": spec.name, "status": "SUBMITTED",
                "exit_code": 0, "error": "", "steps": [], "url": url}
    return follow_submitted(cli, client, run_id, intent=spec.name, quiet=quiet, poll_s=poll_s)


def follow_submitted(cli: CliContext, client: DagsterGraphQL, run_id: str, *, intent: str, quiet: bool,
                     poll_s: float = 0.5) -> dict[str, Any]:
    """Print the run's step output until its request ends (like `intent watch`); return the outcome."""
    store = cli.engine.store
    follower = LogFollower(cli.home.root / "logs" / "steps" / run_id)
    said_queued = False
    while True:
        run_status = _status(client, run_id)
        row = store.request(run_id)
        if not quiet:
            if run_status == "QUEUED" and not said_queued:
                console.print(f"run {run_id} is QUEUED (waiting for its lock or a run slot)", markup=False)
                said_queued = True
            follower.drain()
        if row is not None and RequestStatus(row["status"]).final:
            _wait_run_end(client, run_id, poll_s=poll_s)
            if not quiet:
                follower.drain()
            return _outcome(cli, row, intent=intent)
        if row is None and run_status in TERMINAL_STATUSES:
            return _ended_without_request(run_id, run_status, intent=intent)
        time.sleep(poll_s)


def _status(client: DagsterGraphQL, run_id: str) -> str:
    # A webserver restart while we follow is not the run's failure: keep polling.
    try:
        return client.run_status(run_id)
    except (requests.RequestException, DagsterGraphQLError):
        return "UNKNOWN"


def _wait_run_end(client: DagsterGraphQL, run_id: str, *, poll_s: float) -> None:
    deadline = time.monotonic() + RUN_END_WAIT_S
    while _status(client, run_id) not in TERMINAL_STATUSES and time.monotonic() < deadline:
        time.sleep(poll_s)


def _outcome(cli: CliContext, row: Mapping[str, Any], *, intent: str) -> dict[str, Any]:
    request_id = str(row["request_id"])
    steps = [{"step": s["step_id"], "status": s["status"], "attempt": s["attempt"]}
             for s in cli.engine.store.steps(request_id)]
    return {"request_id": request_id, "run_id": row["run_id"], "intent": intent, "status": row["status"],
            "plan_hash": row["plan_hash"], "exit_code": row["exit_code"], "error": row["error"], "steps": steps}


def _ended_without_request(run_id: str, run_status: str, *, intent: str) -> dict[str, Any]:
    """The run ended before its preflight recorded a request (canceled in the queue, or broken)."""
    outcome: dict[str, Any] = {"request_id": run_id, "run_id": run_id, "intent": intent, "steps": []}
    if run_status == "CANCELED":
        stopped = StepStopped(f"run {run_id} was canceled before it started", hint="Submit it again if needed.")
        return {**outcome, "status": "CANCELED", "exit_code": stopped.exit_code, "error": stopped.one_line()}
    return {**outcome, "status": "FAILED", "exit_code": 1,
            "error": f"run {run_id} ended {run_status} before this INTENT_HOME recorded a request. See the run in "
                     "the Dagster UI, and check that the webserver uses the same INTENT_HOME as this command."}
