"""What an action is: a named, typed operation a step can `use`, with a dry-run preview."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from intent_pipelines.execution.context import ActionContext


class ActionInput(BaseModel):
    """Base of every action's ``with:`` model: unknown keys are mistakes, not extensions."""

    model_config = ConfigDict(extra="forbid")


Outputs = dict[str, Any]


@dataclass(frozen=True)
class ActionDef:
    """A registered action: ``run`` does the work, ``preview`` says (read-only) what it would do."""

    name: str
    input_model: type[ActionInput]
    run: Callable[[ActionContext, Any], Outputs]
    preview: Callable[[ActionContext, Any], str]
    summary: str = ""


REGISTRY: dict[str, ActionDef] = {}


def action(
    name: str,
    input_model: type[ActionInput],
    *,
    preview: Callable[[ActionContext, Any], str] | None = None,
) -> Callable[[Callable[[ActionContext, Any], Outputs]], Callable[[ActionContext, Any], Outputs]]:
    """Register ``fn`` as the action ``name`` whose ``with:`` is validated by ``input_model``."""

    def register(fn: Callable[[ActionContext, Any], Outputs]) -> Callable[[ActionContext, Any], Outputs]:
        if name in REGISTRY:
            raise ValueError(f"action {name!r} is registered twice")
        REGISTRY[name] = ActionDef(
            name=name,
            input_model=input_model,
            run=fn,
            preview=preview or (lambda ctx, inp: f"{name} {inp.model_dump_json()}"),
            summary=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
        )
        return fn

    return register
