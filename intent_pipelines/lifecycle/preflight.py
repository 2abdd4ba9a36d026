"""Before anything runs: validate and plan (context captured once), record the request, take its lock."""

import getpass
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from intent_pipelines.actions import registry
from intent_pipelines.audit import events as ev
from intent_pipelines.confirmation import check_confirmation, parse_confirm, plan_json
from intent_pipelines.errors import (
    ConfirmationRequired,
    IntentError,
    ParamError,
    StepFailed,
    TemplateError,
    UsageError,
)
from intent_pipelines.execution.runner import run_command
from intent_pipelines.lifecycle.finish import Ending
from intent_pipelines.lifecycle.lease import take_lock
from intent_pipelines.lifecycle.liveness import Owner
from intent_pipelines.lifecycle.recorder import Recorder, print_line, secret_values
from intent_pipelines.lifecycle.replay import original_request
from intent_pipelines.lifecycle.resume import RESUMABLE
from intent_pipelines.plan import (
    ExecutionPlan,
    RenderedCall,
    build_plan,
    namespace,
    reads_step_outputs,
    render_call,
    request_view,
)
from intent_pipelines.spec.loader import LoadedIntent, locate
from intent_pipelines.spec.models import ActionCall, IntentSpec
from intent_pipelines.spec.params import REDACTED, redact, resolve_params
from intent_pipelines.status import RequestStatus


@dataclass(frozen=True)
class LaunchRequest:
    """What an operator asked for: which intent, with which params, and how."""

    params: Mapping[str, Any]
    dry_run: bool = False
    # True, or the hash of the plan being confirmed (see confirmation.py).
    confirm: bool | str = False
    reason: str = ""
    who: str = ""
    # A replay names the request it repeats; its recorded context is reused unless fresh_context.
    replay_of: str = ""
    fresh_context: bool = False
    # The hash of a plan already shown (the CLI, a dry run): its captured context is reused, so the
    # plan that runs is exactly the plan that was shown and confirmed.
    plan: str = ""


def capture_context(rec: Recorder, spec: IntentSpec, params: Mapping[str, Any], *, request_id: str,
                    emit: Callable[[str], None] | None = None) -> dict[str, str]:
    """Run the intent's context commands once and return their trimmed output."""
    ns = namespace(params=params, context={}, outputs=None, app=rec.app_view(spec, params),
                   request=request_view(request_id), step_ids=[])
    values: dict[str, str] = {}
    for name, capture in spec.context.items():
        call = render_call(ActionCall(run=capture.run), ns, where=f"context.{name}")
        ctx = rec.action_context(request_id, "_context", emit, secrets=secret_values(spec, ns),
                                 inherit=tuple(spec.inherit_env))
        try:
            result = run_command(ctx, call.argv, timeout_s=capture.timeout)
            values[name] = result.tail.strip().splitlines()[-1] if result.tail.strip() else ""
        except StepFailed as exc:
            if not capture.optional:
                raise StepFailed(f"context {name!r} could not be captured: {exc.message}",
                                 detail=exc.detail, hint=exc.hint) from None
            values[name] = ""
    return values


def make_plan(rec: Recorder, loaded: LoadedIntent, given: Mapping[str, Any], *, request_id: str = "plan",
              context: Mapping[str, str] | None = None,
              emit: Callable[[str], None] | None = None) -> tuple[ExecutionPlan, dict[str, Any]]:
    """Validate params and policy and render the plan; returns (plan, real param values).

    Raises ParamError, FleetError, PolicyDenied or TemplateError before anything runs.
    """
    spec = loaded.spec
    values = resolve_params(spec, given)
    app = rec.app_view(spec, values)
    try:
        if context is None:
            context = capture_context(rec, spec, values, request_id=request_id, emit=emit)
        shown = redact(spec, values)
        plan = build_plan(spec, intent_sha256=loaded.sha256, params=shown, context=dict(context), app=app)
        check_action_inputs(spec, plan)
    except (TemplateError, ParamError) as exc:
        raise _located(loaded, exc) from None
    rec.store.save_plan(plan.plan_hash, plan_json(plan))
    return plan, values


