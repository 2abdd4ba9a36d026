"""Every kind of audit event with its fields: the one vocabulary writers emit and readers parse.

An event is a frozen dataclass; its ``KIND`` is the record's ``kind`` and its fields are the body
(``body()``; ``None`` fields are left out). ``parse(kind, data)`` turns a stored body back into its
event, tolerating older chains: unknown fields are ignored and missing ones take their defaults, so
a record written before a field existed still reads. The record format and hash are unchanged
(audit/record.py): these classes only decide what goes into ``body``.

Field names are part of the format: the Parquet export copies some of them into typed columns
(audit/export.py) and the metrics read those columns.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar


@dataclass(frozen=True)
class Event:
    """Base of every audit event."""

    KIND: ClassVar[str] = ""

    def body(self) -> dict[str, Any]:
        """The canonical-JSON body: each field under its stored key; fields that are None are omitted."""
        return {_key(f): getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


# --- the request ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RequestStart(Event):
    """A request passed validation and policy: what runs, with what, asked by whom and why."""

    KIND: ClassVar[str] = "request.start"
    intent: str = ""
    version: str = ""
    intent_sha256: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    plan_hash: str = ""
    who: str = ""
    reason: str = ""  # the operator's reason for the change (free text)
    dry_run: bool = False
    confirmed: bool = False
    lock: str | None = None
    replay_of: str | None = None
    replay_mode: str | None = None


@dataclass(frozen=True)
class RequestRefused(Event):
    """A request was refused in preflight; params are not recorded (they did not validate)."""

    KIND: ClassVar[str] = "request.refused"
    intent: str = ""
    intent_sha256: str = ""
    who: str = ""
    reason: str = ""  # the operator's reason for the change (free text)
    dry_run: bool = False
    error: str = ""
    error_class: str = ""


@dataclass(frozen=True)
class RequestResume(Event):
    """A re-execution continues a request that had ended resumably."""

    KIND: ClassVar[str] = "request.resume"
    previous_run_id: str = ""
    previous_status: str | None = None


@dataclass(frozen=True)
class RequestComplete(Event):
    """A request ended: the one fact every surface derives its outcome from (lifecycle/finish.py).

    ``reason`` is the reason category (status.Reason), ``step`` the step, check or phase the ending
    is about, ``signature`` the failure signature (alerts/signatures.py) and ``by`` who ended it.
    A resumed request has one of these per ending; the last one is its outcome.
    """

    KIND: ClassVar[str] = "request.complete"
    status: str = ""
    reason: str | None = None
    error: str = ""
    error_class: str | None = None
    exit_code: int = 0
    step: str | None = None
    signature: str | None = None
    by: str | None = None
    duration_ms: int = 0
    intent: str | None = None
    dry_run: bool | None = None


@dataclass(frozen=True)
class IntentFile(Event):
    """The exact intent file a request ran with (recorded once per content hash)."""

    KIND: ClassVar[str] = "intent.file"
    intent: str = ""
    intent_sha256: str = ""
    content: str = ""


@dataclass(frozen=True)
class PhaseChange(Event):
    """The request entered a phase (PREFLIGHT, STEP <id>, VERIFY, ROLLBACK)."""

    KIND: ClassVar[str] = "phase.change"
    phase: str = ""
    attempt: int | None = None


# --- steps ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepStart(Event):
    """A step's attempt began; ``action`` is the rendered call, secrets masked."""

    KIND: ClassVar[str] = "step.start"
    step: str = ""
    attempt: int = 1
    action: str = ""
    env: list[str] | None = None  # variables given beyond the base environment, by name only


@dataclass(frozen=True)
class StepSkip(Event):
    """A step did not run (its ``when`` was false)."""

    KIND: ClassVar[str] = "step.skip"
    step: str = ""
    reason: str = ""


@dataclass(frozen=True)
class StepRetry(Event):
    """A step's attempt failed transiently and will run again after ``wait_ms``."""

    KIND: ClassVar[str] = "step.retry"
    step: str = ""
    attempt: int = 1
    error: str = ""
    # "class" is the retry taxonomy (retries.FailureClass): transient or deterministic.
    failure_class: str = field(default="", metadata={"key": "class"})
    wait_ms: int = 0


@dataclass(frozen=True)
class StepComplete(Event):
    """A step succeeded; ``outputs`` names its outputs (values stay in the store)."""

    KIND: ClassVar[str] = "step.complete"
    step: str = ""
    attempt: int = 1
    outputs: list[str] = field(default_factory=list)
    duration_ms: int = 0


@dataclass(frozen=True)
class StepFail(Event):
    """A step failed for good (or was stopped); ``exit_code`` is the command's own exit code."""

    KIND: ClassVar[str] = "step.fail"
    step: str = ""
    attempt: int = 1
    error: str = ""
    failure_class: str = field(default="", metadata={"key": "class"})
    error_class: str = ""
    exit_code: int | None = None
    duration_ms: int = 0


@dataclass(frozen=True)
class VerifyPass(Event):
    """A verify check passed."""

    KIND: ClassVar[str] = "verify.pass"
    check: str = ""


@dataclass(frozen=True)
class VerifyFail(Event):
    """A verify check failed."""

    KIND: ClassVar[str] = "verify.fail"
    check: str = ""
    error: str = ""


