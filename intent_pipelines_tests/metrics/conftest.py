"""A hand-computed day of requests, as audit events: an Arrow table for unit tests, a real store for integration."""

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

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


def _request(rid: str, intent: str, status: str, duration: int, *, start: str = "10:00:00.000",
             end: str = "10:01:00.000", start_day: str = DAY.isoformat(), end_day: str = DAY.isoformat(),
             middle: list[tuple[str, dict[str, Any]]] | None = None, dry_run: bool = False,
             replay_of: str | None = None, complete: bool = True) -> list[Event]:
    body: dict[str, Any] = {"intent": intent, "params": {"app": "hello"}, "context": {"dry_run": True},
                            "dry_run": dry_run, "who": "alice", "reason": ""}
    if replay_of:
        body["replay_of"] = replay_of
    events = [Event(_at(start_day, start), rid, "request.start", body)]
    events += [Event(_at(start_day, start), rid, kind, data) for kind, data in middle or []]
    if complete:
        events.append(Event(_at(end_day, end), rid, "request.complete",
                            {"status": status, "error": "", "exit_code": 0, "duration_ms": duration}))
    return events


# The fixture's expected figures are worked out by hand in test_metrics.py.
EVENTS: list[Event] = [
    *_request("r9", "deploy-app", "SUCCEEDED", 50_000, start="23:59:30.000", start_day=BEFORE,
              end="00:00:20.000", replay_of="r1"),
    *_request("r1", "deploy-app", "SUCCEEDED", 10_000, middle=[
        ("step.start", {"step": "build", "attempt": 1}),
        ("step.complete", {"step": "build", "attempt": 1, "duration_ms": 9000})]),
    *_request("r2", "deploy-app", "SUCCEEDED", 20_000, middle=[
        ("step.start", {"step": "build", "attempt": 1}),
        ("step.retry", {"step": "build", "attempt": 1, "class": "transient", "error": "reset", "wait_ms": 1000}),
        ("step.start", {"step": "build", "attempt": 2}),
        ("step.complete", {"step": "build", "attempt": 2, "duration_ms": 500})]),
    *_request("r3", "deploy-app", "ROLLED_BACK", 30_000, middle=[
        ("step.complete", {"step": "build", "attempt": 1, "duration_ms": 500}),
        ("step.fail", {"step": "switch", "attempt": 1, "class": "deterministic", "error_class": "StepFailed",
                       "error": "health check failed after 30s on 10.0.0.7", "exit_code": 1, "duration_ms": 2}),
        ("rollback.start", {"step": "build"}), ("rollback.complete", {"step": "build"})]),
    *_request("r4", "deploy-app", "STOPPED_BY_OPERATOR", 40_000, middle=[
        ("run.cancel_requested", {"who": "bob", "reason": "stuck", "grace_ms": 10000,
                                  "status": "STOPPED_BY_OPERATOR"}),
        ("step.fail", {"step": "build", "attempt": 1, "class": "stopped", "error_class": "StepStopped",
                       "error": "step build was interrupted by run termination", "exit_code": -15,
                       "duration_ms": 39000}),
        ("run.cancelled", {"step": "build", "status": "STOPPED_BY_OPERATOR", "latency_ms": 1500})]),
    *_request("r5", "restart-app", "SUCCEEDED", 5_000),
    *_request("r6", "restart-app", "FAILED", 7_000, middle=[
        ("step.fail", {"step": "restart", "attempt": 1, "class": "deterministic", "error_class": "StepFailed",
                       "error": "command exited 1 in /srv/apps/hello", "exit_code": 1, "duration_ms": 10})]),
    *_request("r7", "restart-app", "DRY_RUN", 100, dry_run=True),
    Event(_at(DAY.isoformat(), "11:00:00.000"), "r8", "request.refused",
          {"intent": "restart-app", "error": "param replicas must be >= 1", "error_class": "ParamError",
           "dry_run": False, "who": "alice", "reason": ""}),
    Event(_at(DAY.isoformat(), "11:00:00.003"), "r8", "request.complete",
          {"status": "FAILED", "error": "param replicas", "exit_code": 4, "duration_ms": 3}),
    *_request("r10", "deploy-app", "SUCCEEDED", 60_000, start="23:59:50.000", end="00:00:50.000", end_day=AFTER),
    *_request("r11", "deploy-app", "RUNNING", 0, start="12:00:00.000", complete=False),
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
            "body": json.dumps(body, sort_keys=True, separators=(",", ":")).encode()}


EXPORT_COLUMNS = pa.schema([
    ("ts", pa.string()), ("request_id", pa.string()), ("kind", pa.string()), ("intent", pa.string()),
    ("step", pa.string()), ("status", pa.string()), ("duration_ms", pa.int64()), ("dry_run", pa.bool_()),
    ("replay_of", pa.string()), ("error", pa.string()), ("error_class", pa.string()), ("latency_ms", pa.int64()),
    ("body", pa.binary())])
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
