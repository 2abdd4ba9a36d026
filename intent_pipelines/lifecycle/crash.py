"""Crash truth: a request whose process is gone is ended CRASHED now, not after a lease or a watchdog.

Two ways to notice: the owner recorded on the request (an `intent run`, an in-process run worker)
is dead on this host (``reap_dead_owners``, called by status, explain, unlock, run and the
watchdog sensor), or Dagster reports the request's run ended while the request is still RUNNING
(``end_crashed_run``, called by the failure sensors). Both end the request through finish.py, so
the lock is freed, the alert written and the request left resumable.
"""

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from intent_pipelines import run_tags
from intent_pipelines.audit import events as ev
from intent_pipelines.errors import Crashed, StepStopped
from intent_pipelines.home import IntentHome
from intent_pipelines.lifecycle.finish import Ending, end_request
from intent_pipelines.lifecycle.liveness import Liveness, Owner
from intent_pipelines.status import LIVE_RUN_STATUSES, RequestStatus, StepStatus
from intent_pipelines.store import StateStore

log = logging.getLogger(__name__)


def owner_of(row: dict[str, Any]) -> Owner | None:
    """The recorded owner of a request row, if any."""
    if not row.get("owner_pid") or not row.get("owner_host"):
        return None
    return Owner(str(row["owner_host"]), int(row["owner_pid"]), row.get("owner_token"))


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies waiting to be reaped do not count)."""
    if pgid <= 0:
        return False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, pgrp, ...
        fields = stat.rpartition(")")[2].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _fail_running_steps(store: StateStore, request_id: str, run_id: str, message: str) -> str:
    """Mark the steps left RUNNING failed (audited); returns the last such step's id."""
    last = ""
    for step in store.steps(request_id):
        if step["status"] == StepStatus.RUNNING.value:
            store.set_step(request_id, step["step_id"], StepStatus.FAILED, run_id=run_id, attempt=step["attempt"])
            store.append_event(ev.StepFail(step=step["step_id"], attempt=step["attempt"], error=message,
                                           failure_class="crashed", error_class="Crashed"),
                               request_id=request_id, run_id=run_id)
            last = step["step_id"]
    return last


def _end_crashed(store: StateStore, home: IntentHome, row: dict[str, Any], error: Crashed | StepStopped, *,
                 by: str) -> bool:
    request_id, run_id = str(row["request_id"]), str(row["run_id"])
    step = _fail_running_steps(store, request_id, run_id, error.message)
    phase = str(row["phase"] or "")
    step = step or (phase.removeprefix("STEP ") if phase.startswith("STEP ") else phase.lower())
    return end_request(store, home, request_id, run_id=run_id, ending=Ending.of(error, step=step), by=by) is not None


def reap_dead_owners(store: StateStore, home: IntentHome, *, seen_by: str,
                     on_crashed: Callable[[dict[str, Any], str], None] | None = None) -> list[str]:
    """End every RUNNING request whose owner process is gone from this host; returns their ids.

    The step's process group, if it is still on this host, is killed first: it must not go on
    changing the target once nobody holds the request. ``on_crashed(row, message)`` (the ended
    request's row) lets the Dagster layer mark its run failed so the UI does not show it STARTED forever.
    """
    ended: list[str] = []
    for row in store.requests_by_status(RequestStatus.RUNNING):
        owner = owner_of(row)
        if owner is None or owner.liveness() is not Liveness.DEAD:
            continue
        pgid = row.get("step_pgid")
        if pgid and row.get("step_host") == owner.host and group_alive(int(pgid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pgid), signal.SIGKILL)
        store.append_event(ev.OwnerDead(host=owner.host, pid=owner.pid, seen_by=seen_by),
                           request_id=str(row["request_id"]), run_id=str(row["run_id"]))
        error = Crashed(f"the process running it (pid {owner.pid} on {owner.host}) died",
                        hint=f"Continue it with `intent resume {row['request_id']}`, or start over with "
                             f"`intent replay {row['request_id']}`.")
        if _end_crashed(store, home, row, error, by=seen_by):
            ended.append(str(row["request_id"]))
            ended_row = store.request(str(row["request_id"]))
            if on_crashed is not None and ended_row is not None:
                on_crashed(ended_row, error.one_line())
    return ended


def end_crashed_run(store: StateStore, home: IntentHome, request_id: str, *, run_id: str, run_status: str,
                    message: str) -> bool:
    """The Dagster run ``run_id`` ended while its request is still RUNNING: end the request now."""
    row = store.request(request_id)
    if row is None or row["status"] != RequestStatus.RUNNING.value or row["run_id"] != run_id:
        return False  # ended already, or a newer run of the request goes on
    hint = f"Continue it with `intent resume {request_id}`, or start over with `intent replay {request_id}`."
    first = message.strip().splitlines()[0] if message.strip() else ""
    error: Crashed | StepStopped
    if run_status == "CANCELED":
        error = StepStopped(f"its Dagster run was canceled before the request ended{': ' + first if first else ''}",
                            hint=hint)
    else:
        error = Crashed(f"its Dagster run ended {run_status} before the request did{': ' + first if first else ''}",
                        hint=hint)
    return _end_crashed(store, home, row, error, by="failure_sensor")


def run_failer(instance: Any) -> Callable[[dict[str, Any], str], None]:
    """An ``on_crashed`` for reap_dead_owners: the crashed request's Dagster run is marked failed and tagged.

    ``instance`` is a DagsterInstance (duck-typed: this package imports no Dagster). A run that
    is already final keeps its status; a storage error is logged, never raised (the request has ended).
    """

    def mark(row: dict[str, Any], message: str) -> None:
        run_id = str(row["run_id"])
        try:
            run = instance.get_run_by_id(run_id)
            if run is None:
                return
            if run.status.value in LIVE_RUN_STATUSES:
                instance.report_run_failed(run, message=f"intent: {message}")
            instance.add_run_tags(run_id, run_tags.outcome_tags(row))
        except Exception:
            log.exception("could not mark Dagster run %s failed", run_id)

    return mark
