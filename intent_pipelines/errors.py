"""The one error hierarchy of intent_pipelines, with the CLI exit code each error maps to.

    IntentError                          every error a user can meet; carries ``exit_code`` and a hint
    ├── Refused                          nothing ran: fix the input or the situation and ask again
    │   ├── UsageError            (2)    bad command-line usage or a malformed ``-p k=v``
    │   ├── SpecError             (3)    an intent file is invalid (file, line, field)
    │   ├── UnknownIntentError    (3)    no intent by that name or alias
    │   ├── ParamError            (4)    a param is missing, of the wrong type or out of its schema
    │   ├── TemplateError         (4)    a template cannot be rendered (undefined name, bad syntax)
    │   ├── FleetError            (4)    the app is not in fleet.yaml, or fleet.yaml is invalid
    │   ├── PolicyDenied          (5)    a policy deny rule matched
    │   ├── ConfirmationRequired  (6)    the policy asks for a confirmation
    │   └── LockBusy              (7)    the lock target is held by another live request
    ├── RunFailed                        it ran and did not finish as asked: look at the app and the logs
    │   ├── StepFailed            (10)   a step failed for good (deterministic, or retries exhausted)
    │   │   ├── StepTimeout       (11)   a step ran past its timeout and was killed
    │   │   └── StepStopped       (15)   an operator (or the watchdog) stopped the step
    │   ├── RolledBack            (12)   a step failed and the completed steps were rolled back
    │   ├── RollbackFailed        (13)   a step failed and a rollback also failed: look at it now
    │   ├── VerifyFailed          (14)   the steps ran but a verify check did not pass
    │   ├── GateRejected          (17)   a manual gate was rejected (`intent reject`)
    │   └── Crashed               (18)   the process running the request died before ending it
    ├── Waiting                          a person must decide before it goes on
    │   └── ApprovalRequired      (16)   a manual gate waits for `intent approve`
    ├── StoreError                (8)    the state store cannot be reached or is inconsistent
    │   ├── StorageFull                  no space left for the state: free some, then resume the request
    │   └── StoreDamaged                 the store's file is damaged or gone: restore it, never write over it
    └── AuditBroken               (20)   the audit chain or a checkpoint was tampered with

Each error class also names the request status and reason it ends a request with (status.py), so
the outcome of a request follows from the error that ended it, in one place.

Exit code 0 means success; 1 is reserved for unexpected internal errors (a bug: please report).
Every error message is one line: what went wrong, then what to do next.
"""

from dataclasses import dataclass, field
from typing import ClassVar

from intent_pipelines.status import Reason, RequestStatus


class IntentError(Exception):
    """Base of every error a user can meet; ``hint`` says what to do next."""

    exit_code: ClassVar[int] = 1
    # How a request that this error ends is recorded (see ending()).
    status: ClassVar[RequestStatus] = RequestStatus.FAILED
    reason: ClassVar[Reason] = Reason.INTERNAL_ERROR

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.request_id = ""  # the request this error was recorded as, when it was (a refusal)

    def ending(self) -> tuple[RequestStatus, Reason]:
        """The status and reason of a request this error ends."""
        return self.status, self.reason

    def one_line(self) -> str:
        """Render the error as the single line the CLI prints."""
        text = self.message.rstrip(".")
        return f"{text}. {self.hint}" if self.hint else f"{text}."


class Refused(IntentError):
    """Nothing ran: the request was refused before its first step."""

    status = RequestStatus.REFUSED
    reason = Reason.BAD_INPUT


class RunFailed(IntentError):
    """The request ran and did not finish as asked."""

    status = RequestStatus.FAILED
    reason = Reason.STEP_FAILED


class Waiting(IntentError):
    """The request waits for a person's decision."""

    status = RequestStatus.NEEDS_APPROVAL
    reason = Reason.APPROVAL


class UsageError(Refused):
    """The command line is malformed."""

    exit_code = 2


