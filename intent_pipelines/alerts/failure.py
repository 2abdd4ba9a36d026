"""What an ended request was: status, reason, phase, step, error, exit code, read from its audit events.

The outcome (status, reason, error, signature, step) is the request's ``request.complete`` event,
written once by lifecycle/finish.py; the rest (the command, the gate, the lock holder) comes from
the events before it. So an alert can be rebuilt at any time and says what every other surface says.
"""

from dataclasses import dataclass, field
from typing import Any

from intent_pipelines.alerts.scrub import scrub
from intent_pipelines.audit import events as ev
from intent_pipelines.audit.record import AuditRecord
from intent_pipelines.status import Category, Reason, RequestStatus
from intent_pipelines.store import StateStore

# Dagster run statuses the alerting reacts to.
RUN_FAILURE = "FAILURE"
RUN_CANCELED = "CANCELED"


@dataclass(frozen=True)
class FailureFacts:
    """Everything the alert line, the report and the forensics say about one ending."""

    request_id: str
    run_id: str
    intent: str
    run_status: str  # the Dagster run status, or "" when the request ended inside its run
    request_status: str  # the request's final status (a RequestStatus value)
    phase: str  # PREFLIGHT, STEP <id>, VERIFY, or LAUNCH when the engine never ran
    step: str
    error_class: str
    exit_code: int | None  # the intent exit code (errors.py table)
    process_exit_code: int | None  # the failing command's own exit code, when there was one
    message: str  # one line, secrets masked
    command: str
    reason: Reason
    signature: str = ""
    attempt: int | None = None
    lock_key: str = ""
    lock_holder: str = ""
    gate_step: str = ""
    dry_run: bool = False
    pgid: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rolled_back(self) -> bool:
        return self.request_status in (RequestStatus.ROLLED_BACK.value, RequestStatus.ROLLBACK_FAILED.value)

    @property
    def category(self) -> Category:
        """How to take this ending (a status this version does not know counts as a failure)."""
        try:
            return RequestStatus(self.request_status).category
        except ValueError:
            return Category.FAILURE


def _phase(records: list[AuditRecord], complete: ev.RequestComplete) -> str:
    step = complete.step or ""
    if step == "preflight" or complete.status == RequestStatus.REFUSED.value:
        return "PREFLIGHT"
    if step.startswith("verify."):
        return "VERIFY"
    if step:
        return f"STEP {step}"
    phases = [str(r.data().get("phase")) for r in records if r.kind == ev.PhaseChange.KIND]
    phases = [p for p in phases if p not in ("ROLLBACK", "")]
    return phases[-1] if phases else "PREFLIGHT"


def last_completion(records: list[AuditRecord]) -> ev.RequestComplete | None:
    """The latest ending among ``records`` (a resumed request has one per ending)."""
    found = [r for r in records if r.kind == ev.RequestComplete.KIND]
    return ev.parse_as(ev.RequestComplete, found[-1].data()) if found else None


def _reason(value: str | None) -> Reason:
    try:
        return Reason(value or "")
    except ValueError:
        return Reason.INTERNAL_ERROR


def read_failure(store: StateStore, *, run_id: str, request_id: str, run_status: str = "") -> FailureFacts | None:
    """How ``request_id`` ended in ``run_id`` (its last ending there); None when it has not ended."""
    row = store.request(request_id)
    if row is None:
        return None
    records = list(store.audit_records(request_id=request_id))
    run_records = [r for r in records if r.run_id == run_id] or records
    complete = last_completion(run_records)
    if complete is None:
        return None
    step = complete.step or ""
    fails = [ev.parse_as(ev.StepFail, r.data()) for r in run_records if r.kind == ev.StepFail.KIND]
    fail = next((f for f in reversed(fails) if f.step == step), None)
    command = ""
    if fail is not None:
        starts = [r.data() for r in run_records if r.kind == ev.StepStart.KIND and r.data().get("step") == step]
        command = str(starts[-1].get("action", "")) if starts else ""
    lock_key = str(row["lock_key"] or "")
    busy = [ev.parse_as(ev.LockBusyEvent, r.data()) for r in run_records if r.kind == ev.LockBusyEvent.KIND]
    holder = ""
    if busy:
        lock_key, holder = busy[-1].lock or lock_key, busy[-1].holder or ""
    reason = _reason(complete.reason)
    message = complete.error or ("the run was canceled" if run_status == RUN_CANCELED else "")
    return FailureFacts(
        request_id=request_id, run_id=run_id, intent=str(row["intent"]), run_status=run_status,
        request_status=complete.status, phase=_phase(run_records, complete), step=step,
        error_class=complete.error_class or "", exit_code=complete.exit_code,
        process_exit_code=fail.exit_code if fail is not None else None, message=scrub(message),
        command=scrub(command), reason=reason, signature=complete.signature or "",
        attempt=fail.attempt if fail is not None else None, lock_key=lock_key, lock_holder=holder,
        gate_step=step if reason is Reason.APPROVAL else "", dry_run=bool(row["dry_run"]),
        pgid=row.get("step_pgid"), steps=store.steps(request_id))


def dagster_only_failure(*, run_id: str, request_id: str, intent: str, run_status: str, fallback_message: str,
                         problem: str) -> FailureFacts:
    """The facts when the request left nothing readable: Dagster's message, status CRASHED."""
    message = fallback_message.strip().splitlines()[0] if fallback_message.strip() else "the run failed"
    if problem:
        message = f"{message} ({problem})"
    reason = Reason.OPERATOR_STOP if run_status == RUN_CANCELED else Reason.CRASH
    status = RequestStatus.STOPPED_BY_OPERATOR if run_status == RUN_CANCELED else RequestStatus.CRASHED
    return FailureFacts(request_id=request_id, run_id=run_id, intent=intent, run_status=run_status,
                        request_status=status.value, phase="LAUNCH", step="", error_class="", exit_code=None,
                        process_exit_code=None, message=scrub(message)[:1000], command="", reason=reason)
