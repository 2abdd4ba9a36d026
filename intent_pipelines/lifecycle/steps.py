"""Running one step of a request: gates, dry-run previews, retries, stops, and failure with rollback."""

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from intent_pipelines.actions.base import Outputs
from intent_pipelines.audit import events as ev
from intent_pipelines.errors import ApprovalRequired, IntentError, LeaseLost, StepFailed, StepStopped, StepTimeout
from intent_pipelines.execution.environment import given_names
from intent_pipelines.lifecycle.calls import OUTPUT_FILE_ENV, execute, preview
from intent_pipelines.lifecycle.finish import Ending
from intent_pipelines.lifecycle.gates import pass_gate
from intent_pipelines.lifecycle.lease import Heartbeat, fence
from intent_pipelines.lifecycle.liveness import Owner
from intent_pipelines.lifecycle.recorder import Recorder, print_line, secret_values
from intent_pipelines.lifecycle.resume import resume_if_needed
from intent_pipelines.lifecycle.rollback import roll_back
from intent_pipelines.plan import render_call
from intent_pipelines.rendering import evaluate
from intent_pipelines.retries import FailureClass, RetryOn, should_retry
from intent_pipelines.settings import settings
from intent_pipelines.spec.models import IntentSpec, StepSpec
from intent_pipelines.status import Reason, RequestStatus, StepStatus


