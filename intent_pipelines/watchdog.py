"""The stuck-request watchdog: forensics, a stop through the store, and an end that needs no live worker.

A request is stuck when it is RUNNING but shows no sign of life: its heartbeat (or last update) is
older than the threshold, or its Dagster run already ended without ending it (a run worker that
died or was terminated never reaches the engine's completion). For each stuck request the
watchdog

1. collects forensics under ``INTENT_HOME/forensics/<request>/<UTC ts>/``: the step's process
   group (``ps``), the tail of every step log, the lock state, the request row (without params)
   and the Dagster run;
2. asks the step to stop through the store (status WATCHDOG_STUCK) and terminates the Dagster run,
   so a live worker ends the request itself the same way `intent stop` does;
3. if the request is still RUNNING after the grace period (the worker is dead or wedged), kills
   the step's process group when it is on this host (SIGTERM, grace, SIGKILL), ends the request
   WATCHDOG_STUCK, releases its lock and marks the Dagster run canceled;
4. appends one JSON line per stuck request to ``INTENT_HOME/logs/alerts/watchdog.log``.

No Dagster import here: the sensor in ``dagster_defs/watchdog.py`` passes its DagsterInstance in.
"""

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from intent_pipelines import run_tags
from intent_pipelines.audit import events as ev
from intent_pipelines.errors import StepStopped
from intent_pipelines.home import IntentHome
from intent_pipelines.lifecycle.crash import group_alive
from intent_pipelines.lifecycle.finish import Ending, end_request
from intent_pipelines.lifecycle.lease import HEARTBEAT_S
from intent_pipelines.settings import settings
from intent_pipelines.status import FINAL_RUN_STATUSES, LIVE_RUN_STATUSES, Reason, RequestStatus, StepStatus
from intent_pipelines.store import StateStore
from intent_pipelines.store.state import SHORT_ID

log = logging.getLogger(__name__)

DEFAULT_STALE_S = 900.0
DEFAULT_GRACE_S = 10.0
# The engine polls for stop requests every second; give it this long beyond the grace to finish.
ENGINE_MARGIN_S = 5.0
LOG_TAIL_LINES = 200
WHO = "watchdog"


def stale_threshold_s() -> float:
    """Seconds without a heartbeat after which a request counts as stuck (INTENT_WATCHDOG_STALE_S)."""
    return settings().watchdog_stale_s


def grace_s_from_env() -> float:
    """Seconds between SIGTERM and SIGKILL, and for the engine to react (INTENT_WATCHDOG_GRACE_S)."""
    return settings().watchdog_grace_s


@dataclass
class StuckRequest:
    """One stuck request and what the watchdog did about it."""

    request_id: str
    intent: str
    run_id: str
    phase: str
    why: str
    heartbeat_age_s: float
    forensics: str
    lock: str | None
    pgid: int | None
    host: str | None
    run_status: str
    ended_by: str = "pending"  # engine | watchdog | pending (still RUNNING: see the alert)
    status: str = RequestStatus.RUNNING.value
    killed: bool = False
    lock_released: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass
class WatchdogReport:
    """What one watchdog pass saw and did."""

    running: int
    threshold_s: float
    stuck: list[StuckRequest]

    def summary(self) -> str:
        """One line for the sensor's SkipReason."""
        if not self.stuck:
            return f"no stuck requests ({self.running} running, threshold {self.threshold_s:g}s)"
        parts = [f"{s.request_id[:SHORT_ID]} {s.intent} ({s.why}) -> {s.status} by {s.ended_by}" for s in self.stuck]
        return f"{len(self.stuck)} stuck of {self.running} running: " + "; ".join(parts)


