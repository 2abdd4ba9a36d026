"""The last phase: verify checks, then the request ends SUCCEEDED (or rolls back when a check fails)."""

from intent_pipelines.audit import events as ev
from intent_pipelines.errors import IntentError, RollbackFailed, RolledBack, StepFailed, VerifyFailed
from intent_pipelines.lifecycle.calls import execute
from intent_pipelines.lifecycle.finish import Ending
from intent_pipelines.lifecycle.lease import Heartbeat
from intent_pipelines.lifecycle.liveness import Owner
from intent_pipelines.lifecycle.recorder import Recorder, print_line, secret_values
from intent_pipelines.lifecycle.resume import resume_if_needed
from intent_pipelines.lifecycle.rollback import roll_back
from intent_pipelines.plan import render_call
from intent_pipelines.status import RequestStatus


def verify_and_end(rec: Recorder, request_id: str, *, run_id: str, owner: Owner | None = None) -> RequestStatus:
    """Run verify checks, then end the request; a failed check rolls back and raises."""
    row = rec.request(request_id)
    resume_if_needed(rec, row, run_id, owner)
    if row["dry_run"]:
        rec.end(request_id, run_id, Ending(RequestStatus.DRY_RUN))
        return RequestStatus.DRY_RUN
    spec = rec.spec_of(row)
    ns = rec.namespace(spec, row)
    rec.set_phase(request_id, run_id, "VERIFY")
    for check in spec.verify:
        ctx = rec.action_context(request_id, f"verify.{check.id}", print_line(f"verify.{check.id}"),
                                 timeout_s=check.timeout, secrets=secret_values(spec, ns),
                                 inherit=(*spec.inherit_env, *check.inherit_env), sandbox=spec.sandbox_for(check))
        try:
            with Heartbeat(rec, request_id, row["lock_key"], ctx):
                execute(render_call(check, ns, where=f"verify.{check.id}"), ctx)
        except Exception as exc:  # a failing check, or a bug in it, fails the request the same way
            if not isinstance(exc, IntentError):
                exc = StepFailed(f"internal error in check {check.id}: {type(exc).__name__}: {exc}",
                                 internal=True)
            rec.event(ev.VerifyFail(check=check.id, error=ctx.redact(exc.message)), request_id, run_id)
            status = roll_back(rec, spec, request_id, run_id)
            message = f"verify check {check.id!r} failed: {exc.message}"
            outcome: IntentError = VerifyFailed(message, hint="See the step logs.")
            if status is RequestStatus.ROLLED_BACK:
                outcome = RolledBack(f"{message}; rolled back", hint="See the step logs.")
            elif status is RequestStatus.ROLLBACK_FAILED:
                outcome = RollbackFailed(f"{message}; rollback failed too",
                                         hint="Inspect the app now; see the step logs.")
            cause = exc if isinstance(exc, StepFailed) and exc.internal else VerifyFailed(ctx.redact(exc.message))
            rec.end(request_id, run_id, Ending.of(outcome, step=f"verify.{check.id}", status=status, cause=cause))
            raise outcome from None
        rec.event(ev.VerifyPass(check=check.id), request_id, run_id)
    rec.end(request_id, run_id, Ending(RequestStatus.SUCCEEDED))
    return RequestStatus.SUCCEEDED
