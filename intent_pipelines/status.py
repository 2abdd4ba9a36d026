"""The outcome model: where a request and its steps stand, why a request ended, and what that means.

Every surface (status, explain, alerts, failures, metrics, the Parquet assets, Dagster run tags)
reads these through the ``request.complete`` audit event; nothing else decides what an ending means.
"""

from enum import Enum
from typing import assert_never


class Category(str, Enum):
    """How an operator should take an ending: the alert log and the metrics group by this."""

    SUCCESS = "success"  # it did what was asked
    DRY_RUN = "dry_run"  # it showed what it would do and changed nothing
    REFUSED = "refused"  # it never started: bad input, policy, confirmation, lock busy (not a failure)
    FAILURE = "failure"  # it started and did not finish as asked: someone must look (a page)
    WAITING = "waiting"  # a person must decide (a manual gate): a page, but not a failure
    STOPPED = "stopped"  # a person ended it on purpose (stop, reject): recorded, not paged

    @property
    def alerts(self) -> bool:
        """Whether the ending gets an alert line (every ending but success and dry run)."""
        return self not in (Category.SUCCESS, Category.DRY_RUN)

    @property
    def pages(self) -> bool:
        """Whether the ending pages: forensics and a webhook POST (every alerted ending gets a line and a report)."""
        return self in (Category.FAILURE, Category.WAITING)


class RequestStatus(str, Enum):
    """Where a request stands; every status but RUNNING is final (some final ones are resumable)."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    DRY_RUN = "DRY_RUN"
    REFUSED = "REFUSED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    NEEDS_APPROVAL = "NEEDS_APPROVAL"
    REJECTED = "REJECTED"
    STOPPED_BY_OPERATOR = "STOPPED_BY_OPERATOR"
    CRASHED = "CRASHED"
    WATCHDOG_STUCK = "WATCHDOG_STUCK"

    @property
    def final(self) -> bool:
        return self is not RequestStatus.RUNNING

    @property
    def resumable(self) -> bool:
        """Whether re-executing the run continues this request (its completed steps stand)."""
        return self in (RequestStatus.FAILED, RequestStatus.STOPPED_BY_OPERATOR, RequestStatus.WATCHDOG_STUCK,
                        RequestStatus.NEEDS_APPROVAL, RequestStatus.CRASHED)

    @property
    def category(self) -> Category:
        match self:
            case RequestStatus.SUCCEEDED:
                return Category.SUCCESS
            case RequestStatus.DRY_RUN:
                return Category.DRY_RUN
            case RequestStatus.REFUSED:
                return Category.REFUSED
            case RequestStatus.NEEDS_APPROVAL:
                return Category.WAITING
            case RequestStatus.STOPPED_BY_OPERATOR | RequestStatus.REJECTED:
                return Category.STOPPED
            case (RequestStatus.RUNNING | RequestStatus.FAILED | RequestStatus.ROLLED_BACK
                  | RequestStatus.ROLLBACK_FAILED | RequestStatus.CRASHED | RequestStatus.WATCHDOG_STUCK):
                return Category.FAILURE
            case _:
                assert_never(self)


class Reason(str, Enum):
    """Why a request ended the way it did, in the words an operator decides the next action by."""

    NONE = ""  # succeeded, or a dry run
    BAD_INPUT = "bad_input"
    POLICY = "policy"
    CONFIRMATION = "confirmation"
    LOCK_BUSY = "lock_busy"
    QUARANTINED = "quarantined"
    STEP_FAILED = "step_failed"
    RETRIES_EXHAUSTED = "retries_exhausted"
    TIMEOUT = "timeout"
    VERIFY_FAILED = "verify_failed"
    LEASE_LOST = "lease_lost"
    INTERNAL_ERROR = "internal_error"
    APPROVAL = "approval"
    REJECTED = "rejected"
    OPERATOR_STOP = "operator_stop"
    STUCK = "stuck"
    CRASH = "crash"

    @property
    def label(self) -> str:
        """A short human description."""
        match self:
            case Reason.NONE:
                return "-"
            case Reason.BAD_INPUT:
                return "bad input (params, fleet or intent file)"
            case Reason.POLICY:
                return "refused by policy"
            case Reason.CONFIRMATION:
                return "the policy asks for a confirmation that was not given"
            case Reason.LOCK_BUSY:
                return "lock held by another live request"
            case Reason.QUARANTINED:
                return "the intent is quarantined for this target"
            case Reason.STEP_FAILED:
                return "deterministic step failure"
            case Reason.RETRIES_EXHAUSTED:
                return "transient failure, retries exhausted"
            case Reason.TIMEOUT:
                return "timeout"
            case Reason.VERIFY_FAILED:
                return "a verify check failed after the steps ran"
            case Reason.LEASE_LOST:
                return "the lock's lease could not be renewed, so the step was stopped"
            case Reason.INTERNAL_ERROR:
                return "internal error (a bug: please report it)"
            case Reason.APPROVAL:
                return "waiting for a manual approval"
            case Reason.REJECTED:
                return "a manual gate was rejected"
            case Reason.OPERATOR_STOP:
                return "stopped by an operator"
            case Reason.STUCK:
                return "stuck: stopped by the watchdog"
            case Reason.CRASH:
                return "crash: the process running it died without ending it"
            case _:
                assert_never(self)


class StepStatus(str, Enum):
    """Where a step stands within its request."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"


# Dagster run statuses (as strings: this module imports no Dagster), in one place.
LIVE_RUN_STATUSES = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"})
FINAL_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
