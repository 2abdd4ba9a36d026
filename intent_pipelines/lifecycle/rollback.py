"""Undoing a failed request: the rollbacks of its completed steps, newest first, each attempted once.

A rollback records each step it undid, so one cut short (its process killed) is finished by the
request's resume: the steps already undone are not undone again, the one that was being undone
runs again (rollbacks are written to be idempotent), and no forward step runs.
"""

from collections.abc import Mapping
from typing import Any

from intent_pipelines.audit import events as ev
from intent_pipelines.errors import IntentError, LeaseLost, RollbackFailed, RolledBack, StepFailed
from intent_pipelines.lifecycle.calls import execute
from intent_pipelines.lifecycle.finish import Ending
from intent_pipelines.lifecycle.lease import Heartbeat, fence
from intent_pipelines.lifecycle.recorder import Recorder, print_line, secret_values
from intent_pipelines.plan import render_call
from intent_pipelines.spec.models import IntentSpec
from intent_pipelines.status import RequestStatus, StepStatus
from intent_pipelines.store import StateStore


def roll_back(rec: Recorder, spec: IntentSpec, request_id: str, run_id: str) -> RequestStatus:
    """Undo what succeeded; FAILED when nothing had a rollback, else ROLLED_BACK or ROLLBACK_FAILED."""
    done = [s for s in rec.store.steps(request_id) if s["status"] == StepStatus.SUCCEEDED.value]
    undo = [s for s in reversed(done) if spec.step(s["step_id"]).rollback is not None]
    if not undo:
        return RequestStatus.FAILED
    row = rec.request(request_id)
    rec.set_phase(request_id, run_id, "ROLLBACK")
    ns = rec.namespace(spec, row)
    with Heartbeat(rec, request_id, row["lock_key"]):
        return _undo(rec, spec, undo, ns, row, run_id)


def _undo(rec: Recorder, spec: IntentSpec, undo: list[dict[str, Any]], ns: Mapping[str, Any],
          row: Mapping[str, Any], run_id: str) -> RequestStatus:
    request_id = str(row["request_id"])
    status = RequestStatus.ROLLED_BACK
    for state in undo:
        step = spec.step(state["step_id"])
        assert step.rollback is not None
        try:
            fence(rec, {**row, "run_id": run_id}, f"rollback of {step.id}")
        except LeaseLost as exc:  # another request holds the target now: undoing here would clobber its work
            rec.event(ev.RollbackFail(step=step.id, error=exc.message), request_id, run_id)
            return RequestStatus.ROLLBACK_FAILED
        ctx = rec.action_context(request_id, f"{step.id}.rollback", print_line(f"{step.id}.rollback"),
                                 timeout_s=step.rollback.timeout, secrets=secret_values(spec, ns),
                                 inherit=(*spec.inherit_env, *step.rollback.inherit_env),
                                 sandbox=spec.sandbox_for(step.rollback))
        rec.event(ev.RollbackStart(step=step.id), request_id, run_id)
        try:
            execute(render_call(step.rollback, ns, where=f"steps.{step.id}.rollback"), ctx)
        except Exception as exc:  # any failure here, even a bug, must not stop the other rollbacks
            status = RequestStatus.ROLLBACK_FAILED
            message = exc.message if isinstance(exc, IntentError) else f"{type(exc).__name__}: {exc}"
            rec.store.set_step(request_id, step.id, StepStatus.ROLLBACK_FAILED, run_id=run_id)
            rec.event(ev.RollbackFail(step=step.id, error=ctx.redact(message)), request_id, run_id)
            continue
        rec.store.set_step(request_id, step.id, StepStatus.ROLLED_BACK, run_id=run_id)
        rec.event(ev.RollbackComplete(step=step.id), request_id, run_id)
    return status


def interrupted_rollback(store: StateStore, request_id: str) -> tuple[str, str] | None:
    """(step, error) of the failure whose rollback was cut short, or None when no rollback was."""
    cause: tuple[str, str] = ("", "")
    rolling = False
    for record in store.audit_records(request_id=request_id):
        if record.kind == ev.PhaseChange.KIND:
            rolling = record.data().get("phase") == "ROLLBACK"
        elif record.kind == ev.StepFail.KIND and not rolling:
            data = record.data()
            cause = (str(data.get("step", "")), str(data.get("error", "")))
        elif record.kind == ev.VerifyFail.KIND and not rolling:
            check, why = record.data().get("check", ""), record.data().get("error", "")
            cause = (f"verify.{check}", f"verify check {check!r} failed: {why}")
    return cause if rolling else None


def finish_interrupted_rollback(rec: Recorder, spec: IntentSpec, row: Mapping[str, Any], run_id: str) -> None:
    """A resumed request whose rollback was cut short finishes that rollback and ends; raises its outcome."""
    request_id = str(row["request_id"])
    cut_short = interrupted_rollback(rec.store, request_id)
    if cut_short is None:
        return
    step, error = cut_short
    roll_back(rec, spec, request_id, run_id)
    states = {s["status"] for s in rec.store.steps(request_id)}
    message = f"{error}; the rollback cut short by its process's death was finished on resume"
    outcome: IntentError = RolledBack(f"{message}; rolled back", hint="See the step logs.")
    status = RequestStatus.ROLLED_BACK
    if StepStatus.ROLLBACK_FAILED.value in states:
        outcome = RollbackFailed(f"{message}; a rollback failed", hint="Inspect the app now; see the step logs.")
        status = RequestStatus.ROLLBACK_FAILED
    rec.end(request_id, run_id, Ending.of(outcome, step=step, status=status, cause=StepFailed(error)))
    raise outcome