def check_stuck_requests(home: IntentHome, store: StateStore, instance: Any | None, *,
                         stale_s: float | None = None, grace_s: float | None = None,
                         now: float | None = None) -> WatchdogReport:
    """Find stuck RUNNING requests, collect forensics, stop them, and make sure each one ends.

    ``instance`` is a DagsterInstance (or None when there is no Dagster instance to ask): used
    to read and terminate runs. Every stuck request ends and releases its lock even when its run
    worker is dead, unless its process group lives on another host and will not die (reported
    in the alert as ended_by=pending).
    """
    stale_s = stale_threshold_s() if stale_s is None else stale_s
    grace_s = grace_s_from_env() if grace_s is None else grace_s
    now = time.time() if now is None else now
    running = store.requests_by_status(RequestStatus.RUNNING)
    suspects = []
    for row in running:
        run_status = _run_status(instance, row["run_id"])
        why = _why_stuck(row, run_status, instance, stale_s=stale_s, now=now)
        if why is not None:
            suspects.append((row, run_status, why))
    found: list[tuple[StuckRequest, dict[str, Any]]] = []
    for row, run_status, why in _still_silent(store, suspects):
        stuck = _begin(home, store, instance, row, why=why, run_status=run_status, grace_s=grace_s, now=now)
        found.append((stuck, row))
    if found:
        _wait_for_engine(store, [s for s, _ in found], timeout_s=grace_s + ENGINE_MARGIN_S)
        leftover = [(s, r) for s, r in found if s.ended_by == "pending"]
        _kill_groups([s for s, _ in leftover], grace_s=grace_s)
        for stuck, _row in leftover:
            _end_request(home, store, instance, stuck, requested_at=now)
        for stuck, _row in found:
            _alert(home, stuck, threshold_s=stale_s)
    return WatchdogReport(running=len(running), threshold_s=stale_s, stuck=[s for s, _ in found])


# --- detection ---------------------------------------------------------------------------------

def _why_stuck(row: dict[str, Any], run_status: str, instance: Any | None, *, stale_s: float,
               now: float) -> str | None:
    last_sign = max(float(row["heartbeat_at"] or 0), float(row["updated_at"] or 0))
    if now - last_sign > stale_s:
        return f"no heartbeat for {now - last_sign:.0f}s"
    if run_status in FINAL_RUN_STATUSES:
        # The run is over but never ended its request: its worker died or was terminated.
        ended = _run_end_time(instance, row["run_id"])
        if ended is not None and now - ended > min(stale_s, 60.0):
            return f"Dagster run {run_status} {now - ended:.0f}s ago but the request never ended"
    return None


def _still_silent(store: StateStore, suspects: list[tuple[dict[str, Any], str, str]]
                  ) -> list[tuple[dict[str, Any], str, str]]:
    """The suspects whose heartbeat does not move while we watch for one heartbeat interval.

    Staleness is computed from wall clocks (the request's host and ours), and a clock that jumped
    forward makes every heartbeat look old; a live request proves itself by beating meanwhile.
    """
    if not suspects:
        return []
    beats = {row["request_id"]: row["heartbeat_at"] for row, _, _ in suspects}
    deadline = time.monotonic() + HEARTBEAT_S + 1.0
    while time.monotonic() < deadline and beats:
        time.sleep(0.5)
        for request_id in list(beats):
            row = store.request(request_id)
            if row is None or row["status"] != RequestStatus.RUNNING.value or row["heartbeat_at"] != beats[request_id]:
                del beats[request_id]  # it beat (or ended) meanwhile: alive, whatever the clocks say
    return [s for s in suspects if s[0]["request_id"] in beats]


def _run_status(instance: Any | None, run_id: str) -> str:
    if instance is None or not run_id:
        return "UNKNOWN"
    try:
        run = instance.get_run_by_id(run_id)
    except Exception:  # a storage hiccup must not stop the watchdog from looking at the others
        log.warning("could not read Dagster run %s", run_id, exc_info=True)
        return "UNKNOWN"
    return str(run.status.value) if run is not None else "UNKNOWN"


def _run_end_time(instance: Any | None, run_id: str) -> float | None:
    if instance is None:
        return None
    try:
        record = instance.get_run_record_by_id(run_id)
    except Exception:  # as above: the watchdog goes on with the other requests
        log.warning("could not read the record of Dagster run %s", run_id, exc_info=True)
        return None
    return float(record.end_time) if record is not None and record.end_time is not None else None


# --- forensics and the stop request ------------------------------------------------------------

