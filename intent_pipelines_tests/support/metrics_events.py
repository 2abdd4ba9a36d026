"""A hand-computed day of requests, as the engine writes them: an Arrow table for unit tests, a real store for integration."""

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from intent_pipelines.audit import events as ev
from intent_pipelines.errors import ParamError, StepFailed, StepStopped
from intent_pipelines.lifecycle.finish import Ending, completion
from intent_pipelines.status import RequestStatus
from intent_pipelines.store import StateStore
from intent_pipelines.store import schema as store_schema

DAY = date(2026, 3, 10)
BEFORE, AFTER = "2026-03-09", "2026-03-11"


@dataclass(frozen=True)
class Event:
    ts: str
    request_id: str
    kind: str
    body: dict[str, Any]


def _at(day: str, clock: str) -> str:
    return f"{day}T{clock}Z"


def at(ts: str, request_id: str, event: ev.Event) -> Event:
    """A chain record of a typed event, with the body the writers emit (Event.body())."""
    return Event(ts, request_id, event.KIND, event.body())


def _request(rid: str, intent: str, ending: Ending, duration: int, *, start: str = "10:00:00.000",
             end: str = "10:01:00.000", start_day: str = DAY.isoformat(), end_day: str = DAY.isoformat(),
             middle: list[ev.Event] | None = None, dry_run: bool = False, replay_of: str | None = None,
             complete: bool = True) -> list[Event]:
    started = ev.RequestStart(intent=intent, params={"app": "hello"}, context={"dry_run": "true"}, who="alice",
                              dry_run=dry_run, replay_of=replay_of, replay_mode="exact" if replay_of else None)
    events = [at(_at(start_day, start), rid, started)]
    events += [at(_at(start_day, start), rid, event) for event in middle or []]
    if complete:
        done = completion(ending, by="engine", duration_ms=duration, intent=intent, dry_run=dry_run)
        events.append(at(_at(end_day, end), rid, done))
    return events


SUCCEEDED = Ending(RequestStatus.SUCCEEDED)
SWITCH_FAILED = StepFailed("health check failed after 30s on 10.0.0.7")
RESTART_FAILED = StepFailed("command exited 1 in /srv/apps/hello")
STOPPED = StepStopped("step build was interrupted by run termination")
BAD_PARAM = ParamError("param replicas must be >= 1", hint="Pass -p replicas=N with N >= 1.")

# Every body is made by the typed event constructors and every ending by lifecycle.finish.completion,
# as the engine makes them; the expected figures are worked out by hand in test_metrics.py.
EVENTS: list[Event] = [
    *_request("r9", "deploy-app", SUCCEEDED, 50_000, start="23:59:30.000", start_day=BEFORE,
              end="00:00:20.000", replay_of="r1"),
    *_request("r1", "deploy-app", SUCCEEDED, 10_000, middle=[
        ev.StepStart(step="build", attempt=1), ev.StepComplete(step="build", attempt=1, duration_ms=9000)]),
    *_request("r2", "deploy-app", SUCCEEDED, 20_000, middle=[
        ev.StepStart(step="build", attempt=1),
        ev.StepRetry(step="build", attempt=1, failure_class="transient", error="reset", wait_ms=1000),
        ev.StepStart(step="build", attempt=2), ev.StepComplete(step="build", attempt=2, duration_ms=500)]),
    *_request("r3", "deploy-app", Ending.of(SWITCH_FAILED, step="switch", status=RequestStatus.ROLLED_BACK),
              30_000, middle=[
                  ev.StepComplete(step="build", attempt=1, duration_ms=500),
                  ev.StepFail(step="switch", attempt=1, failure_class="deterministic", error_class="StepFailed",
                              error=SWITCH_FAILED.message, exit_code=1, duration_ms=2),
                  ev.RollbackStart(step="build"), ev.RollbackComplete(step="build")]),
    *_request("r4", "deploy-app", Ending.of(STOPPED, step="build"), 40_000, middle=[
        ev.RunCancelRequested(who="bob", reason="stuck", grace_ms=10000, status="STOPPED_BY_OPERATOR"),
        ev.StepFail(step="build", attempt=1, failure_class="stopped", error_class="StepStopped",
                    error=STOPPED.message, exit_code=-15, duration_ms=39000),
        ev.RunCancelled(step="build", status="STOPPED_BY_OPERATOR", latency_ms=1500)]),
    *_request("r5", "restart-app", SUCCEEDED, 5_000),
    *_request("r6", "restart-app", Ending.of(RESTART_FAILED, step="restart"), 7_000, middle=[
        ev.StepFail(step="restart", attempt=1, failure_class="deterministic", error_class="StepFailed",
                    error=RESTART_FAILED.message, exit_code=1, duration_ms=10)]),
    *_request("r7", "restart-app", Ending(RequestStatus.DRY_RUN), 100, dry_run=True),
    at(_at(DAY.isoformat(), "11:00:00.000"), "r8", ev.RequestRefused(
        intent="restart-app", error=BAD_PARAM.one_line(), error_class="ParamError", who="alice")),
    at(_at(DAY.isoformat(), "11:00:00.003"), "r8", completion(
        Ending.of(BAD_PARAM, step="preflight"), by="engine", duration_ms=3, intent="restart-app", dry_run=False)),
    *_request("r10", "deploy-app", SUCCEEDED, 60_000, start="23:59:50.000", end="00:00:50.000", end_day=AFTER),
    *_request("r11", "deploy-app", SUCCEEDED, 0, start="12:00:00.000", complete=False),
    # r12 failed, was resumed, and then succeeded: its last ending is its outcome.
    *_request("r12", "deploy-app", Ending.of(RESTART_FAILED, step="build"), 2_000, start="13:00:00.000",
              end="13:00:02.000", middle=[
                  ev.StepFail(step="build", attempt=1, failure_class="deterministic", error_class="StepFailed",
                              error=RESTART_FAILED.message, exit_code=1, duration_ms=2)]),
    at(_at(DAY.isoformat(), "13:05:00.000"), "r12", ev.RequestResume(previous_run_id="r12",
                                                                     previous_status="FAILED")),
    at(_at(DAY.isoformat(), "13:05:04.000"), "r12", completion(SUCCEEDED, by="engine", duration_ms=304_000,
                                                               intent="deploy-app", dry_run=False)),
]

