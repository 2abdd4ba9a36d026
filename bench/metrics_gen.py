"""Deterministic audit chains shaped like the engine's, for the metrics benchmark (generation is not timed).

Each request writes what the engine writes: request.start (intent, params, context, dry_run,
replay_of), lock.acquire, per step step.start and step.complete (or step.retry then a second
attempt, or step.fail with error/class/error_class/exit_code), rollback.start/complete/fail for the
steps done before a failure, run.cancel_requested / run.cancelled (latency_ms) when an operator
stops it, lock.release and request.complete — built by `lifecycle.finish.completion`, as the engine
builds it (status, reason, error, step, signature, exit_code, duration_ms). About 2% are refused
before any step (request.refused then request.complete REFUSED). About 8 events per request. The
typed columns are filled by `audit.export.typed_values`, as `day_table` fills them.
"""

import hashlib
import json
import random
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from intent_pipelines.audit.export import FILE_NAME, SCHEMA, TYPED_COLUMNS, typed_values
from intent_pipelines.audit.record import DOMAIN, FORMAT_VERSION, GENESIS_PREV
from intent_pipelines.lifecycle.finish import Ending, completion
from intent_pipelines.status import Reason, RequestStatus

START_DAY = datetime(2026, 1, 1, tzinfo=UTC)
INTENTS = ["deploy-app", "observe-app", "check-logs", "restart-app", "scale-app", "migrate-schema",
           "create-nextjs-app"]