def _begin(home: IntentHome, store: StateStore, instance: Any | None, row: dict[str, Any], *, why: str,
           run_status: str, grace_s: float, now: float) -> StuckRequest:
    request_id = str(row["request_id"])
    last_sign = max(float(row["heartbeat_at"] or 0), float(row["updated_at"] or 0))
    stuck = StuckRequest(
        request_id=request_id, intent=str(row["intent"]), run_id=str(row["run_id"]), phase=str(row["phase"]),
        why=why, heartbeat_age_s=round(now - last_sign, 1), forensics="", lock=row["lock_key"],
        pgid=row["step_pgid"], host=row["step_host"], run_status=run_status)
    try:
        stuck.forensics = str(collect_forensics(home, store, instance, row))
    except Exception as exc:  # forensics help; they must never keep a stuck request from ending
        stuck.errors.append(f"forensics: {type(exc).__name__}: {exc}")
    store.append_event(ev.WatchdogStuck(
        why=why, phase=stuck.phase, heartbeat_age_ms=int(stuck.heartbeat_age_s * 1000), forensics=stuck.forensics,
        pgid=stuck.pgid, host=stuck.host, run_status=run_status), request_id=request_id, run_id=stuck.run_id)
    if store.request_cancel(request_id, grace_s=grace_s, status=RequestStatus.WATCHDOG_STUCK):
        store.append_event(ev.RunCancelRequested(who=WHO, reason=why, grace_ms=int(grace_s * 1000),
                                                 status=RequestStatus.WATCHDOG_STUCK.value),
                           request_id=request_id, run_id=stuck.run_id)
    if run_status in LIVE_RUN_STATUSES and instance is not None:
        # A daemon-launched run's worker gets Dagster's interrupt too; an `intent run` has no
        # launcher to reach (terminate returns False) and stops through the store alone.
        try:
            instance.run_launcher.terminate(stuck.run_id)
        except Exception as exc:
            stuck.errors.append(f"terminate: {type(exc).__name__}: {exc}")
    return stuck


