"""Launch an intent's job on the persistent Dagster instance and report the request's outcome."""

import logging
import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext, redirect_stdout
from dataclasses import dataclass
from typing import Any

import click
import dagster as dg

from intent_pipelines import run_tags
from intent_pipelines.cli.context import CliContext
from intent_pipelines.cli.output import err_console
from intent_pipelines.confirmation import PlanChanged, check_confirmation, parse_confirm
from intent_pipelines.engine import LaunchRequest
from intent_pipelines.errors import ConfirmationRequired, IntentError, Refused, UsageError
from intent_pipelines.lifecycle.crash import end_crashed_run
from intent_pipelines.lifecycle.liveness import Owner
from intent_pipelines.plan import ExecutionPlan
from intent_pipelines.spec.loader import LoadedIntent
from intent_pipelines.status import RequestStatus


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


@dataclass(frozen=True)
class Prepared:
    """A validated launch: the plan, the typed launchpad values and the confirmation to send."""

    plan: ExecutionPlan
    typed: dict[str, Any]
    confirm: str


def prepare(cli: CliContext, loaded: LoadedIntent, given: Mapping[str, Any], *, confirm: str, dry_run: bool,
            context: Mapping[str, str] | None = None, reason: str = "", replay_of: str = "") -> Prepared:
    """Validate everything before a run exists (bad input never half-executes) and settle confirmation.

    A bound plan hash must match the plan now (else the difference is printed and it is refused);
    a guarded plan without confirmation asks on a terminal and is refused otherwise. A refusal by
    the intent's own rules (params, policy, confirmation) is recorded as a REFUSED request, as it
    is when the UI launches it, so every surface counts it; its id is on the error.
    """
    try:
        return _prepare(cli, loaded, given, confirm=confirm, dry_run=dry_run, context=context)
    except Refused as exc:
        if not isinstance(exc, UsageError):
            exc.request_id = str(uuid.uuid4())
            launch = LaunchRequest(params=given, dry_run=dry_run, reason=reason, replay_of=replay_of)
            cli.engine.abort_preflight(loaded, launch, request_id=exc.request_id, run_id=exc.request_id, error=exc)
        raise


def refusal_outcome(loaded: LoadedIntent, error: IntentError) -> dict[str, Any]:
    """The --json outcome of a request refused by prepare (the same keys as a run's)."""
    return {"request_id": error.request_id, "run_id": None, "intent": loaded.spec.name,
            "status": RequestStatus.REFUSED.value, "exit_code": error.exit_code, "error": error.one_line(),
            "steps": []}


def _prepare(cli: CliContext, loaded: LoadedIntent, given: Mapping[str, Any], *, confirm: str, dry_run: bool,
             context: Mapping[str, str] | None) -> Prepared:
    plan, values = cli.engine.plan(loaded, given, context=context)
    _, bound = parse_confirm(confirm)
    # The launchpad config is typed (replicas: Int): hand it the validated values, minus secrets.
    typed = {k: v for k, v in values.items() if v is not None and not loaded.spec.params[k].secret}
    try:
        check_confirmation(plan, confirm, dry_run=dry_run,
                           confirmed_plan_body=cli.engine.store.plan_body(bound) if bound else None)
    except PlanChanged as exc:
        for line in exc.diff:
            err_console.print(line, markup=False, highlight=False)
        raise
    except ConfirmationRequired:
        if not sys.stdin.isatty() or not click.confirm(
                f"{loaded.spec.name} is guarded by policy (plan {plan.plan_hash[:12]}). Proceed?"):
            raise
        confirm = plan.plan_hash
    return Prepared(plan, typed, confirm)


def launch(cli: CliContext, loaded: LoadedIntent, given: Mapping[str, Any], *, dry_run: bool,
           confirm: str, reason: str, lock: str | None, quiet: bool, replay_of: str = "",
           fresh_context: bool = False, reexecute_of: str = "", plan: str = "") -> dict[str, Any]:
    """Execute the job in this process (no queue) and return the request's outcome as data."""
    spec = loaded.spec
    cli.ensure_dagster_home()
    if quiet:
        logging.getLogger("dagster").setLevel(logging.WARNING)
    job = dg.build_reconstructable_job("intent_pipelines.dagster_defs.jobs", "job_for",
                                       reconstructable_args=(spec.name,))
    run_config = {k: v for k, v in given.items()}
    run_config.update({"dry_run": dry_run, "confirm": confirm, "reason": reason, "replay_of": replay_of,
                       "fresh_context": fresh_context, "plan": plan})
    # This process executes the run: if it dies, the request is known dead at once (lifecycle/crash.py).
    tags = {run_tags.NAME: spec.name, run_tags.SOURCE: run_tags.SOURCE_CLI,
            run_tags.OWNER: Owner.this_process().encode()}
    if lock and not dry_run:
        tags[run_tags.LOCK] = lock
    if replay_of:
        tags[run_tags.REPLAY_OF] = replay_of
    with dg.DagsterInstance.get() as instance, _stdout_to_stderr() if quiet else nullcontext():
        if reexecute_of:
            # Continue the same request: Dagster skips the steps that already succeeded.
            options = dg.ReexecutionOptions.from_failure(reexecute_of, instance)
            result = dg.execute_job(job, instance=instance, reexecution_options=options, tags=tags)
            # A re-execution reports on the request it continues (the root run).
            run = instance.get_run_by_id(result.run_id)
            run_id = (run.root_run_id if run is not None else None) or result.run_id
        else:
            # A fresh run has no root run: it is its own request (no need to read it back).
            result = dg.execute_job(job, instance=instance, run_config=run_config, tags=tags)
            run_id = result.run_id
        ended = instance.get_run_by_id(result.run_id)
    failure = _first_failure(result)
    request = cli.engine.store.request(run_id)
    if request is not None and request["status"] == RequestStatus.RUNNING.value and ended is not None:
        # The run ended but the request did not (an error outside the engine's phases): end it
        # now as the failure sensor would, so this command reports what every other surface will.
        end_crashed_run(cli.engine.store, cli.engine.home, run_id, run_id=result.run_id,
                        run_status=ended.status.value, message=failure)
        request = cli.engine.store.request(run_id)
    if request is None:  # the run failed before preflight could record anything
        return {"request_id": run_id, "run_id": run_id, "intent": spec.name, "status": "FAILED",
                "exit_code": 1, "error": failure, "steps": []}
    steps = [{"step": s["step_id"], "status": s["status"], "attempt": s["attempt"]}
             for s in cli.engine.store.steps(run_id)]
    return {"request_id": run_id, "run_id": run_id, "intent": spec.name, "status": request["status"],
            "plan_hash": request["plan_hash"], "exit_code": request["exit_code"],
            "error": request["error"], "steps": steps}


def _first_failure(result: dg.JobExecutionResult) -> str:
    """The first failed op and the innermost error it raised, in one line."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            return f"op {event.step_key}: {error.message.strip()}"
    return next((e.message for e in result.all_events if e.is_failure and e.message), "run failed")