@dataclass(frozen=True)
class RollbackStart(Event):
    """A completed step's rollback began."""

    KIND: ClassVar[str] = "rollback.start"
    step: str = ""


@dataclass(frozen=True)
class RollbackComplete(Event):
    """A step was rolled back."""

    KIND: ClassVar[str] = "rollback.complete"
    step: str = ""


@dataclass(frozen=True)
class RollbackFail(Event):
    """A step's rollback failed: the app needs a person."""

    KIND: ClassVar[str] = "rollback.fail"
    step: str = ""
    error: str = ""


# --- gates ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GateApprovalRequired(Event):
    """A manual gate stopped the request until a person decides."""

    KIND: ClassVar[str] = "gate.approval_required"
    step: str = ""


@dataclass(frozen=True)
class GateApproved(Event):
    """A person approved a manual gate."""

    KIND: ClassVar[str] = "gate.approved"
    step: str = ""
    who: str = ""
    reason: str = ""


@dataclass(frozen=True)
class GateRejectedEvent(Event):
    """A person rejected a manual gate."""

    KIND: ClassVar[str] = "gate.rejected"
    step: str = ""
    who: str = ""
    reason: str = ""


@dataclass(frozen=True)
class GatePassed(Event):
    """An approved gate let the request through."""

    KIND: ClassVar[str] = "gate.passed"
    step: str = ""
    approved_by: str = ""


# --- locks ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LockAcquire(Event):
    """The request took its target's lock."""

    KIND: ClassVar[str] = "lock.acquire"
    lock: str = ""


@dataclass(frozen=True)
class LockBusyEvent(Event):
    """The target's lock was held by another live request."""

    KIND: ClassVar[str] = "lock.busy"
    lock: str = ""
    error: str = ""
    holder: str | None = None


@dataclass(frozen=True)
class LockRelease(Event):
    """The request's lock was released as it ended."""

    KIND: ClassVar[str] = "lock.release"
    lock: str = ""
    by: str | None = None


@dataclass(frozen=True)
class LockLost(Event):
    """The request's lease could not be renewed: someone else holds (or freed) its lock."""

    KIND: ClassVar[str] = "lock.lost"
    lock: str = ""
    step: str = ""
    holder: str | None = None


@dataclass(frozen=True)
class LockUnlock(Event):
    """An operator released a lock (`intent unlock`)."""

    KIND: ClassVar[str] = "lock.unlock"
    lock: str = ""
    forced: bool = False
    holder_alive: bool = False
    why: str = ""
    reason: str = ""
    who: str = ""


# --- stopping, watching --------------------------------------------------------------------------

@dataclass(frozen=True)
class RunCancelRequested(Event):
    """Someone asked a request (or a queued run) to stop."""

    KIND: ClassVar[str] = "run.cancel_requested"
    who: str = ""
    reason: str = ""
    grace_ms: int | None = None
    status: str | None = None
    queued: bool | None = None


@dataclass(frozen=True)
class RunCancelled(Event):
    """A stop took effect; ``latency_ms`` since it was asked."""

    KIND: ClassVar[str] = "run.cancelled"
    status: str = ""
    latency_ms: int = 0
    step: str | None = None
    by: str | None = None
    killed: bool | None = None
    queued: bool | None = None


@dataclass(frozen=True)
class WatchdogStuck(Event):
    """The watchdog found the request stuck and collected forensics."""

    KIND: ClassVar[str] = "watchdog.stuck"
    why: str = ""
    phase: str = ""
    heartbeat_age_ms: int = 0
    forensics: str = ""
    pgid: int | None = None
    host: str | None = None
    run_status: str = ""


@dataclass(frozen=True)
class OwnerDead(Event):
    """The process running the request is gone from its host (pid and start time checked)."""

    KIND: ClassVar[str] = "request.owner_dead"
    host: str = ""
    pid: int = 0
    seen_by: str = ""


E = TypeVar("E", bound=Event)
KINDS: dict[str, type[Event]] = {cls.KIND: cls for cls in (
    RequestStart, RequestRefused, RequestResume, RequestComplete, IntentFile, PhaseChange,
    StepStart, StepSkip, StepRetry, StepComplete, StepFail, VerifyPass, VerifyFail,
    RollbackStart, RollbackComplete, RollbackFail,
    GateApprovalRequired, GateApproved, GateRejectedEvent, GatePassed,
    LockAcquire, LockBusyEvent, LockRelease, LockLost, LockUnlock,
    RunCancelRequested, RunCancelled, WatchdogStuck, OwnerDead)}


def _key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key", f.name))


def parse(kind: str, data: dict[str, Any]) -> Event | None:
    """The typed event of a stored body, or None for a kind this version does not know."""
    cls = KINDS.get(kind)
    if cls is None:
        return None
    values = {f.name: data[_key(f)] for f in dataclasses.fields(cls) if _key(f) in data}
    return cls(**values)


def parse_as(cls: type[E], data: dict[str, Any]) -> E:
    """``data`` read as an event of ``cls`` (for a reader that already filtered by kind)."""
    values = {f.name: data[_key(f)] for f in dataclasses.fields(cls) if _key(f) in data}
    return cls(**values)