def collect_forensics(home: IntentHome, store: StateStore, instance: Any | None, row: dict[str, Any]) -> Path:
    """Write what an operator needs to understand a stuck request; returns the directory."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = home.forensics / str(row["request_id"]) / stamp
    target.mkdir(parents=True, exist_ok=True)
    request = {k: v for k, v in row.items() if k != "params"}  # params may hold what an alert must not
    _write_json(target / "request.json", request)
    pgid, host = row["step_pgid"], row["step_host"]
    if pgid and host == socket.gethostname():
        text = _ps(["-g", str(pgid)])
    elif pgid:
        text = f"process group {pgid} runs on {host}, not on {socket.gethostname()}: not inspected\n"
    else:
        text = "no step process recorded (between steps, or the step runs no command)\n"
    (target / "processes.txt").write_text(text, encoding="utf-8")
    holder = store.lock_holder(row["lock_key"]) if row["lock_key"] else None
    lock: dict[str, Any] = {"lock": row["lock_key"], "holder": asdict(holder) if holder else None,
                            "held_by_this_request": bool(holder and holder.request_id == row["request_id"]),
                            "all_locks": [asdict(h) for h in store.locks()]}
    if holder and holder.host == socket.gethostname():
        lock["holder_process"] = _ps(["-p", str(holder.pid)])
    _write_json(target / "lock.json", lock)
    (target / "log_tail.txt").write_text(_log_tails(home.root / "logs" / "steps" / str(row["request_id"])),
                                         encoding="utf-8")
    run: dict[str, Any] = {"run_id": row["run_id"], "status": _run_status(instance, row["run_id"])}
    if instance is not None:
        try:
            found = instance.get_run_by_id(row["run_id"])
        except Exception as exc:  # forensics are written with what could be read
            found, run["error"] = None, f"could not read the run: {type(exc).__name__}: {exc}"
        if found is not None:
            run["tags"] = dict(found.tags)
            run["job_name"] = found.job_name
    _write_json(target / "dagster_run.json", run)
    return target


def _ps(selector: list[str]) -> str:
    argv = ["ps", "-o", "pid,pgid,stat,etime,args", *selector]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"$ {' '.join(argv)}\n{type(exc).__name__}: {exc}\n"
    return f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}"


def _log_tails(log_dir: Path) -> str:
    logs = sorted(log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime) if log_dir.is_dir() else []
    if not logs:
        return f"no step logs under {log_dir}\n"
    parts = []
    for path in logs:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            tail = deque(fh, maxlen=LOG_TAIL_LINES)
        parts.append(f"==> {path.name} (last {len(tail)} lines) <==\n" + "".join(tail))
    return "\n".join(parts)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


# --- making sure it ends -----------------------------------------------------------------------

def _wait_for_engine(store: StateStore, stuck: list[StuckRequest], *, timeout_s: float) -> None:
    """Give live workers the grace period to end their requests themselves."""
    deadline = time.monotonic() + timeout_s
    while True:
        for s in stuck:
            if s.ended_by != "pending":
                continue
            row = store.request(s.request_id)
            if row is not None and row["status"] != RequestStatus.RUNNING.value:
                s.ended_by, s.status = "engine", str(row["status"])
                s.lock_released = not s.lock or _lock_free_of(store, s.lock, s.request_id)
        if all(s.ended_by != "pending" for s in stuck) or time.monotonic() >= deadline:
            return
        time.sleep(0.25)


def _lock_free_of(store: StateStore, key: str, request_id: str) -> bool:
    holder = store.lock_holder(key)
    return holder is None or holder.request_id != request_id


def _kill_groups(stuck: Iterable[StuckRequest], *, grace_s: float) -> None:
    """SIGTERM every local process group left behind, wait the grace, SIGKILL what remains."""
    here = socket.gethostname()
    local = [s for s in stuck if s.pgid and s.host == here and group_alive(s.pgid)]
    for s in local:
        assert s.pgid is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(s.pgid, signal.SIGTERM)
        s.killed = True
    deadline = time.monotonic() + grace_s
    while local and time.monotonic() < deadline and any(group_alive(s.pgid or 0) for s in local):
        time.sleep(0.1)
    for s in local:
        assert s.pgid is not None
        if group_alive(s.pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(s.pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while local and time.monotonic() < deadline and any(group_alive(s.pgid or 0) for s in local):
        time.sleep(0.1)
    for s in local:
        if group_alive(s.pgid or 0):
            s.errors.append(f"process group {s.pgid} survived SIGKILL")


def _end_request(home: IntentHome, store: StateStore, instance: Any | None, stuck: StuckRequest, *,
                 requested_at: float) -> None:
    """End the request the way the engine would have: steps failed, lock released, audited."""
    request_id, run_id = stuck.request_id, stuck.run_id
    if stuck.pgid and stuck.host != socket.gethostname():
        # Its step may still run on another host: ending it here would free the lock under a live
        # process. Leave it for the operator (the alert says so).
        stuck.errors.append(f"process group {stuck.pgid} is on {stuck.host}: not ended from here")
        return
    if any(e.endswith("survived SIGKILL") for e in stuck.errors):
        return
    error = StepStopped(f"stopped by the watchdog: {stuck.why}",
                        hint=f"See the forensics in {stuck.forensics or 'INTENT_HOME/forensics'}.")
    current = store.request(request_id)
    if current is None or current["status"] != RequestStatus.RUNNING.value:
        stuck.ended_by, stuck.status = "engine", str(current["status"]) if current else "UNKNOWN"
        stuck.lock_released = not stuck.lock or _lock_free_of(store, stuck.lock, request_id)
        return
    failed_step = ""
    for step in store.steps(request_id):
        if step["status"] == StepStatus.RUNNING.value:
            failed_step = step["step_id"]
            store.set_step(request_id, failed_step, StepStatus.FAILED, run_id=run_id, attempt=step["attempt"])
            store.append_event(ev.StepFail(step=failed_step, attempt=step["attempt"], error=error.message,
                                           failure_class="stopped", error_class="StepStopped"),
                               request_id=request_id, run_id=run_id)
    store.append_event(ev.RunCancelled(status=RequestStatus.WATCHDOG_STUCK.value, by=WHO, killed=stuck.killed,
                                       latency_ms=int((time.time() - requested_at) * 1000)),
                       request_id=request_id, run_id=run_id)
    ending = dataclasses.replace(Ending.of(error, step=failed_step, status=RequestStatus.WATCHDOG_STUCK),
                                 reason=Reason.STUCK)
    if end_request(store, home, request_id, run_id=run_id, ending=ending, by=WHO) is None:
        current = store.request(request_id)
        stuck.ended_by, stuck.status = "engine", str(current["status"]) if current else "UNKNOWN"
    else:
        stuck.ended_by, stuck.status = WHO, RequestStatus.WATCHDOG_STUCK.value
    stuck.lock_released = not stuck.lock or _lock_free_of(store, stuck.lock, request_id)
    _cancel_dagster_run(instance, stuck, store.request(request_id))


def _cancel_dagster_run(instance: Any | None, stuck: StuckRequest, row: dict[str, Any] | None) -> None:
    """A dead worker never reports its run's end: record it as canceled (so the queue moves on) and tag it."""
    if instance is None:
        return
    try:
        run = instance.get_run_by_id(stuck.run_id)
        if run is not None and run.status.value in LIVE_RUN_STATUSES:
            instance.report_run_canceled(run, message=f"Canceled by the intent watchdog: {stuck.why}")
        if run is not None and row is not None:
            instance.add_run_tags(stuck.run_id, run_tags.outcome_tags(row))
        stuck.run_status = _run_status(instance, stuck.run_id)
    except Exception as exc:
        stuck.errors.append(f"cancel run: {type(exc).__name__}: {exc}")


def _alert(home: IntentHome, stuck: StuckRequest, *, threshold_s: float) -> None:
    path = home.alerts / "watchdog.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "kind": "watchdog.stuck", "threshold_s": threshold_s, **asdict(stuck)}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True, default=str) + "\n")

