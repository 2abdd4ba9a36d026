"""Operator actions on requests: what is running, why it stopped, stop it, unlock a dead holder."""

import getpass
import logging
import time
from dataclasses import dataclass
from typing import Any

from intent_pipelines import run_tags
from intent_pipelines.alerts.failure import last_completion
from intent_pipelines.audit import events as ev
from intent_pipelines.errors import LockBusy, UsageError
from intent_pipelines.home import IntentHome
from intent_pipelines.lifecycle.crash import owner_of, reap_dead_owners, run_failer
from intent_pipelines.lifecycle.liveness import Liveness
from intent_pipelines.status import LIVE_RUN_STATUSES, RequestStatus
from intent_pipelines.store import StateStore
from intent_pipelines.store.state import LockHolder

log = logging.getLogger(__name__)

NEXT_ACTION = {
    RequestStatus.RUNNING: "follow it with `intent watch {id}`; stop it with `intent stop {id}`",
    RequestStatus.SUCCEEDED: "nothing to do",
    RequestStatus.DRY_RUN: "run it for real without --dry-run",
    RequestStatus.REFUSED: "nothing ran: fix what the error names, then start a new request "
                           "(`intent replay {id}` with --override/--confirm as needed)",
    RequestStatus.REJECTED: "a person rejected its gate: start a new request (`intent replay {id}`) if "
                            "the change is wanted again",
    RequestStatus.CRASHED: "its process died: continue it with `intent resume {id}` (finished steps are kept), "
                           "or start over with `intent replay {id}`",
    RequestStatus.FAILED: "fix the cause, then re-execute the run from failure in the Dagster UI "
                          "(finished steps are kept), or start a new request",
    RequestStatus.ROLLED_BACK: "the change was undone; fix the cause and start a new request",
    RequestStatus.ROLLBACK_FAILED: "inspect the app now: the rollback failed (see the rollback step logs)",
    RequestStatus.NEEDS_APPROVAL: "gate {gate} waits: `intent approve {id} --step {gate} --reason ...` (or "
                                  "`intent reject`), then `intent resume {id}`",
    RequestStatus.STOPPED_BY_OPERATOR: "re-execute the run from failure to continue, or start a new request",
    RequestStatus.WATCHDOG_STUCK: "see the forensics under INTENT_HOME/forensics/{id}/, then re-execute "
                                  "from failure or start a new request",
}


@dataclass(frozen=True)
class RequestView:
    """One request as operators see it."""

    row: dict[str, Any]
    run_status: str
    gate: str = ""  # the manual gate a NEEDS_APPROVAL request waits at

    @property
    def id(self) -> str:
        return str(self.row["request_id"])

    @property
    def status(self) -> RequestStatus:
        return RequestStatus(self.row["status"])

    def heartbeat_age_s(self, now: float | None = None) -> float | None:
        beat = self.row.get("heartbeat_at")
        return None if beat is None else max(0.0, (now or time.time()) - float(beat))

    def next_action(self) -> str:
        return NEXT_ACTION[self.status].format(id=self.id, gate=self.gate or "STEP")

    def to_dict(self, home: IntentHome) -> dict[str, Any]:
        age = self.heartbeat_age_s()
        return {
            "request_id": self.id, "intent": self.row["intent"], "status": self.status.value,
            "phase": self.row["phase"], "attempt": self.row["attempt"],
            "heartbeat_age_s": None if age is None else round(age, 1), "lock": self.row["lock_key"],
            "run_id": self.row["run_id"], "run_status": self.run_status, "who": self.row["who"],
            "error": self.row["error"], "last_log_line": self.row["last_log_line"], "gate": self.gate or None,
            "next_action": self.next_action(),
            "log_dir": str(home.root / "logs" / "steps" / self.id),
        }


