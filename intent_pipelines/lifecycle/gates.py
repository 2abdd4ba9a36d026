"""Manual gate decisions: who approved or rejected which gate of which request, recorded once."""

from typing import Any

from intent_pipelines.audit import events as ev
from intent_pipelines.errors import UsageError
from intent_pipelines.spec.models import IntentSpec
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