# How chains written before endings carried their reason and signature look (kept readable): a
# refusal ended FAILED after a request.refused record, and failure fields live in step.fail only.
LEGACY_EVENTS: list[Event] = [
    Event(_at(DAY.isoformat(), "09:00:00.000"), "old1", "request.start", {"intent": "deploy-app", "dry_run": False}),
    Event(_at(DAY.isoformat(), "09:00:01.000"), "old1", "step.fail", {
        "step": "switch", "attempt": 1, "class": "deterministic", "error_class": "StepFailed",
        "error": "health check failed after 30s on 10.0.0.7", "exit_code": 1, "duration_ms": 2}),
    Event(_at(DAY.isoformat(), "09:00:02.000"), "old1", "request.complete",
          {"status": "FAILED", "error": "health check failed", "exit_code": 10, "duration_ms": 2000}),
    Event(_at(DAY.isoformat(), "09:10:00.000"), "old2", "request.refused", {
        "intent": "restart-app", "error": "param replicas must be >= 1", "error_class": "ParamError",
        "dry_run": False, "who": "alice", "reason": ""}),
    Event(_at(DAY.isoformat(), "09:10:00.003"), "old2", "request.complete",
          {"status": "FAILED", "error": "param replicas", "exit_code": 4, "duration_ms": 3}),
]


def typed(event: Event, intents: dict[str, str]) -> dict[str, Any]:
    """The export's columns for one event (as audit.export.day_table fills them), written out independently."""
    body = {**event.body, "kind": event.kind, "request_id": event.request_id, "run_id": event.request_id,
            "ts": event.ts}

    def of(name: str, kind: type) -> Any:
        value = body.get(name)
        return value if isinstance(value, kind) and not (kind is int and isinstance(value, bool)) else None

    duration = body.get("duration_ms")
    return {"ts": event.ts, "request_id": event.request_id, "kind": event.kind,
            "intent": body.get("intent") or intents.get(event.request_id), "step": body.get("step") or body.get("check"),
            "status": body.get("status"), "duration_ms": duration if isinstance(duration, int) else None,
            "dry_run": of("dry_run", bool), "replay_of": of("replay_of", str), "error": of("error", str),
            "error_class": of("error_class", str), "latency_ms": of("latency_ms", int),
            "reason": of("reason", str) if event.kind == "request.complete" else None,
            "signature": of("signature", str) if event.kind == "request.complete" else None,
            "body": json.dumps(body, sort_keys=True, separators=(",", ":")).encode()}


EXPORT_COLUMNS = pa.schema([
    ("ts", pa.string()), ("request_id", pa.string()), ("kind", pa.string()), ("intent", pa.string()),
    ("step", pa.string()), ("status", pa.string()), ("duration_ms", pa.int64()), ("dry_run", pa.bool_()),
    ("replay_of", pa.string()), ("error", pa.string()), ("error_class", pa.string()), ("latency_ms", pa.int64()),
    ("reason", pa.string()), ("signature", pa.string()), ("body", pa.binary())])
# Files exported before the body fields had typed columns: metrics parse those fields from `body`.
LEGACY_COLUMNS = pa.schema([EXPORT_COLUMNS.field(name) for name in (
    "ts", "request_id", "kind", "intent", "step", "status", "duration_ms", "body")])


def events_table(events: list[Event] | None = None, *, legacy: bool = False) -> pa.Table:
    """The fixture as an events table in chain (ts) order: the export's columns, or a legacy export's."""
    chosen = sorted(events if events is not None else EVENTS, key=lambda e: e.ts)
    intents = {e.request_id: e.body["intent"] for e in chosen if "intent" in e.body}
    schema = LEGACY_COLUMNS if legacy else EXPORT_COLUMNS
    rows = [typed(e, intents) for e in chosen]
    return pa.Table.from_pylist([{name: row[name] for name in schema.names} for row in rows], schema=schema)


def fill_store(store: StateStore, events: list[Event] | None = None) -> None:
    """Append the fixture to a real store's chain, then move each record to its ts (ts is not hashed)."""
    chosen = sorted(events if events is not None else EVENTS, key=lambda e: e.ts)
    for event in chosen:
        record = store.append_audit(event.kind, request_id=event.request_id, run_id=event.request_id, body=event.body)
        with store.engine.begin() as conn:
            conn.execute(sa.update(store_schema.audit_events).where(store_schema.audit_events.c.seq == record.seq)
                         .values(ts=event.ts))


@pytest.fixture(params=["typed", "legacy"])
def events(request: pytest.FixtureRequest) -> pa.Table:
    """The hand-computed fixture as an events table, as exported now (typed columns) and by older exports (body only)."""
    return events_table(legacy=request.param == "legacy")
