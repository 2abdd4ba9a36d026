"""What a failed run was: its phase, step, error, exit code and reason category, read from the store.

Everything comes from the request row and the audit chain the engine wrote, so an alert can be
rebuilt at any time (a redelivered sensor tick, `intent failures`) and says the same thing.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, assert_never

from intent_pipelines.alerts.scrub import scrub
from intent_pipelines.audit.record import AuditRecord
from intent_pipelines.errors import exit_code_table
from intent_pipelines.status import RequestStatus
from intent_pipelines.store import StateStore

# Dagster run statuses the alerting reacts to.
RUN_FAILURE = "FAILURE"
RUN_CANCELED = "CANCELED"


class Reason(str, Enum):
    """Why a request failed, in the words an operator decides the next action by."""

    BAD_INPUT = "bad_input"
    POLICY = "policy"
    LOCK = "lock"
    APPROVAL = "approval"
    STEP_FAILED = "step_failed"
    RETRIES_EXHAUSTED = "retries_exhausted"
    TIMEOUT = "timeout"
    CRASH = "crash"
    OPERATOR_STOP = "operator_stop"

    @property
    def label(self) -> str:
        """A short human description."""
        match self:
            case Reason.BAD_INPUT:
                return "bad input (params, fleet or intent file)"
            case Reason.POLICY:
                return "refused by policy"
            case Reason.LOCK:
                return "lock held by another request"
            case Reason.APPROVAL:
                return "waiting for (or refused) a manual approval"
            case Reason.STEP_FAILED:
                return "deterministic step failure"
            case Reason.RETRIES_EXHAUSTED:
                return "transient failure, retries exhausted"
            case Reason.TIMEOUT:
                return "timeout"
            case Reason.CRASH:
                return "crash (the run ended without the engine recording why)"
            case Reason.OPERATOR_STOP:
                return "stopped by an operator or the watchdog"
            case _:
                assert_never(self)


# Exit code (errors.py) -> reason, for failures that left no step.fail record.
_BY_EXIT_CODE: dict[int, Reason] = {
    2: Reason.BAD_INPUT, 3: Reason.BAD_INPUT, 4: Reason.BAD_INPUT,
    5: Reason.POLICY, 6: Reason.POLICY,
    7: Reason.LOCK,
    10: Reason.STEP_FAILED, 12: Reason.STEP_FAILED, 13: Reason.STEP_FAILED, 14: Reason.STEP_FAILED,
    11: Reason.TIMEOUT,
    15: Reason.OPERATOR_STOP,
    16: Reason.APPROVAL, 17: Reason.APPROVAL,
}
_EXIT_CODE_OF = {name: code for code, name, _ in exit_code_table() if name != "-"}
_NAME_OF_CODE: dict[int, str] = {}
for _code, _name, _ in exit_code_table():
    _NAME_OF_CODE.setdefault(_code, _name)


@dataclass(frozen=True)
class FailureFacts:
    """Everything the alert line, the report and the forensics say about one failed run."""

    request_id: str
    run_id: str
    intent: str
    run_status: str  # the Dagster run status: FAILURE or CANCELED
    request_status: str  # the request row's status ("" when the engine recorded nothing)
    phase: str  # PREFLIGHT, STEP <id>, VERIFY, or LAUNCH when the engine never ran
    step: str
    error_class: str
    exit_code: int | None  # the intent exit code (errors.py table)
    process_exit_code: int | None  # the failing command's own exit code, when there was one
    message: str  # one line, secrets masked
    error: str  # the step's error without the hint: what the signature is computed from
    command: str
    reason: Reason
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


def _last(records: list[AuditRecord], kind: str) -> dict[str, Any] | None:
    found = [r for r in records if r.kind == kind]
    return found[-1].data() if found else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _reason(row: Mapping[str, Any] | None, run_status: str, fail: Mapping[str, Any] | None,
            verify_fail: Mapping[str, Any] | None, exit_code: int | None) -> Reason:
    status = row["status"] if row else ""
    if row is None or status == RequestStatus.RUNNING.value:
        # The run ended but the request did not: terminated before the engine could say, or a dead worker.
        return Reason.OPERATOR_STOP if run_status == RUN_CANCELED else Reason.CRASH
    if status in (RequestStatus.STOPPED_BY_OPERATOR.value, RequestStatus.WATCHDOG_STUCK.value):
        return Reason.OPERATOR_STOP
    if status == RequestStatus.NEEDS_APPROVAL.value:
        return Reason.APPROVAL
    if fail is not None:
        error_class = str(fail.get("error_class", ""))
        if str(fail.get("error", "")).startswith("internal error"):
            return Reason.CRASH
        code = _EXIT_CODE_OF.get(error_class)
        if code is not None and code != 10:
            return _BY_EXIT_CODE.get(code, Reason.STEP_FAILED)
        return Reason.RETRIES_EXHAUSTED if fail.get("class") == "transient" else Reason.STEP_FAILED
    if verify_fail is not None:
        return Reason.STEP_FAILED
    return _BY_EXIT_CODE.get(exit_code or 1, Reason.CRASH)


def _phase(run_records: list[AuditRecord], fail: Mapping[str, Any] | None,
           verify_fail: Mapping[str, Any] | None, row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "LAUNCH"
    if fail is not None:
        return f"STEP {fail.get('step', '')}"
    if verify_fail is not None:
        return "VERIFY"
    phases = [str(r.data().get("phase")) for r in run_records if r.kind == "phase.change"]
    phases = [p for p in phases if p != "ROLLBACK"]
    return phases[-1] if phases else "PREFLIGHT"


def read_failure(store: StateStore, *, run_id: str, request_id: str, intent: str = "",
                 run_status: str = RUN_FAILURE, fallback_message: str = "") -> FailureFacts:
    """The facts of one failed (or canceled) run of ``request_id``.

    ``fallback_message`` (Dagster's own failure message) is used when the engine recorded no error,
    e.g. when the run worker died or the run was terminated before the preflight step.
    """
    row = store.request(request_id)
    records = list(store.audit_records(request_id=request_id)) if row is not None else []
    run_records = [r for r in records if r.run_id == run_id] or records
    fail = _last(run_records, "step.fail")
    verify_fail = _last(run_records, "verify.fail")
    refused = _last(run_records, "request.refused")
    lock_busy = _last(run_records, "lock.busy")
    complete = _last(run_records, "request.complete")

    exit_code: int | None = None
    if row is not None and row["status"] != RequestStatus.RUNNING.value:
        exit_code = _int(row["exit_code"])
    elif complete is not None:
        exit_code = _int(complete.get("exit_code"))
    if row is not None and row["status"] == RequestStatus.NEEDS_APPROVAL.value and not exit_code:
        exit_code = 16  # the gate raises ApprovalRequired, which leaves the row's exit code alone

    message = ""
    if row is not None and row["status"] != RequestStatus.RUNNING.value:
        message = str(row["error"] or "")
    if not message and complete is not None:
        message = str(complete.get("error", ""))
    if not message and fail is not None:
        message = str(fail.get("error", ""))
    if not message:
        message = fallback_message.strip().splitlines()[0] if fallback_message.strip() else (
            "the run was canceled" if run_status == RUN_CANCELED else "the run failed")

    step, error_class, error, command = "", "", "", ""
    attempt: int | None = None
    gate_step = ""
    if fail is not None:
        step, error_class = str(fail.get("step", "")), str(fail.get("error_class", ""))
        error, attempt = str(fail.get("error", "")), _int(fail.get("attempt"))
        starts = [r.data() for r in run_records if r.kind == "step.start" and r.data().get("step") == step]
        command = str(starts[-1].get("action", "")) if starts else ""
    elif verify_fail is not None:
        step, error_class, error = f"verify.{verify_fail.get('check', '')}", "VerifyFailed", \
            str(verify_fail.get("error", ""))
    elif refused is not None:
        step, error_class, error = "preflight", str(refused.get("error_class", "")), str(refused.get("error", ""))
    elif lock_busy is not None:
        step, error_class, error = "preflight", "LockBusy", str(lock_busy.get("error", ""))
    elif row is not None and row["status"] == RequestStatus.NEEDS_APPROVAL.value:
        waiting = _last(run_records, "gate.approval_required")
        gate_step = str(waiting.get("step", "")) if waiting else ""
        step, error_class = gate_step, "ApprovalRequired"
    if not error_class and exit_code:
        error_class = _NAME_OF_CODE.get(exit_code, "")
    if not step:
        step = "preflight" if row is None or _phase(run_records, None, None, row) == "PREFLIGHT" else ""
    if not error:
        error = message

    reason = _reason(row, run_status, fail, verify_fail, exit_code)
    if error_class == "GateRejected":
        reason = Reason.APPROVAL
    lock_key = str(row["lock_key"] or "") if row is not None else ""
    if lock_busy is not None:
        lock_key = str(lock_busy.get("lock", lock_key))
    holder = store.lock_holder(lock_key) if lock_key and reason is Reason.LOCK else None
    return FailureFacts(
        request_id=request_id, run_id=run_id, intent=(row["intent"] if row is not None else "") or intent,
        run_status=run_status, request_status=row["status"] if row is not None else "",
        phase=_phase(run_records, fail, verify_fail, row), step=step, error_class=error_class,
        exit_code=exit_code, process_exit_code=_int(fail.get("exit_code")) if fail else None,
        message=scrub(message), error=scrub(error), command=scrub(command), reason=reason, attempt=attempt,
        lock_key=lock_key, lock_holder=holder.request_id if holder is not None else "", gate_step=gate_step,
        dry_run=bool(row["dry_run"]) if row is not None else False,
        pgid=_int(row.get("step_pgid")) if row is not None else None,
        steps=store.steps(request_id) if row is not None else [])


def dagster_only_failure(*, run_id: str, request_id: str, intent: str, run_status: str, fallback_message: str,
                         problem: str) -> FailureFacts:
    """The facts when the state store cannot be read: Dagster's message, reason crash (or operator stop)."""
    message = fallback_message.strip().splitlines()[0] if fallback_message.strip() else "the run failed"
    message = f"{message} (the state store could not be read: {problem})"
    reason = Reason.OPERATOR_STOP if run_status == RUN_CANCELED else Reason.CRASH
    return FailureFacts(request_id=request_id, run_id=run_id, intent=intent, run_status=run_status,
                        request_status="", phase="UNKNOWN", step="", error_class="", exit_code=None,
                        process_exit_code=None, message=scrub(message)[:1000], error=scrub(fallback_message)[:300],
                        command="", reason=reason)
