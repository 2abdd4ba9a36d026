"""Launch an intent's job on the persistent Dagster instance and report the request's outcome."""

import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext, redirect_stdout
from typing import Any

import dagster as dg

from intent_pipelines.cli.context import CliContext
from intent_pipelines.spec.loader import LoadedIntent

LOCK_TAG = "intent/lock"


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send step output (ours and step processes', which inherit fd 1) to stderr for --json."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def launch(cli: CliContext, loaded: LoadedIntent, given: Mapping[str, Any], *, dry_run: bool,
           confirm: bool, reason: str, lock: str | None, quiet: bool) -> dict[str, Any]:
    """Execute the job in this process (no queue) and return the request's outcome as data."""
    spec = loaded.spec
    cli.ensure_dagster_home()
    if quiet:
        logging.getLogger("dagster").setLevel(logging.WARNING)
    job = dg.build_reconstructable_job("intent_pipelines.dagster_defs.jobs", "job_for",
                                       reconstructable_args=(spec.name,))
    run_config = {k: v for k, v in given.items()}
    run_config.update({"dry_run": dry_run, "confirm": confirm, "reason": reason})
    tags = {"intent/name": spec.name, "intent/source": "cli"}
    if lock and not dry_run:
        tags[LOCK_TAG] = lock
    with dg.DagsterInstance.get() as instance, _stdout_to_stderr() if quiet else nullcontext():
        result = dg.execute_job(job, instance=instance, run_config=run_config, tags=tags)
        run_id = result.run_id
    request = cli.engine.store.request(run_id)
    if request is None:  # the run failed before preflight could record anything
        failure = next((e.message for e in result.all_events if e.is_failure), "run failed")
        return {"request_id": run_id, "run_id": run_id, "intent": spec.name, "status": "FAILED",
                "exit_code": 1, "error": failure or "run failed", "steps": []}
    steps = [{"step": s["step_id"], "status": s["status"], "attempt": s["attempt"]}
             for s in cli.engine.store.steps(run_id)]
    return {"request_id": run_id, "run_id": run_id, "intent": spec.name, "status": request["status"],
            "plan_hash": request["plan_hash"], "exit_code": request["exit_code"],
            "error": request["error"], "steps": steps}