INTENT_WEIGHTS = [30, 15, 15, 15, 10, 10, 5]
STEPS = ["preflight_checks", "build_image", "push_image", "migrate", "switch_release", "health_check",
         "smoke_test", "notify"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
FAILURES = [  # (error_class, class, message template)
    ("StepTimeout", "transient", "npm install timed out after {n}s in /srv/apps/app-{a}/build"),
    ("StepFailed", "deterministic", "command exited {e}: migration 00{n}_add_index failed"),
    ("StepFailed", "transient", "GET http://10.0.{a}.{e}:8080/health returned 503 after {n} attempts"),
    ("StepFailed", "deterministic", "image registry.local/app-{a}:1.{n}.0 not found (digest {h})"),
]
REFUSALS = [  # (error_class, reason, exit_code, message)
    ("PolicyDenied", Reason.POLICY, 3, "policy denies deploy-app on prod outside the change window"),
    ("LockBusy", Reason.LOCK_BUSY, 4, "lock app:{a} is held by another request"),
    ("ParamError", Reason.BAD_INPUT, 2, "param version: '1.x' does not match ^[0-9.]+$"),
]


def _ts(ms: int) -> str:
    return (START_DAY + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _request(rng: random.Random, clock: int, index: int, past: list[str]) -> list[tuple[int, str, dict[str, Any]]]:
    """(ms offset, kind, body) of one request."""
    intent = rng.choices(INTENTS, INTENT_WEIGHTS)[0]
    app = f"{rng.randrange(40):02d}"
    dry_run = rng.random() < 0.03
    start: dict[str, Any] = {
        "intent": intent, "version": rng.randrange(1, 4), "intent_sha256": rng.randbytes(32).hex(),
        "params": {"app": f"app-{app}", "version": f"1.{rng.randrange(40)}.0"},
        "context": {"host": f"ops-{rng.randrange(4)}", "env": rng.choice(["prod", "staging"])},
        "plan_hash": rng.randbytes(32).hex(), "who": rng.choice(PEOPLE), "reason": f"OPS-{rng.randrange(10_000)}",
        "dry_run": dry_run, "confirmed": False, "lock": None if dry_run else f"app:{app}"}
    if past and rng.random() < 0.02:
        start["replay_of"] = rng.choice(past)
        start["replay_mode"] = "exact"
    t = clock
    if not dry_run and rng.random() < 0.02:
        error_class, reason, exit_code, template = rng.choice(REFUSALS)
        message = template.format(a=app)
        refusal = Ending(RequestStatus.REFUSED, reason, error=message, cause=message, error_class=error_class,
                         exit_code=exit_code, step="preflight")
        refused = {key: start[key] for key in ("intent", "intent_sha256", "who", "reason", "dry_run")}
        return [(t, "request.refused", {**refused, "error": message, "error_class": error_class}),
                (t + 1, "request.complete", _complete(refusal, intent, False, 1))]
    events: list[tuple[int, str, dict[str, Any]]] = [(t, "request.start", start)]
    ending = Ending(RequestStatus.DRY_RUN if dry_run else RequestStatus.SUCCEEDED)
    if not dry_run:
        events.append((t + 1, "lock.acquire", {"lock": f"app:{app}"}))
        done: list[str] = []
        fate = rng.random()
        steps = rng.sample(STEPS, rng.choice((1, 2, 2, 3, 3)))
        fail_at = rng.randrange(len(steps)) if fate < 0.08 else -1
        cancel_at = rng.randrange(len(steps)) if 0.08 <= fate < 0.095 else -1
        for i, step in enumerate(steps):
            attempts = 2 if rng.random() < 0.05 else 1
            for attempt in range(1, attempts + 1):
                t += rng.randrange(1, 40)
                events.append((t, "step.start", {"step": step, "attempt": attempt, "action": f"run: ./{step}.sh"}))
                duration = rng.randrange(5, 90_000)
                t += duration
                if attempt < attempts:
                    events.append((t, "step.retry", {"step": step, "attempt": attempt, "class": "transient",
                                                     "error": f"connection reset after {rng.randrange(99)} ms",
                                                     "wait_ms": 1000 * attempt}))
                    continue
                if i == cancel_at:
                    latency = rng.randrange(50, 30_000)
                    events.append((t, "run.cancel_requested", {"who": rng.choice(PEOPLE), "reason": "stuck",
                                                               "grace_ms": 10_000, "status": "STOPPED_BY_OPERATOR"}))
                    t += latency
                    events.append((t, "step.fail", {
                        "step": step, "attempt": attempt, "class": "stopped", "error_class": "StepStopped",
                        "error": f"step {step} was interrupted by run termination", "exit_code": -15,
                        "duration_ms": duration}))
                    events.append((t, "run.cancelled", {"step": step, "status": "STOPPED_BY_OPERATOR",
                                                        "latency_ms": latency}))
                    error = f"step {step} was interrupted"
                    ending = Ending(RequestStatus.STOPPED_BY_OPERATOR, Reason.OPERATOR_STOP, error=error, cause=error,
                                    error_class="StepStopped", exit_code=7, step=step)
                elif i == fail_at:
                    error_class, klass, template = rng.choice(FAILURES)
                    message = template.format(n=rng.randrange(1, 999), a=app, e=rng.randrange(1, 255),
                                              h=rng.randbytes(8).hex())
                    events.append((t, "step.fail", {"step": step, "attempt": attempt, "class": klass,
                                                    "error_class": error_class, "error": message,
                                                    "exit_code": rng.choice((1, 2, 124)), "duration_ms": duration}))
                    status, exit_code = RequestStatus.FAILED, 5
                    if done:
                        ok = rng.random() < 0.8
                        status, exit_code = ((RequestStatus.ROLLED_BACK, 12) if ok
                                             else (RequestStatus.ROLLBACK_FAILED, 13))
                        for undo in reversed(done):
                            t += rng.randrange(1, 2000)
                            events.append((t, "rollback.start", {"step": undo}))
                            events.append((t + 5, "rollback.complete" if ok else "rollback.fail",
                                           {"step": undo} if ok else {"step": undo, "error": "undo failed"}))
                    reason = Reason.TIMEOUT if error_class == "StepTimeout" else Reason.STEP_FAILED
                    ending = Ending(status, reason, error=message, cause=message, error_class=error_class,
                                    exit_code=exit_code, step=step)
                else:
                    events.append((t, "step.complete", {"step": step, "attempt": attempt, "outputs": [],
                                                        "duration_ms": duration}))
                    done.append(step)
            if ending.status is not RequestStatus.SUCCEEDED:
                break
        t += rng.randrange(1, 50)
        events.append((t, "lock.release", {"lock": f"app:{app}"}))
    t += rng.randrange(1, 50)
    events.append((t, "request.complete", _complete(ending, intent, dry_run, t - clock)))
    return events


def _complete(ending: Ending, intent: str, dry_run: bool, duration_ms: int) -> dict[str, Any]:
    return completion(ending, by="engine", duration_ms=duration_ms, intent=intent, dry_run=dry_run).body()


def generate(root: Path, *, requests: int, days: int, seed: int) -> int:
    """Write ``requests`` requests' events as ``days`` daily partitions under ``root``; returns the event count."""
    rng = random.Random(seed)
    span = days * 86_400_000
    gap = span // requests
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    pack = struct.Struct(">Q").pack
    seq, prev, current_day = 0, GENESIS_PREV, 0
    past: list[str] = []

    def flush(day: int) -> None:
        nonlocal columns
        if columns["seq"]:
            path = root / f"date={(START_DAY + timedelta(days=day)).date().isoformat()}" / FILE_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(columns, schema=SCHEMA), path)
        columns = {name: [] for name in SCHEMA.names}

    pending: list[tuple[int, int, str, str, str, str, dict[str, Any]]] = []
    order = 0
    for index in range(requests):
        clock = index * gap + rng.randrange(gap)
        request_id = f"{rng.randbytes(16).hex()}"
        request_id = f"{request_id[:8]}-{request_id[8:12]}-{request_id[12:16]}-{request_id[16:20]}-{request_id[20:]}"
        intent = ""
        for ms, kind, body in _request(rng, clock, index, past):
            intent = body.get("intent", intent)
            order += 1
            pending.append((ms, order, kind, request_id, request_id, intent, body))
        if rng.random() < 0.01:
            past.append(request_id)
            past[:] = past[-1000:]
        if len(pending) > 50_000 or index == requests - 1:
            # Requests overlap in time: order the chain by ts like the store does.
            pending.sort()
            # Later requests start at or after the horizon, so everything before it is final.
            horizon = (index + 1) * gap if index < requests - 1 else None
            emit = [e for e in pending if horizon is None or e[0] < horizon]
            pending = [e for e in pending if horizon is not None and e[0] >= horizon]
            for ms, _, kind, request_id, run_id, intent, data in emit:
                day = ms // 86_400_000
                if day != current_day:
                    flush(current_day)
                    current_day = day
                ts = _ts(ms)
                body = json.dumps({**data, "kind": kind, "request_id": request_id, "run_id": run_id, "ts": ts},
                                  sort_keys=True, separators=(",", ":")).encode()
                digest = hashlib.sha256(DOMAIN + pack(seq) + prev + body).digest()
                for name, value in (("seq", seq), ("v", FORMAT_VERSION), ("ts", ts), ("request_id", request_id),
                                    ("run_id", run_id), ("kind", kind), ("prev", prev), ("hash", digest),
                                    ("body", body)):
                    columns[name].append(value)
                for name, value in zip(TYPED_COLUMNS, typed_values(data, intent or None, kind), strict=True):
                    columns[name].append(value)
                seq, prev = seq + 1, digest
    flush(current_day)
    return seq
