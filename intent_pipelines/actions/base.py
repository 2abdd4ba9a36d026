"""What an action is: a named, typed operation a step can `use`, with a dry-run preview."""

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from intent_pipelines.home import IntentHome


class ActionInput(BaseModel):
    """Base of every action's ``with:`` model: unknown keys are mistakes, not extensions."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class ActionContext:
    """Everything an action may touch while it runs one step of one request."""

    request_id: str
    step_id: str
    home: IntentHome
    log_path: Path
    dry_run: bool = False
    timeout_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # Called with each line of output so the Dagster op can stream it; tests pass a list.append.
    emit: Callable[[str], None] = lambda line: None
    # Values of secret params: masked in every log line, audit record and error message.
    secrets: tuple[str, ...] = ()
    # Set by the heartbeat when an operator or the watchdog stops the request.
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_grace_s: float = 10.0
    # Called with the process group id of each command the step starts (for stop and the watchdog).
    on_process: Callable[[int], None] = lambda pgid: None
    last_line: str = ""

    def redact(self, text: str) -> str:
        """``text`` with every secret value replaced by ***."""
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def log(self, line: str) -> None:
        """Append one line to the step log and stream it (secrets masked)."""
        line = self.redact(line)
        self.last_line = line
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")
        self.emit(line)


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
