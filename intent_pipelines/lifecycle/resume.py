"""Continuing a request in a new run (re-execution from failure, `intent resume`): re-open and re-lock it."""

from collections.abc import Mapping
from typing import Any

from intent_pipelines.audit import events as ev
from intent_pipelines.errors import UsageError
from intent_pipelines.lifecycle.lease import take_lock
from intent_pipelines.lifecycle.liveness import Owner
from intent_pipelines.lifecycle.recorder import Recorder
from intent_pipelines.lifecycle.rollback import finish_interrupted_rollback
from intent_pipelines.status import RequestStatus

# A re-execution may continue a request that failed or was stopped (its completed steps stand).
RESUMABLE = frozenset(s.value for s in RequestStatus if s.resumable)


def check_resumable(row: Mapping[str, Any]) -> None:
    """Refuse to continue a request that ended for good, or whose completed steps were undone."""
    status = RequestStatus(row["status"])
    if status in (RequestStatus.ROLLED_BACK, RequestStatus.ROLLBACK_FAILED):
        raise UsageError(f"request {row['request_id']} was rolled back; resuming would skip steps whose "
                         "effects were undone", hint=f"Run it again with `intent replay {row['request_id']}`.")
    if not status.resumable:
        raise UsageError(f"request {row['request_id']} is {status.value}; only failed, stopped, crashed or waiting "
                         "requests can be resumed", hint=f"See `intent explain {row['request_id']}`.")


def resume_if_needed(rec: Recorder, row: dict[str, Any], run_id: str, owner: Owner | None = None) -> None:
    """A re-execution of a failed request continues it: re-open it and re-take its lock.

    One that died while rolling back finishes its rollback instead, ends, and raises its outcome.
    """
    if owner is not None and (row["owner_pid"], row["owner_host"]) != (owner.pid, owner.host):
        rec.store.set_owner(row["request_id"], host=owner.host, pid=owner.pid, token=owner.token)
    if row["status"] == RequestStatus.RUNNING.value:
        if row["run_id"] != run_id:
            rec.store.update_request(row["request_id"], run_id=run_id)
        return
    check_resumable(row)
    if row["lock_key"] and not row["dry_run"]:
        take_lock(rec, row["lock_key"], row["request_id"], run_id, wait_s=0)
    rec.store.update_request(row["request_id"], status=RequestStatus.RUNNING, run_id=run_id, error="", exit_code=0)
    rec.store.clear_cancel(row["request_id"])
    rec.event(ev.RequestResume(previous_run_id=row["run_id"], previous_status=row["status"]),
              row["request_id"], run_id)
    finish_interrupted_rollback(rec, rec.spec_of(row), {**row, "run_id": run_id}, run_id)
