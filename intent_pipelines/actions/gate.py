"""The `gate.manual` action: a step that only waits for a person's approval (the engine gates it)."""

from pydantic import Field

from intent_pipelines.actions.base import ActionInput, Outputs, action
from intent_pipelines.execution.context import ActionContext


class GateInput(ActionInput):
    message: str = Field(default="", description="what the approver should check")


def _preview(ctx: ActionContext, inp: GateInput) -> str:
    return "wait for a manual approval" + (f": {inp.message}" if inp.message else "")


@action("gate.manual", GateInput, preview=_preview)
def manual_gate(ctx: ActionContext, inp: GateInput) -> Outputs:
    """Nothing to do once approved; the approval itself is in the audit chain."""
    ctx.log("approved" + (f": {inp.message}" if inp.message else ""))
    return {}
