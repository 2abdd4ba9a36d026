"""Lifecycle states of a request and of its steps."""

from enum import Enum


class RequestStatus(str, Enum):
    """Where a request stands; every status but RUNNING is final."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    DRY_RUN = "DRY_RUN"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    NEEDS_APPROVAL = "NEEDS_APPROVAL"
    STOPPED_BY_OPERATOR = "STOPPED_BY_OPERATOR"
    WATCHDOG_STUCK = "WATCHDOG_STUCK"

    @property
    def final(self) -> bool:
        return self is not RequestStatus.RUNNING


class StepStatus(str, Enum):
    """Where a step stands within its request."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
