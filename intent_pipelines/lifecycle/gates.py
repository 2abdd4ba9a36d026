"""Manual gates: who approved or rejected which gate of which request (recorded once), and passing one."""

from collections.abc import Mapping
from typing import Any

from intent_pipelines.audit import events as ev
from intent_pipelines.errors import ApprovalRequired, GateRejected, UsageError
from intent_pipelines.lifecycle.finish import Ending
from intent_pipelines.lifecycle.recorder import Recorder
from intent_pipelines.spec.models import IntentSpec, StepSpec
from intent_pipelines.store import StateStore

DECISIONS = ("approved", "rejected")


def decide_gate(store: StateStore, spec: IntentSpec, row: dict[str, Any], step: str, *, decision: str,
                who: str, reason: str) -> None:
    """Record a decision on ``step`` of the request ``row``; the next re-execution acts on it.

    A rejection is final: a later approval must not revive the request it failed.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}")
    if not reason.strip():
        raise UsageError("--reason is required", hint="Say why; it goes into the audit log.")
    gates = [s.id for s in spec.steps if s.gate == "manual"]
    if step not in gates:
        raise UsageError(f"{row['intent']} has no manual gate {step!r}",
                         hint=f"Its manual gates: {', '.join(gates) or 'none'}.")
    request_id = str(row["request_id"])
    earlier = store.gate_decision(request_id, step)
    if earlier is not None and earlier["decision"] == "rejected":
        raise UsageError(f"gate {step} of request {request_id} was already rejected by {earlier['who']}",
                         hint="Start a new request (`intent replay` it) when the change is wanted again.")
    store.decide_gate(request_id, step, decision=decision, who=who, reason=reason)
    event: ev.Event = (ev.GateApproved(step=step, who=who, reason=reason) if decision == "approved"
                       else ev.GateRejectedEvent(step=step, who=who, reason=reason))
    store.append_event(event, request_id=request_id, run_id=str(row["run_id"]))


def pass_gate(rec: Recorder, row: Mapping[str, Any], step: StepSpec, run_id: str) -> None:
    """Let an approved gate through; otherwise end the request here (resumably) until a person decides."""
    request_id = row["request_id"]
    decision = rec.store.gate_decision(request_id, step.id)
    if decision is not None and decision["decision"] == "approved":
        rec.event(ev.GatePassed(step=step.id, approved_by=decision["who"]), request_id, run_id)
        return
    if decision is not None:
        raise GateRejected(f"gate {step.id} was rejected by {decision['who']}: {decision['reason']}",
                           hint="Start a new request when the change is wanted again.")
    rec.event(ev.GateApprovalRequired(step=step.id), request_id, run_id)
    waiting = ApprovalRequired(f"step {step.id} waits for approval",
                               hint=f"Run `intent approve {request_id} --step {step.id} --reason ...`, "
                                    "then re-execute the run from failure (UI) or `intent resume`.")
    # Waiting for a person may take hours: the request ends (resumably) and frees its lock; the
    # re-execution takes the lock again.
    rec.end(request_id, run_id, Ending.of(waiting, step=step.id))
    raise waiting