class RetryStep(Exception):
    """The step failed transiently and should run again after ``wait_s`` seconds."""

    def __init__(self, error: StepFailed, wait_s: float, max_attempts: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.wait_s = wait_s
        self.max_attempts = max_attempts


@dataclass(frozen=True)
class StepRun:
    """One attempt of one step, as the failure paths need to record it."""

    rec: Recorder
    spec: IntentSpec
    row: Mapping[str, Any]
    step: StepSpec
    run_id: str
    attempt: int
    started: float

    @property
    def request_id(self) -> str:
        return str(self.row["request_id"])

    def event(self, event: ev.Event) -> None:
        self.rec.event(event, self.request_id, self.run_id)

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


def run_step(rec: Recorder, request_id: str, step_id: str, *, run_id: str, attempt: int = 1,
             owner: Owner | None = None) -> Outputs:
    """Run one step (attempt is 1-based). Raises RetryStep, or the final error after rollback.

    Any error on the way (a template that cannot render, an unknown app, a bug in an action)
    fails the request the same way a failing command does: nothing is left RUNNING.
    """
    row = rec.request(request_id)
    resume_if_needed(rec, row, run_id, owner)
    state = rec.store.step_state(request_id, step_id)
    if state and state["status"] == StepStatus.SUCCEEDED.value:
        return dict(state["outputs"])  # already done in an earlier run of this request
    spec = rec.spec_of(row)
    step = spec.step(step_id)
    emit = print_line(step_id)
    rec.set_phase(request_id, run_id, f"STEP {step_id}", attempt=attempt)
    run = StepRun(rec, spec, row, step, run_id, attempt, time.monotonic())
    beat: Heartbeat | None = None
    try:
        if rec.store.cancel_request_of(request_id) is not None:
            raise StepStopped(f"{spec.name} was stopped before step {step_id} began",
                              hint=f"See `intent explain {request_id}`.")
        ns = rec.namespace(spec, row)
        ctx = rec.action_context(request_id, step_id, emit, dry_run=row["dry_run"],
                                 timeout_s=_step_timeout(spec, row, step.timeout), secrets=secret_values(spec, ns),
                                 inherit=(*spec.inherit_env, *step.inherit_env), sandbox=spec.sandbox_for(step))
        if not _step_enabled(step, ns):
            rec.store.set_step(request_id, step_id, StepStatus.SKIPPED, run_id=run_id)
            run.event(ev.StepSkip(step=step_id, reason="when is false"))
            emit("skipped: `when` is false")
            return {}
        call = render_call(step, ns, where=f"steps.{step_id}")
        if step.gate == "manual" and not row["dry_run"]:
            pass_gate(rec, row, step, run_id)
        if row["dry_run"]:
            gate = " after a manual approval" if step.gate == "manual" else ""
            emit(f"dry run: would{gate} {preview(call, ctx)}")
            rec.store.set_step(request_id, step_id, StepStatus.SKIPPED, run_id=run_id)
            return {}
        fence(rec, row, f"step {step_id}")
        rec.store.set_step(request_id, step_id, StepStatus.RUNNING, run_id=run_id, attempt=attempt)
        run.event(ev.StepStart(step=step_id, attempt=attempt, action=call.describe(),
                               env=given_names({**call.env, OUTPUT_FILE_ENV: ""}, ctx.inherit) or None))
        beat = Heartbeat(rec, request_id, row["lock_key"], ctx, run_id=run_id)
        with beat:
            outputs = execute(call, ctx)
        rec.store.clear_step_process(request_id)
    except IntentError as exc:
        error = exc
        if isinstance(exc, StepStopped) and beat is not None and beat.lost:
            error = LeaseLost(f"step {step_id} was stopped: the lease on lock {row['lock_key']} could not be "
                              "renewed", hint="See `intent status` for who holds it now; resume when it is free.")
        _step_failed(run, error)
        if error is exc:
            raise
        raise error from None
    except Exception as exc:  # a bug in an action must still end the request and free the lock
        error = StepFailed(f"internal error in step {step_id}: {type(exc).__name__}: {exc}",
                           hint="This is a bug; see the step log and report it.", internal=True)
        _step_failed(run, error)
        raise error from exc
    except BaseException:
        # Dagster terminating the run (UI "Terminate", `intent stop`) interrupts the op; the
        # runner has already killed the command's process group, so end the request as stopped.
        _stopped(run, StepStopped(f"step {step_id} was interrupted by run termination"))
        raise
    rec.store.set_step(request_id, step_id, StepStatus.SUCCEEDED, run_id=run_id, attempt=attempt, outputs=outputs)
    run.event(ev.StepComplete(step=step_id, attempt=attempt, outputs=sorted(outputs), duration_ms=run.elapsed_ms()))
    return outputs


def _step_enabled(step: StepSpec, ns: Mapping[str, Any]) -> bool:
    """`when` decides; a conditional gate can also be switched on with INTENT_ENABLE_<STEP_ID>."""
    if step.gate == "conditional" and os.environ.get(f"INTENT_ENABLE_{step.id.upper()}", "") not in ("", "0"):
        return True
    return step.when is None or evaluate(step.when, ns, where=f"steps.{step.id}.when")


def _step_timeout(spec: IntentSpec, row: Mapping[str, Any], step_timeout: float | None) -> float | None:
    """The step's timeout, capped by what is left of the request's `policy.timeout`."""
    if spec.policy.timeout is None:
        return step_timeout
    left = spec.policy.timeout - (time.time() - float(row["started_at"]))
    if left <= 0:
        raise StepTimeout(f"{spec.name} ran past its policy timeout of {spec.policy.timeout:g}s",
                          hint="Raise policy.timeout or find out what is slow.")
    return left if step_timeout is None else min(step_timeout, left)


def _step_failed(run: StepRun, error: IntentError) -> None:
    """Retry a retryable failure (raises RetryStep); otherwise record it, roll back, end the request."""
    if isinstance(error, ApprovalRequired):
        return  # not a failure: the request waits in NEEDS_APPROVAL
    if isinstance(error, StepStopped):
        _stopped(run, error)
        return
    rec, step, request_id = run.rec, run.step, run.request_id
    transient = isinstance(error, StepFailed) and error.transient
    failure = FailureClass.TRANSIENT if transient else FailureClass.DETERMINISTIC
    retryable = isinstance(error, StepFailed) and should_retry(step.retry.on, failure) \
        and not _is_timeout_without_retry(error, step)
    if retryable and run.attempt < step.retry.attempts:
        assert isinstance(error, StepFailed)
        wait_s = step.retry.backoff_policy().wait_before(run.attempt)
        if run.row["lock_key"]:
            # Keep the lease through the backoff wait, when no op is running to renew it.
            rec.store.renew_lock(run.row["lock_key"], request_id=request_id, ttl_s=settings().lock_ttl_s + wait_s)
        run.event(ev.StepRetry(step=step.id, attempt=run.attempt, error=error.message,
                               failure_class=failure.value, wait_ms=int(wait_s * 1000)))
        print_line(step.id)(f"attempt {run.attempt}/{step.retry.attempts} failed ({failure.value}); "
                            f"retrying in {wait_s:.1f}s")
        raise RetryStep(error, wait_s, step.retry.attempts) from None
    detail = error.detail if isinstance(error, StepFailed) else None
    rec.store.set_step(request_id, step.id, StepStatus.FAILED, run_id=run.run_id, attempt=run.attempt)
    run.event(ev.StepFail(
        step=step.id, attempt=run.attempt, error=error.message, failure_class=failure.value,
        error_class=type(error).__name__, exit_code=detail.exit_code if detail else None,
        duration_ms=run.elapsed_ms()))
    undone = roll_back(rec, run.spec, request_id, run.run_id)
    own = error.ending()[0]
    if own is RequestStatus.REFUSED:
        own = RequestStatus.FAILED  # past preflight, earlier steps may have run: a failure, not a refusal
    # Undone steps make the status ROLLED_BACK (or ROLLBACK_FAILED) whatever the cause; the reason keeps it.
    status = undone if undone is not RequestStatus.FAILED else own
    rec.end(request_id, run.run_id, Ending.of(error, step=step.id, status=status))


def _stopped(run: StepRun, error: StepStopped) -> None:
    """An operator or the watchdog stopped the step: no retry and no rollback (they decide next)."""
    rec, step, request_id = run.rec, run.step, run.request_id
    cancel = rec.store.cancel_request_of(request_id)
    status = cancel[1] if cancel else error.status
    rec.store.set_step(request_id, step.id, StepStatus.FAILED, run_id=run.run_id, attempt=run.attempt)
    run.event(ev.StepFail(
        step=step.id, attempt=run.attempt, error=error.message, failure_class="stopped",
        error_class=type(error).__name__, exit_code=error.detail.exit_code, duration_ms=run.elapsed_ms()))
    requested_at = rec.request(request_id)["cancel_requested_at"]
    if cancel is not None:  # a stop someone asked for (a lost lease was nobody's request)
        run.event(ev.RunCancelled(step=step.id, status=status.value,
                                  latency_ms=int((time.time() - requested_at) * 1000) if requested_at else 0))
    ending = Ending.of(error, step=step.id, status=status)
    if status is RequestStatus.WATCHDOG_STUCK:
        ending = dataclasses.replace(ending, reason=Reason.STUCK)
    rec.end(request_id, run.run_id, ending)


def _is_timeout_without_retry(error: StepFailed, step: StepSpec) -> bool:
    # A timeout is retried only when the step opts into retrying any failure.
    return isinstance(error, StepTimeout) and step.retry.on is not RetryOn.ANY
