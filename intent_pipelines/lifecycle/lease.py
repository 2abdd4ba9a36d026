"""The lock a request holds on its target: taking it, keeping its lease alive, and fencing every change.

The lease (INTENT_LOCK_TTL_S, renewed every quarter of it) frees a target whose holder vanished
on another host. On the holder's own host its process decides instead: a live holder whose lease
ran out is stuck, not gone, and keeps the lock until it ends or is stopped. Before each step,
rollback and check the holder renews its lease (``fence``), so one that lost it changes nothing more.
"""

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from intent_pipelines.audit import events as ev
from intent_pipelines.errors import IntentError, LeaseLost, StoreError
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.lifecycle.crash import owner_of, reap_dead_owners
from intent_pipelines.lifecycle.finish import Ending
from intent_pipelines.lifecycle.liveness import Liveness
from intent_pipelines.lifecycle.recorder import Recorder
from intent_pipelines.settings import settings
from intent_pipelines.status import RequestStatus
from intent_pipelines.store.state import LockHolder, StateStore

# How long a step whose lease was lost gets between SIGTERM and SIGKILL.
LEASE_LOST_GRACE_S = 2.0
HEARTBEAT_S = 5.0


def stuck_holder(store: StateStore) -> Callable[[LockHolder], str | None]:
    """Why an expired holder keeps its lock (its process is alive on this host), or None."""

    def keeps(holder: LockHolder) -> str | None:
        row = store.request(holder.request_id)
        owner = owner_of(row) if row is not None and row["status"] == RequestStatus.RUNNING.value else None
        if owner is None or owner.liveness() is not Liveness.ALIVE:
            return None
        return f"its lease ran out but its process {owner.pid} on {owner.host} is alive (stuck, not gone)"

    return keeps


def take_lock(rec: Recorder, key: str, request_id: str, run_id: str, *, wait_s: float) -> None:
    """Take ``key`` for the request, or end it REFUSED (lock busy) and raise."""
    holder = rec.store.lock_holder(key)
    if holder is not None and holder.request_id != request_id:
        # A holder whose process died on this host is ended now, so its lock is free at once.
        reap_dead_owners(rec.store, rec.home, seen_by=f"preflight of {request_id}")
    try:
        rec.store.acquire_lock(key, request_id=request_id, run_id=run_id, ttl_s=settings().lock_ttl_s,
                               wait_s=wait_s, keeps_lock=stuck_holder(rec.store))
    except IntentError as exc:
        holder = rec.store.lock_holder(key)
        rec.event(ev.LockBusyEvent(lock=key, error=exc.message, holder=holder.request_id if holder else None),
                  request_id, run_id)
        rec.end(request_id, run_id, Ending.of(exc, step="preflight"))
        raise
    rec.event(ev.LockAcquire(lock=key), request_id, run_id)


def fence(rec: Recorder, row: Mapping[str, Any], what: str) -> None:
    """Renew the request's lease before ``what`` changes anything; LeaseLost when another holds it now."""
    key = row["lock_key"]
    if not key or row["dry_run"]:
        return
    if rec.store.renew_lock(key, request_id=row["request_id"], ttl_s=settings().lock_ttl_s):
        return
    holder = rec.store.lock_holder(key)
    rec.event(ev.LockLost(lock=key, step=what, holder=holder.request_id if holder else None),
              row["request_id"], row["run_id"])
    raise LeaseLost(f"{what} did not start: the lease on lock {key} was lost"
                    + (f" to request {holder.request_id}" if holder else ""),
                    hint="See `intent status` for who holds it now; resume when it is free.")


class Heartbeat:
    """While a step, check or rollback runs: signs of life, lock lease renewal, and stop requests.

    Every second it looks for a stop request (`intent stop`, the watchdog) and, when there is one,
    tells the action runner to terminate its process group; every HEARTBEAT_S it records a
    heartbeat with the last output line, so a silent command still shows it is alive.
    INTENT_HEARTBEAT=off (bench/heartbeat_overhead.py only) runs without the thread.
    """

    def __init__(self, rec: Recorder, request_id: str, lock_key: str | None,
                 ctx: ActionContext | None = None, *, run_id: str = "") -> None:
        self.store, self.request_id, self.lock_key, self.ctx = rec.store, request_id, lock_key, ctx
        self.run_id = run_id or request_id
        self.lost = False  # the lease could not be renewed: the step is being stopped
        self._last_beat = self._last_renew = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ttl_s = settings().lock_ttl_s
        self._last_beat = self._last_renew = time.monotonic()
        while not self._stop.wait(1.0):
            try:
                self._tick(ttl_s)
            except (StoreError, SQLAlchemyError):
                # The store is away (a database restart, a network cut): the step goes on and the
                # next tick tries again; the watchdog judges a heartbeat that stays missing.
                continue

    def _tick(self, ttl_s: float) -> None:
        now = time.monotonic()
        if self.ctx is not None and not self.ctx.cancel.is_set():
            cancel = self.store.cancel_request_of(self.request_id)
            if cancel is not None:
                self.ctx.cancel_grace_s = cancel[0]
                self.ctx.cancel.set()
        if now - self._last_beat >= HEARTBEAT_S:
            self.store.heartbeat(self.request_id, last_log_line=self.ctx.last_line if self.ctx else None)
            self._last_beat = now
        if self.lock_key and not self.lost and now - self._last_renew >= ttl_s / 4:
            if not self.store.renew_lock(self.lock_key, request_id=self.request_id, ttl_s=ttl_s):
                self._lease_lost()
            self._last_renew = now

    def _lease_lost(self) -> None:
        """Someone else holds (or freed) the lock: the step must not go on without it."""
        self.lost = True
        if self.ctx is not None:  # stopped first: recording the loss may itself fail
            self.ctx.cancel_grace_s = LEASE_LOST_GRACE_S
            self.ctx.cancel.set()
        holder = self.store.lock_holder(self.lock_key) if self.lock_key else None
        step = self.ctx.step_id if self.ctx else ""
        self.store.append_event(ev.LockLost(lock=self.lock_key or "", step=step,
                                            holder=holder.request_id if holder else None),
                                request_id=self.request_id, run_id=self.run_id)

    def __enter__(self) -> "Heartbeat":
        if settings().heartbeat:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
