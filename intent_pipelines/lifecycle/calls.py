"""Doing (or previewing) one rendered call: an action, or a command whose outputs come from a file."""

from pathlib import Path

from pydantic import ValidationError

from intent_pipelines.actions import registry
from intent_pipelines.actions.base import Outputs
from intent_pipelines.errors import StepFailed
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.execution.runner import run_command
from intent_pipelines.plan import RenderedCall

OUTPUT_FILE_ENV = "INTENT_OUTPUT"


def preview(call: RenderedCall, ctx: ActionContext) -> str:
    """What a call would do, without doing it (actions may read state to say more)."""
    if call.kind == "uses":
        assert call.action is not None
        action = registry()[call.action]
        return action.preview(ctx, action.input_model.model_validate(call.inputs))
    return f"run: {call.describe()}"


def execute(call: RenderedCall, ctx: ActionContext) -> Outputs:
    """Run a rendered call: an action, or a command whose outputs come from $INTENT_OUTPUT."""
    if call.kind == "uses":
        assert call.action is not None
        action = registry()[call.action]
        try:
            inputs = action.input_model.model_validate(call.inputs)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise StepFailed(f"{call.action}: input {where}: {first['msg']}",
                             hint="Fix the step's `with:` value or the param it comes from.") from None
        return action.run(ctx, inputs)
    output_file = ctx.log_path.with_suffix(".outputs")
    output_file.unlink(missing_ok=True)
    run_command(ctx, call.argv, cwd=Path(call.cwd) if call.cwd else None,
                env={**call.env, OUTPUT_FILE_ENV: str(output_file)}, timeout_s=ctx.timeout_s)
    outputs = _read_outputs(output_file)
    output_file.unlink(missing_ok=True)  # the values live on in the store, masked; the raw file must not
    return outputs


def _read_outputs(path: Path) -> Outputs:
    """Parse ``key=value`` lines a command wrote to $INTENT_OUTPUT."""
    if not path.exists():
        return {}
    outputs: Outputs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            outputs[key.strip()] = value
    return outputs
