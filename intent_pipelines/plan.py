"""Spec + params + context -> ExecutionPlan: rendered steps, DAG levels, critical path, plan hash."""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from intent_pipelines.errors import PolicyDenied, TemplateError
from intent_pipelines.rendering import MAX_RENDERED_CHARS, evaluate, references, render, render_native, render_scope
from intent_pipelines.spec.models import ActionCall, IntentSpec, RetrySpec

CallKind = Literal["run", "shell", "uses"]

# Canonical JSON of one plan. Every plan shown or run is kept in the state store (plans table), so
# this bounds what one `intent plan` adds to it; the rendered templates are held to the same figure
# while they render (rendering.MAX_RENDERED_CHARS), this also covers params and literal text.
MAX_PLAN_BYTES = MAX_RENDERED_CHARS


class _PendingOutputs(dict[str, str]):
    """Stands in for a step's outputs before it has run: shows where the value will come from."""

    def __init__(self, step_id: str) -> None:
        super().__init__()
        self.step_id = step_id

    def __missing__(self, key: str) -> str:
        return f"<steps.{self.step_id}.outputs.{key}>"


def namespace(
    *,
    params: Mapping[str, Any],
    context: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]] | None,
    app: Mapping[str, Any] | None,
    request: Mapping[str, Any],
    step_ids: list[str],
) -> dict[str, Any]:
    """The names a template sees; ``outputs=None`` means plan time (step outputs still pending)."""
    steps: dict[str, dict[str, Mapping[str, Any]]]
    if outputs is None:
        steps = {s: {"outputs": _PendingOutputs(s)} for s in step_ids}
    else:
        steps = {s: {"outputs": dict(outputs.get(s, {}))} for s in step_ids}
    return {"params": dict(params), "context": dict(context), "steps": steps,
            "app": dict(app or {}), "request": dict(request)}


def request_view(request_id: str, *, dry_run: bool = False, reason: str = "") -> dict[str, Any]:
    """What templates see as `request` (at plan time the id is a placeholder)."""
    return {"id": request_id, "dry_run": dry_run, "reason": reason}


@dataclass(frozen=True)
class RenderedCall:
    """A command or action with every template rendered."""

    kind: CallKind
    argv: tuple[str, ...] = ()
    action: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None

    def describe(self) -> str:
        """One line for plans, logs and audit records."""
        if self.kind == "uses":
            args = " ".join(f"{k}={v}" for k, v in self.inputs.items())
            return f"{self.action} {args}".rstrip()
        if self.kind == "shell":
            return self.argv[-1]
        return " ".join(self.argv)


