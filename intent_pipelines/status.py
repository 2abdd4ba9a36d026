"""Lifecycle states of a request and of its steps."""

from enum import Enum


class RequestStatus(str, Enum):
    """Where a request stands; the last five are final."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    DRY_RUN = "DRY_RUN"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"

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