class SpecError(Refused):
    """An intent file is invalid; names the file, line and field."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        line: int | None = None,
        field_path: str = "",
        hint: str = "",
    ) -> None:
        where = path + (f":{line}" if line else "")
        prefix = f"{where}: " if where else ""
        subject = f"{field_path}: " if field_path else ""
        super().__init__(f"{prefix}{subject}{message}", hint=hint)
        self.path = path
        self.line = line
        self.field_path = field_path


class UnknownIntentError(Refused):
    """No intent has that name or alias."""

    exit_code = 3


class ParamError(Refused):
    """A param does not satisfy its schema; nothing was executed."""

    exit_code = 4


class TemplateError(Refused):
    """A template cannot be rendered."""

    exit_code = 4


class FleetError(Refused):
    """The fleet file is invalid or does not list the app."""

    exit_code = 4


class PolicyDenied(Refused):
    """A policy deny rule matched; the request was refused before anything ran."""

    exit_code = 5
    reason = Reason.POLICY


class ConfirmationRequired(Refused):
    """The policy requires an explicit confirmation."""

    exit_code = 6
    reason = Reason.CONFIRMATION


class LockBusy(Refused):
    """Another live request holds the lock."""

    exit_code = 7
    reason = Reason.LOCK_BUSY


class StoreError(IntentError):
    """The state store is unreachable or inconsistent."""

    exit_code = 8


class StorageFull(StoreError):
    """No space is left where the state is kept (the store, Dagster's storage, step logs).

    Nothing recorded before is lost; once space is freed, the request cut short is CRASHED and
    `intent resume` continues it.
    """


class StoreDamaged(StoreError):
    """The store's SQLite file is damaged, or gone while its chain left traces: nothing is written to it.

    Restore it from a copy (or move it aside on purpose); writing on would extend a chain that can
    no longer be proven, or start a second one at seq 0.
    """


@dataclass(frozen=True)
class FailureDetail:
    """What the action runner saw when a step failed: enough to act without opening logs."""

    command: str = ""
    exit_code: int | None = None
    stderr_tail: str = ""
    log_path: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class StepFailed(RunFailed):
    """A step failed; ``transient`` says whether a retry may help."""

    exit_code = 10

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        detail: FailureDetail | None = None,
        hint: str = "",
        internal: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.transient = transient
        self.detail = detail or FailureDetail()
        # A bug in an action or check rather than a failing command.
        self.internal = internal

    def ending(self) -> tuple[RequestStatus, Reason]:
        if self.internal:
            return self.status, Reason.INTERNAL_ERROR
        return self.status, Reason.RETRIES_EXHAUSTED if self.transient else self.reason


class StepTimeout(StepFailed):
    """A step exceeded its timeout and its process group was terminated."""

    exit_code = 11
    reason = Reason.TIMEOUT

    def ending(self) -> tuple[RequestStatus, Reason]:
        return self.status, self.reason


class StepStopped(StepFailed):
    """An operator (intent stop) or the watchdog stopped the step; its process group was terminated."""

    exit_code = 15
    status = RequestStatus.STOPPED_BY_OPERATOR
    reason = Reason.OPERATOR_STOP

    def ending(self) -> tuple[RequestStatus, Reason]:
        return self.status, self.reason


class LeaseLost(StepStopped):
    """The lock lease could not be renewed (taken over or freed); the step was stopped, nothing rolled back."""

    exit_code = 19
    status = RequestStatus.FAILED
    reason = Reason.LEASE_LOST


class ApprovalRequired(Waiting):
    """A manual gate waits for a person: `intent approve REQUEST --step S --reason ...`, then re-execute."""

    exit_code = 16


class GateRejected(RunFailed):
    """A manual gate was rejected; the request ends for good."""

    exit_code = 17
    status = RequestStatus.REJECTED
    reason = Reason.REJECTED


class RolledBack(RunFailed):
    """The request failed and its completed steps were rolled back."""

    exit_code = 12
    status = RequestStatus.ROLLED_BACK


class RollbackFailed(RunFailed):
    """The request failed and at least one rollback failed too."""

    exit_code = 13
    status = RequestStatus.ROLLBACK_FAILED


class VerifyFailed(RunFailed):
    """A verify check failed after the steps ran."""

    exit_code = 14
    reason = Reason.VERIFY_FAILED


class Crashed(RunFailed):
    """The process running the request died before ending it; resume or replay the request."""

    exit_code = 18
    status = RequestStatus.CRASHED
    reason = Reason.CRASH


class AuditBroken(IntentError):
    """The audit chain failed verification: a record or checkpoint was changed, removed or added."""

    exit_code = 20


def _leaves(cls: type[IntentError]) -> list[type[IntentError]]:
    """The classes under ``cls`` that carry an exit code of their own, in definition order."""
    found: list[type[IntentError]] = []
    for sub in cls.__subclasses__():
        if "exit_code" in vars(sub):
            found.append(sub)
        found.extend(_leaves(sub))
    return found


def exit_code_table() -> list[tuple[int, str, str]]:
    """Return (code, error, meaning) rows for docs and ``intent --help``, ordered by code."""
    rows: list[tuple[int, str, str]] = [(0, "-", "success"), (1, "-", "internal error (a bug)")]
    leaves = [c for c in _leaves(IntentError) if c.__module__ == __name__]
    for cls in sorted(leaves, key=lambda c: c.exit_code):
        rows.append((cls.exit_code, cls.__name__, (cls.__doc__ or "").strip().splitlines()[0].rstrip(".")))
    return rows