def _render_value(value: Any, ns: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        return render_native(value, ns, where=where)
    if isinstance(value, list):
        return [_render_value(v, ns, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _render_value(v, ns, f"{where}.{k}") for k, v in value.items()}
    return value


def render_call(call: ActionCall, ns: Mapping[str, Any], *, where: str) -> RenderedCall:
    """Render one step, rollback or check; shell strings get every interpolation shell-quoted.

    Its templates share one budget (rendering.render_scope), or the plan's when it is being built.
    """
    with render_scope():
        return _render_call(call, ns, where=where)


def _render_call(call: ActionCall, ns: Mapping[str, Any], *, where: str) -> RenderedCall:
    env = {k: render(v, ns, where=f"{where}.env.{k}") for k, v in call.env.items()}
    cwd = render(call.cwd, ns, where=f"{where}.cwd") if call.cwd else None
    if call.uses is not None:
        return RenderedCall("uses", action=call.uses, env=env, cwd=cwd,
                            inputs=_render_value(call.with_, ns, f"{where}.with"))
    if isinstance(call.run, str):
        command = render(call.run, ns, shell=True, where=f"{where}.run")
        return RenderedCall("shell", argv=("/bin/sh", "-c", command), env=env, cwd=cwd)
    assert call.run is not None
    argv = tuple(render(a, ns, where=f"{where}.run[{i}]") for i, a in enumerate(call.run))
    return RenderedCall("run", argv=argv, env=env, cwd=cwd)


def reads_step_outputs(call: ActionCall) -> bool:
    """Whether a call's templates read other steps' outputs (so it is rendered again at run time)."""
    return _reads_steps([call.run, call.with_, call.env, call.cwd])


def _reads_steps(value: Any, *, expression: bool = False) -> bool:
    """Whether any template inside ``value`` (strings, lists, dicts) reads step outputs."""
    if isinstance(value, str):
        return any(ns == "steps" for ns, _ in references(value, expression=expression))
    if isinstance(value, list):
        return any(_reads_steps(v) for v in value)
    if isinstance(value, dict):
        return any(_reads_steps(v) for v in value.values())
    return False


@dataclass(frozen=True)
class PlannedStep:
    """One step as it will run (templates reading other steps' outputs show placeholders)."""

    id: str
    needs: tuple[str, ...]
    call: RenderedCall
    level: int
    timeout_s: float | None
    retry: RetrySpec
    pool: str | None
    # None when the condition reads step outputs and is decided at run time.
    when: bool | None
    rollback: RenderedCall | None
    # True when a template reads step outputs: the executor renders the call again at run time.
    deferred: bool


@dataclass(frozen=True)
class PlannedCheck:
    """A verify check as it will run."""

    id: str
    call: RenderedCall
    timeout_s: float | None


@dataclass(frozen=True)
class ExecutionPlan:
    """What a request will do, rendered from spec + params + context; hashable and comparable."""

    intent: str
    version: str
    intent_sha256: str
    params: dict[str, Any]
    context: dict[str, str]
    lock: str | None
    lock_wait_s: float
    timeout_s: float | None
    confirm_required: bool
    steps: tuple[PlannedStep, ...]
    verify: tuple[PlannedCheck, ...]
    levels: tuple[tuple[str, ...], ...]
    critical_path: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output and hashing."""
        data = asdict(self)
        for step in data["steps"]:
            step["retry"] = self.step(step["id"]).retry.model_dump(mode="json")
        return data

    def canonical_json(self) -> str:
        """The plan as sorted, compact JSON: what its hash is taken of."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)

    @property
    def plan_hash(self) -> str:
        """sha256 of the canonical JSON of the plan: same inputs, same hash, on any machine."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def step(self, step_id: str) -> PlannedStep:
        """The planned step with this id."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


def dag_levels(needs: Mapping[str, list[str] | tuple[str, ...]]) -> dict[str, int]:
    """Level of each step: 0 for steps with no needs, else 1 + the deepest need."""
    levels: dict[str, int] = {}

    def level(step: str) -> int:
        if step not in levels:
            levels[step] = 1 + max((level(n) for n in needs[step]), default=-1)
        return levels[step]

    for step in needs:
        level(step)
    return levels


def critical_path(needs: Mapping[str, list[str] | tuple[str, ...]],
                  weight: Mapping[str, float]) -> list[str]:
    """The heaviest chain of dependent steps (weights are timeouts, or 1 when unset)."""
    best: dict[str, tuple[float, list[str]]] = {}

    def heaviest(step: str) -> tuple[float, list[str]]:
        if step not in best:
            upstream = [heaviest(n) for n in needs[step]]
            cost, path = max(upstream, default=(0.0, []), key=lambda t: t[0])
            best[step] = (cost + weight[step], [*path, step])
        return best[step]

    return max((heaviest(s) for s in needs), default=(0.0, []), key=lambda t: t[0])[1]


def build_plan(
    spec: IntentSpec,
    *,
    intent_sha256: str,
    params: Mapping[str, Any],
    context: Mapping[str, str],
    app: Mapping[str, Any] | None = None,
) -> ExecutionPlan:
    """Render the plan; ``params`` must already be validated and have secrets redacted.

    Raises PolicyDenied when a deny rule matches, TemplateError when a template fails or the plan
    is over its limits (all its templates render against one budget, see rendering.py).
    """
    with render_scope():
        plan = _build_plan(spec, intent_sha256=intent_sha256, params=params, context=context, app=app)
    size = len(plan.canonical_json().encode("utf-8"))
    if size > MAX_PLAN_BYTES:
        raise TemplateError(f"the plan of {spec.name} is {size:,} bytes, over the limit of {MAX_PLAN_BYTES:,}",
                            hint='Pass smaller params or render less; see "Limits" in docs/intents-reference.md.')
    return plan


def _build_plan(
    spec: IntentSpec,
    *,
    intent_sha256: str,
    params: Mapping[str, Any],
    context: Mapping[str, str],
    app: Mapping[str, Any] | None,
) -> ExecutionPlan:
    step_ids = [s.id for s in spec.steps]
    ns = namespace(params=params, context=context, outputs=None, app=app,
                   request=request_view("<request.id>"), step_ids=step_ids)
    for index, rule in enumerate(spec.policy.deny):
        if evaluate(rule.when, ns, where=f"policy.deny[{index}]"):
            raise PolicyDenied(f"{spec.name} refused by policy: {rule.reason}",
                               hint="Change the params, or the policy if this is intended.")
    needs = {s.id: s.needs for s in spec.steps}
    levels = dag_levels(needs)
    planned = []
    for step in spec.steps:
        where = f"steps.{step.id}"
        deferred_when = step.when is not None and _reads_steps(step.when, expression=True)
        planned.append(PlannedStep(
            id=step.id,
            needs=tuple(step.needs),
            call=render_call(step, ns, where=where),
            level=levels[step.id],
            timeout_s=step.timeout,
            retry=step.retry,
            pool=step.pool,
            when=None if deferred_when else (True if step.when is None
                                             else evaluate(step.when, ns, where=f"{where}.when")),
            rollback=render_call(step.rollback, ns, where=f"{where}.rollback") if step.rollback else None,
            deferred=reads_step_outputs(step),
        ))
    by_level: dict[int, list[str]] = {}
    for step_id, lvl in levels.items():
        by_level.setdefault(lvl, []).append(step_id)
    return ExecutionPlan(
        intent=spec.name,
        version=str(spec.version),
        intent_sha256=intent_sha256,
        params=dict(params),
        context=dict(context),
        lock=render(spec.policy.lock, ns, where="policy.lock") if spec.policy.lock else None,
        lock_wait_s=spec.policy.lock_wait,
        timeout_s=spec.policy.timeout,
        confirm_required=evaluate(spec.policy.confirm, ns, where="policy.confirm"),
        steps=tuple(planned),
        verify=tuple(PlannedCheck(c.id, render_call(c, ns, where=f"verify.{c.id}"), c.timeout)
                     for c in spec.verify),
        levels=tuple(tuple(by_level[lvl]) for lvl in sorted(by_level)),
        critical_path=tuple(critical_path(needs, {s.id: s.timeout or 1.0 for s in spec.steps})),
    )