def check_action_inputs(spec: IntentSpec, plan: ExecutionPlan) -> None:
    """Validate the `with:` of every action call already rendered in full, as the action will.

    A bad regex or date from a param is then refused before anything runs (ParamError, exit 4)
    instead of failing its step. Calls that read other steps' outputs are rendered again at run
    time and checked then; a step whose `when` is false never runs and is not checked.
    """
    calls: list[tuple[str, RenderedCall]] = []
    for planned, step in zip(plan.steps, spec.steps, strict=True):
        if not planned.deferred and planned.when is not False:
            calls.append((f"steps.{planned.id}", planned.call))
        if planned.rollback is not None and step.rollback is not None and not reads_step_outputs(step.rollback):
            calls.append((f"steps.{planned.id}.rollback", planned.rollback))
    calls += [(f"verify.{planned.id}", planned.call) for planned, check in zip(plan.verify, spec.verify, strict=True)
              if not reads_step_outputs(check)]
    actions = registry()
    for where, call in calls:
        if call.kind != "uses" or call.action not in actions:
            continue
        try:
            actions[call.action].input_model.model_validate(call.inputs)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            problem = first["msg"].removeprefix("Value error, ")
            raise ParamError(f"{where}.with.{field}: {call.action}: {problem}",
                             hint="Fix the param it comes from, or the step's `with:` value.") from None


# Errors of plan and rendering name their place as a spec path ("steps.build.with.app: ...").
_SPEC_PLACE = re.compile(r"^(?:steps|verify|policy|context)\b[^:\s]*$")


def _located(loaded: LoadedIntent, error: TemplateError | ParamError) -> TemplateError | ParamError:
    """``error`` with the file and line of the place it names put first, as SpecError does."""
    where = error.message.split(": ", 1)[0]
    if not _SPEC_PLACE.match(where):
        return error
    return type(error)(f"{locate(loaded, where)}: {error.message}", hint=error.hint)


def preflight(rec: Recorder, loaded: LoadedIntent, launch: LaunchRequest, *, request_id: str,
              run_id: str, owner: Owner | None = None) -> ExecutionPlan:
    """Validate, plan, record ``request.start`` and take the lock. Idempotent per request."""
    existing = rec.store.request(request_id)
    if existing is not None and existing["status"] != RequestStatus.RUNNING.value \
            and existing["status"] not in RESUMABLE:
        # Re-executing a finished request (e.g. "all steps" after success) must not take its lock again.
        raise UsageError(f"request {request_id} already ended {existing['status']}",
                         hint=f"Start a new request, or `intent replay {request_id}`.")
    emit = print_line("preflight")
    original = _replayed(rec, launch.replay_of) if launch.replay_of else None
    _, bound = parse_confirm(launch.confirm)
    # A confirmation given in another command (--confirm=HASH) is checked against a fresh capture:
    # the world may have changed since. Within one command the plan shown is the plan run.
    context = existing["context"] if existing else shown_context(rec, launch.plan)
    if context is None and original is not None and not launch.fresh_context:
        context = original["context"]
    plan, values = make_plan(rec, loaded, launch.params, request_id=request_id, context=context, emit=emit)
    check_confirmation(plan, launch.confirm, dry_run=launch.dry_run,
                       confirmed_plan_body=rec.store.plan_body(bound) if bound else None)
    if original is not None and original.get("confirmed") and not parse_confirm(launch.confirm)[0] \
            and not launch.dry_run:
        raise ConfirmationRequired(f"request {launch.replay_of} needed confirmation, so its replay does too",
                                   hint=f"Pass --confirm={plan.plan_hash[:12]} (or --confirm).")
    who = launch.who or getpass.getuser()
    # Numbers as their decimal text: the audit chain holds no floats (a replay parses them back).
    recorded_params = {k: repr(v) if isinstance(v, float) else v for k, v in redact(loaded.spec, values).items()}
    created = rec.store.create_request(
        request_id=request_id, intent=plan.intent, run_id=run_id, params=recorded_params,
        context=plan.context, plan_hash=plan.plan_hash, intent_sha256=loaded.sha256,
        lock_key=plan.lock, dry_run=launch.dry_run, reason=launch.reason, who=who,
        replay_of=launch.replay_of or None)
    if owner is not None:
        rec.store.set_owner(request_id, host=owner.host, pid=owner.pid, token=owner.token)
    if created:
        _record_intent_file(rec, loaded, request_id, run_id)
        rec.event(ev.RequestStart(
            intent=plan.intent, version=plan.version, intent_sha256=loaded.sha256,
            params=recorded_params, context=plan.context, plan_hash=plan.plan_hash, who=who,
            reason=launch.reason, dry_run=launch.dry_run, confirmed=parse_confirm(launch.confirm)[0],
            lock=plan.lock, replay_of=launch.replay_of if original is not None else None,
            replay_mode=_replay_mode(original, recorded_params, launch.fresh_context,
                                     drifted=original.get("intent_sha256") != loaded.sha256)
            if original is not None else None), request_id, run_id)
    if plan.lock and not launch.dry_run:
        take_lock(rec, plan.lock, request_id, run_id, wait_s=plan.lock_wait_s)
    emit(f"plan {plan.plan_hash[:12]} for {plan.intent}: {len(plan.steps)} steps"
         + (" (dry run)" if launch.dry_run else ""))
    return plan


