"""The one way a request ends: its row, its lock, one ``request.complete`` event, and its alert.

Engine, watchdog, the liveness check, stop and the failure sensor all end requests here, so the
status, reason, error, signature and exit code every surface shows are decided once. A request
that is no longer RUNNING is not ended again (the first ending wins; a resume re-opens it first).
"""

import logging
import time
from dataclasses import dataclass

from intent_pipelines import secrets
from intent_pipelines.alerts.signatures import signature
from intent_pipelines.audit import events as ev
from intent_pipelines.errors import IntentError
from intent_pipelines.home import IntentHome
from intent_pipelines.status import Reason, RequestStatus
from intent_pipelines.store import StateStore

log = logging.getLogger(__name__)

# The exit code of a request that ended in these statuses, whatever error led there.
_EXIT_CODE_OF_STATUS = {RequestStatus.ROLLED_BACK: 12, RequestStatus.ROLLBACK_FAILED: 13}


@dataclass(frozen=True)
class Ending:
    """How a request ends: everything ``request.complete`` records about the outcome."""

    status: RequestStatus
    reason: Reason = Reason.NONE
    error: str = ""  # the one line users see (message and hint), secrets masked
    cause: str = ""  # the failure's own message without the hint: what the signature is computed from
    error_class: str = ""
    exit_code: int = 0
    step: str = ""  # the step, ``verify.<check>`` or ``preflight`` the ending is about

    @classmethod
    def of(cls, error: IntentError, *, step: str = "", status: RequestStatus | None = None,
           cause: IntentError | None = None) -> "Ending":
        """The ending ``error`` means.

        ``status`` overrides its own (ROLLED_BACK after a failure); ``cause`` is the original
        failure when ``error`` wraps it (the reason and signature come from the cause).
        """
        own_status, reason = (cause or error).ending()
        final = status or own_status
        exit_code = _EXIT_CODE_OF_STATUS.get(final, error.exit_code)
        return cls(status=final, reason=reason, error=secrets.mask(error.one_line()),
                   cause=secrets.mask((cause or error).message), error_class=type(cause or error).__name__,
                   exit_code=exit_code, step=step)


def end_request(store: StateStore, home: IntentHome, request_id: str, *, run_id: str, ending: Ending,
                by: str = "engine") -> ev.RequestComplete | None:
    """End a RUNNING request; returns its ``request.complete``, or None when it was not running."""
    row = store.request(request_id)
    if row is None or not store.end_request_row(request_id, status=ending.status, reason=ending.reason.value,
                                                 error=ending.error, exit_code=ending.exit_code):
        return None
    if row["lock_key"] and store.release_lock(row["lock_key"], request_id=request_id):
        store.append_event(ev.LockRelease(lock=row["lock_key"], by=None if by == "engine" else by),
                           request_id=request_id, run_id=run_id)
    complete = completion(ending, by=by, duration_ms=int((time.time() - float(row["started_at"])) * 1000),
                          intent=str(row["intent"]), dry_run=bool(row["dry_run"]))
    store.append_event(complete, request_id=request_id, run_id=run_id)
    if ending.status.category.alerts:
        _alert(store, home, request_id, run_id)
    return complete


def completion(ending: Ending, *, by: str, duration_ms: int, intent: str, dry_run: bool) -> ev.RequestComplete:
    """The ``request.complete`` event of an ending (the signature is computed here, once)."""
    failed = ending.status.category.alerts
    return ev.RequestComplete(
        status=ending.status.value, reason=ending.reason.value, error=ending.error,
        error_class=ending.error_class or None, exit_code=ending.exit_code, step=ending.step or None,
        signature=signature(ending.cause or ending.error, step=ending.step, error_class=ending.error_class)
        if failed else None, by=by, duration_ms=duration_ms, intent=intent, dry_run=dry_run)


def _alert(store: StateStore, home: IntentHome, request_id: str, run_id: str) -> None:
    # The request has ended whatever happens here; a failure to alert must not undo that, and the
    # failure sensor alerts from the same event later (append_once keeps it to one line).
    # Imported here, not at the top: only a failed request alerts, and the alert pipeline (webhook
    # client, report, forensics) would otherwise be loaded by every `intent run` and run worker
    # (bench/cli_overhead).
    from intent_pipelines.alerts.failure import read_failure
    from intent_pipelines.alerts.notify import notify

    try:
        facts = read_failure(store, run_id=run_id, request_id=request_id)
        if facts is not None:
            notify(home, facts)
    except Exception:
        log.exception("could not write the alert for request %s (run %s)", request_id, run_id)