class Operations:
    """Reads and acts on requests; talks to Dagster through a DagsterInstance it is given."""

    def __init__(self, home: IntentHome, store: StateStore, instance: Any) -> None:
        self.home, self.store, self.instance = home, store, instance

    def _run_status(self, run_id: str) -> str:
        run = self.instance.get_run_by_id(run_id) if run_id else None
        return run.status.value if run is not None else "UNKNOWN"

    def reap(self) -> list[str]:
        """End the requests whose process died on this host (CRASHED), so what is shown is true now."""
        on_crashed = run_failer(self.instance) if self.instance is not None else None
        return reap_dead_owners(self.store, self.home, seen_by="operator", on_crashed=on_crashed)

    def find(self, request_or_run: str) -> RequestView:
        """A request by its id or by the id of any of its runs."""
        self.reap()
        row = self.store.find_request(request_or_run)
        if row is None:
            raise UsageError(f"no request or run {request_or_run!r}",
                             hint="Use an id from `intent status --all` or the Dagster UI.")
        return self._view(row)

    def list(self, *, include_finished: bool, limit: int = 20) -> list[RequestView]:
        """Running and waiting requests (or also the most recent finished ones)."""
        self.reap()
        rows = (self.store.recent_requests(limit) if include_finished
                else self.store.requests_by_status(RequestStatus.RUNNING, RequestStatus.NEEDS_APPROVAL))
        return [self._view(row) for row in rows]

    def _view(self, row: dict[str, Any]) -> RequestView:
        gate = ""
        if row["status"] == RequestStatus.NEEDS_APPROVAL.value:
            ending = last_completion(list(self.store.audit_records(request_id=row["request_id"])))
            gate = (ending.step or "") if ending is not None else ""
        return RequestView(row, self._run_status(row["run_id"]), gate)

    def stop(self, request_or_run: str, *, grace_s: float, reason: str, wait_s: float = 60.0,
             status: RequestStatus = RequestStatus.STOPPED_BY_OPERATOR, asked: bool = False) -> dict[str, Any]:
        """Stop a request: a queued run is cancelled in the queue, a running one stops its step.

        Returns once the request has ended (its processes terminated and lock released) or
        ``wait_s`` passed. ``asked``: the caller already ran `request_stop` for it, so a request
        that has meanwhile ended is this stop's outcome rather than an error.
        """
        who = getpass.getuser()
        run = self.instance.get_run_by_id(request_or_run)
        row = self.store.find_request(request_or_run)
        if run is not None and run.status.value in ("QUEUED", "NOT_STARTED") and row is None:
            return self._cancel_queued(run, reason=reason, who=who)
        if row is None:
            raise UsageError(f"no request or run {request_or_run!r}",
                             hint="Use an id from `intent status` or the Dagster UI.")
        request_id = str(row["request_id"])
        if row["status"] != RequestStatus.RUNNING.value and asked and row["cancel_requested_at"]:
            ended = self.find(request_id)
            return {"request_id": request_id, "status": ended.status.value, "run_status": ended.run_status,
                    "latency_ms": int((float(row["updated_at"]) - float(row["cancel_requested_at"])) * 1000)}
        if row["status"] != RequestStatus.RUNNING.value:
            raise UsageError(f"request {request_id} is not running (it ended {row['status']})",
                             hint=f"See `intent explain {request_id}`.")
        self.request_stop(request_id, grace_s=grace_s, reason=reason, status=status)
        current = self.store.request(request_id)
        requested = float(current["cancel_requested_at"] or time.time()) if current else time.time()
        self._terminate_dagster_run(row["run_id"])
        deadline = requested + wait_s
        while time.time() < deadline:
            current = self.store.request(request_id)
            if current is not None and current["status"] != RequestStatus.RUNNING.value:
                break
            time.sleep(0.2)
        final = self.find(request_id)
        return {"request_id": request_id, "status": final.status.value, "run_status": final.run_status,
                "latency_ms": int((time.time() - requested) * 1000)}

    def request_stop(self, request_or_run: str, *, grace_s: float, reason: str,
                     status: RequestStatus = RequestStatus.STOPPED_BY_OPERATOR) -> bool:
        """Ask a RUNNING request's step to stop, through the store only (no Dagster needed).

        The step's heartbeat sees it within a second, so `intent stop` calls this before it even
        loads Dagster. Returns False when there is no running request by that id; a repeated call
        is harmless (only the first request and its audit record count).
        """
        row = self.store.find_request(request_or_run)
        if row is None or row["status"] != RequestStatus.RUNNING.value:
            return False
        if self.store.request_cancel(row["request_id"], grace_s=grace_s, status=status):
            self.store.append_event(ev.RunCancelRequested(who=getpass.getuser(), reason=reason,
                                                          grace_ms=int(grace_s * 1000), status=status.value),
                                    request_id=row["request_id"], run_id=row["run_id"])
        return True

    def _cancel_queued(self, run: Any, *, reason: str, who: str) -> dict[str, Any]:
        started = time.time()
        self.instance.run_coordinator.cancel_run(run.run_id)
        latency = int((time.time() - started) * 1000)
        self.store.append_event(ev.RunCancelRequested(who=who, reason=reason, queued=True),
                                request_id=run.run_id, run_id=run.run_id)
        self.store.append_event(ev.RunCancelled(status="CANCELED", latency_ms=latency, queued=True),
                                request_id=run.run_id, run_id=run.run_id)
        return {"request_id": run.run_id, "status": "CANCELED", "run_status": self._run_status(run.run_id),
                "latency_ms": latency}

    def _terminate_dagster_run(self, run_id: str) -> None:
        """Ask Dagster to terminate the run too (a run launched by the daemon or the UI)."""
        run = self.instance.get_run_by_id(run_id)
        if run is None or run.status.value not in LIVE_RUN_STATUSES:
            return
        launcher = self.instance.run_launcher
        # A run executed by `intent run` has no launcher to ask; its step stops through the store.
        if run.tags.get(run_tags.SOURCE) != run_tags.SOURCE_CLI and launcher is not None:
            # If Dagster cannot reach the run, the store-driven stop still ends the step.
            try:
                launcher.terminate(run_id)
            except Exception:
                log.warning("Dagster could not terminate run %s; its step stops through the store", run_id,
                            exc_info=True)

    def unlock(self, key: str, *, force: bool, reason: str) -> LockHolder:
        """Release a lock whose holder is dead; a live holder needs --force and a reason.

        A holder whose process died on this host is ended CRASHED first, which frees its lock: that
        counts as this unlock's release (no --force needed), not as "no lock held".
        """
        before = self.store.lock_holder(key)
        reaped = self.reap()
        holder = self.store.lock_holder(key)
        if holder is None and before is not None and before.request_id in reaped:
            return before
        if holder is None:
            known = ", ".join(sorted(h.key for h in self.store.locks())) or "none"
            raise UsageError(f"no lock {key!r} is held", hint=f"Held locks: {known}.")
        alive, why = self._holder_alive(holder)
        if alive and not force:
            raise LockBusy(f"{key} is held by a live holder: {holder.describe()} ({why})",
                           hint="Stop it with `intent stop`, or pass --force --reason if you are sure.")
        if force and not reason.strip():
            raise UsageError("--force needs --reason", hint="Say why, e.g. --reason 'host died'.")
        self.store.release_lock(key, request_id=holder.request_id)
        self.store.append_event(ev.LockUnlock(lock=key, forced=force, holder_alive=alive, why=why, reason=reason,
                                              who=getpass.getuser()),
                                request_id=holder.request_id, run_id=holder.run_id)
        return holder

    def _holder_alive(self, holder: LockHolder) -> tuple[bool, str]:
        row = self.store.request(holder.request_id)
        if row is not None and row["status"] != RequestStatus.RUNNING.value:
            return False, f"its request ended {row['status']}"
        owner = owner_of(row) if row is not None else None
        if owner is not None:
            # On the owner's own host its process decides: expiry alone never frees a live holder.
            liveness = owner.liveness()
            if liveness is Liveness.ALIVE:
                return True, f"its process {owner.pid} on {owner.host} is alive"
            if liveness is Liveness.DEAD:
                return False, f"its process {owner.pid} on {owner.host} is gone"
        if holder.expires_at <= time.time():
            return False, "its lease expired"
        status = self._run_status(holder.run_id)
        if status in LIVE_RUN_STATUSES:
            return True, f"run {holder.run_id} is {status}"
        if status == "UNKNOWN":
            return True, "its lease is current"
        return False, f"run {holder.run_id} is {status}"