def shown_context(rec: Recorder, plan_hash: str) -> dict[str, str] | None:
    """The context captured for a plan shown earlier (by hash or unique prefix); None if not given.

    Context captures run once per request: a plan that was shown (and confirmed) is run with
    the values it was shown with, never captured again.
    """
    if not plan_hash:
        return None
    body = rec.store.plan_body(plan_hash)
    if body is None:
        raise UsageError(f"no plan {plan_hash[:12]} in the store (or the prefix is ambiguous)",
                         hint="Show the plan again with `intent plan` or --dry-run and use its hash.")
    return dict(json.loads(body).get("context", {}))


def abort_preflight(rec: Recorder, loaded: LoadedIntent, launch: LaunchRequest, *, request_id: str,
                    run_id: str, error: IntentError) -> None:
    """Record a request refused or failed in preflight, so every attempt is on the record.

    Params are not recorded: they did not validate, and an unknown key might hold a secret.
    """
    if rec.store.request(request_id) is None:
        who = launch.who or getpass.getuser()
        rec.store.create_request(
            request_id=request_id, intent=loaded.spec.name, run_id=run_id, params={}, context={},
            plan_hash="", intent_sha256=loaded.sha256, lock_key=None, dry_run=launch.dry_run,
            reason=launch.reason, who=who)
        rec.event(ev.RequestRefused(
            intent=loaded.spec.name, intent_sha256=loaded.sha256, who=who, reason=launch.reason,
            dry_run=launch.dry_run, error=error.one_line(), error_class=type(error).__name__),
            request_id, run_id)
    rec.end(request_id, run_id, Ending.of(error, step="preflight"))


def _record_intent_file(rec: Recorder, loaded: LoadedIntent, request_id: str, run_id: str) -> None:
    """Keep the exact intent file, in the store and (first time only) in the audit chain."""
    if rec.store.intent_file(loaded.sha256) is None:
        rec.store.put_intent_file(loaded.sha256, loaded.spec.name, loaded.content)
        rec.event(ev.IntentFile(intent=loaded.spec.name, intent_sha256=loaded.sha256, content=loaded.content),
                  request_id, run_id)


def _replayed(rec: Recorder, request_id: str) -> dict[str, Any]:
    """The request.start body of the request being replayed (refused if unknown)."""
    return original_request(rec.store, rec.home, request_id).start


def _replay_mode(original: Mapping[str, Any], params: Mapping[str, Any], fresh_context: bool, *,
                 drifted: bool = False) -> str:
    """exact, or what differs from the original joined with '+': fresh_context, overrides, drift."""
    def visible(values: Mapping[str, Any]) -> dict[str, Any]:
        # Secrets are never recorded (***), so they are never overrides.
        return {k: v for k, v in values.items() if not (isinstance(v, str) and v.startswith(REDACTED))}

    changed = visible(original.get("params", {})) != visible(params)
    modes = [m for m, on in (("fresh_context", fresh_context), ("overrides", changed), ("drift", drifted)) if on]
    return "+".join(modes) or "exact"
