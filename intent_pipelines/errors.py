"""The one error hierarchy of intent_pipelines, with the CLI exit code each error maps to.

    IntentError                      every error a user can meet; carries ``exit_code`` and a hint
    ├── UsageError            (2)    bad command-line usage or a malformed ``-p k=v``
    ├── SpecError             (3)    an intent file is invalid (file, line, field)
    ├── UnknownIntentError    (3)    no intent by that name or alias
    ├── ParamError            (4)    a param is missing, of the wrong type or out of its schema
    ├── TemplateError         (4)    a template cannot be rendered (undefined name, bad syntax)
    ├── FleetError            (4)    the app is not in fleet.yaml, or fleet.yaml is invalid
    ├── PolicyDenied          (5)    a policy deny rule matched
    ├── ConfirmationRequired  (6)    the policy asks for ``--confirm``
    ├── LockBusy              (7)    the lock target is held by another live request
    ├── StoreError            (8)    the state store cannot be reached or is inconsistent
    ├── StepFailed            (10)   a step failed for good (deterministic, or retries exhausted)
    │   ├── StepTimeout       (11)   a step ran past its timeout and was killed
    │   └── StepStopped       (15)   an operator (or the watchdog) stopped the step
    ├── ApprovalRequired      (16)   a manual gate waits for `intent approve`
    ├── GateRejected          (17)   a manual gate was rejected (`intent reject`)
    ├── RolledBack            (12)   a step failed and the completed steps were rolled back
    ├── RollbackFailed        (13)   a step failed and a rollback also failed: look at it now
    ├── VerifyFailed          (14)   the steps ran but a verify check did not pass
    └── AuditBroken           (20)   the audit chain or a checkpoint was tampered with

Exit code 0 means success; 1 is reserved for unexpected internal errors (a bug: please report).
Every error message is one line: what went wrong, then what to do next.
"""

from dataclasses import dataclass, field
from typing import ClassVar


class IntentError(Exception):
    """Base of every error a user can meet; ``hint`` says what to do next."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """Render the error as the single line the CLI prints."""
        text = self.message.rstrip(".")
        return f"{text}. {self.hint}" if self.hint else f"{text}."


class UsageError(IntentError):
    """The command line is malformed."""

    exit_code = 2


class SpecError(IntentError):
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


class UnknownIntentError(IntentError):
    """No intent has that name or alias."""

    exit_code = 3


class ParamError(IntentError):
    """A param does not satisfy its schema; nothing was executed."""

    exit_code = 4


class TemplateError(IntentError):
    """A template cannot be rendered."""

    exit_code = 4


class FleetError(IntentError):
    """The fleet file is invalid or does not list the app."""

    exit_code = 4


class PolicyDenied(IntentError):
    """A policy deny rule matched; the request was refused before anything ran."""

    exit_code = 5


class ConfirmationRequired(IntentError):
    """The policy requires an explicit confirmation."""

    exit_code = 6


class LockBusy(IntentError):
    """Another live request holds the lock."""

    exit_code = 7


class StoreError(IntentError):
    """The state store is unreachable or inconsistent."""

    exit_code = 8


@dataclass(frozen=True)
class FailureDetail:
    """What the action runner saw when a step failed: enough to act without opening logs."""

    command: str = ""
    exit_code: int | None = None
    stderr_tail: str = ""
    log_path: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class StepFailed(IntentError):
    """A step failed; ``transient`` says whether a retry may help."""

    exit_code = 10

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        detail: FailureDetail | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.transient = transient
        self.detail = detail or FailureDetail()


class StepTimeout(StepFailed):
    """A step exceeded its timeout and its process group was terminated."""

    exit_code = 11


class StepStopped(StepFailed):
    """An operator (intent stop) or the watchdog stopped the step; its process group was terminated."""

    exit_code = 15


class ApprovalRequired(IntentError):
    """A manual gate waits for a person: `intent approve REQUEST --step S --reason ...`, then re-execute."""

    exit_code = 16


class GateRejected(IntentError):
    """A manual gate was rejected; the request fails for good."""

    exit_code = 17


class RolledBack(IntentError):
    """The request failed and its completed steps were rolled back."""

    exit_code = 12


class RollbackFailed(IntentError):
    """The request failed and at least one rollback failed too."""

    exit_code = 13


class VerifyFailed(IntentError):
    """A verify check failed after the steps ran."""

    exit_code = 14


class AuditBroken(IntentError):
    """The audit chain failed verification: a record or checkpoint was changed, removed or added."""

    exit_code = 20


def exit_code_table() -> list[tuple[int, str, str]]:
    """Return (code, error, meaning) rows for docs and ``intent --help``."""
    rows: list[tuple[int, str, str]] = [(0, "-", "success"), (1, "-", "internal error (a bug)")]
    for cls in (
        UsageError,
        SpecError,
        UnknownIntentError,
        ParamError,
        TemplateError,
        FleetError,
        PolicyDenied,
        ConfirmationRequired,
        LockBusy,
        StoreError,
        StepFailed,
        StepTimeout,
        StepStopped,
        ApprovalRequired,
        GateRejected,
        RolledBack,
        RollbackFailed,
        VerifyFailed,
        AuditBroken,
    ):
        rows.append((cls.exit_code, cls.__name__, (cls.__doc__ or "").strip().rstrip(".")))
    return rows
