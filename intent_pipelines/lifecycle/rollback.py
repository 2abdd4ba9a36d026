"""Undoing a failed request: the rollbacks of its completed steps, newest first, each attempted."""

from collections.abc import Mapping
from typing import Any

from intent_pipelines.audit import events as ev
from intent_pipelines.errors import IntentError
from intent_pipelines.lifecycle.calls import execute
from intent_pipelines.lifecycle.lease import Heartbeat
from intent_pipelines.lifecycle.recorder import Recorder, print_line, secret_values
from intent_pipelines.plan import render_call
from intent_pipelines.spec.models import IntentSpec
from intent_pipelines.status import RequestStatus, StepStatus


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
        return _undo(rec, spec, undo, ns, request_id, run_id)


def _undo(rec: Recorder, spec: IntentSpec, undo: list[dict[str, Any]], ns: Mapping[str, Any], request_id: str,
          run_id: str) -> RequestStatus:
    status = RequestStatus.ROLLED_BACK
    for state in undo:
        step = spec.step(state["step_id"])
        assert step.rollback is not None
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
