"""The lock a request holds on its target: taking it, and keeping its lease alive while work runs."""

import threading
import time

from intent_pipelines.audit import events as ev
from intent_pipelines.errors import IntentError
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.lifecycle.crash import reap_dead_owners
from intent_pipelines.lifecycle.finish import Ending
from intent_pipelines.lifecycle.recorder import Recorder
from intent_pipelines.settings import settings

LOCK_TTL_S = 60.0
# How long a step whose lease was lost gets between SIGTERM and SIGKILL.
LEASE_LOST_GRACE_S = 2.0
HEARTBEAT_S = 5.0


def take_lock(rec: Recorder, key: str, request_id: str, run_id: str, *, wait_s: float) -> None:
    """Take ``key`` for the request, or end it REFUSED (lock busy) and raise."""
    holder = rec.store.lock_holder(key)
    if holder is not None and holder.request_id != request_id:
        # A holder whose process died on this host is ended now, so its lock is free at once.
        reap_dead_owners(rec.store, rec.home, seen_by=f"preflight of {request_id}")
    try:
        rec.store.acquire_lock(key, request_id=request_id, run_id=run_id, ttl_s=LOCK_TTL_S, wait_s=wait_s)
    except IntentError as exc:
        holder = rec.store.lock_holder(key)
        rec.event(ev.LockBusyEvent(lock=key, error=exc.message, holder=holder.request_id if holder else None),
                  request_id, run_id)
        rec.end(request_id, run_id, Ending.of(exc, step="preflight"))
        raise
    rec.event(ev.LockAcquire(lock=key), request_id, run_id)


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
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last_beat = last_renew = time.monotonic()
        while not self._stop.wait(1.0):
            now = time.monotonic()
            if self.ctx is not None and not self.ctx.cancel.is_set():
                cancel = self.store.cancel_request_of(self.request_id)
                if cancel is not None:
                    self.ctx.cancel_grace_s = cancel[0]
                    self.ctx.cancel.set()
            if now - last_beat >= HEARTBEAT_S:
                self.store.heartbeat(self.request_id, last_log_line=self.ctx.last_line if self.ctx else None)
                last_beat = now
            if self.lock_key and not self.lost and now - last_renew >= LOCK_TTL_S / 4:
                if not self.store.renew_lock(self.lock_key, request_id=self.request_id, ttl_s=LOCK_TTL_S):
                    self._lease_lost()
                last_renew = now

    def _lease_lost(self) -> None:
        """Someone else holds (or freed) the lock: the step must not go on without it."""
        self.lost = True
        holder = self.store.lock_holder(self.lock_key) if self.lock_key else None
        step = self.ctx.step_id if self.ctx else ""
        self.store.append_event(ev.LockLost(lock=self.lock_key or "", step=step,
                                            holder=holder.request_id if holder else None),
                                request_id=self.request_id, run_id=self.run_id)
        if self.ctx is not None:
            self.ctx.cancel_grace_s = LEASE_LOST_GRACE_S
            self.ctx.cancel.set()

    def __enter__(self) -> "Heartbeat":
        if settings().heartbeat:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
