"""One Dagster job per intent: preflight -> one op per step (ordering-only edges) -> finish."""

import multiprocessing
import multiprocessing.forkserver
import threading
from functools import lru_cache
from typing import Any

import dagster as dg

from intent_pipelines import run_tags, secrets
from intent_pipelines.dagster_defs.launchpad import PREFLIGHT, launch_config_mapping, preflight_config_schema
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.engine import Engine, LaunchRequest, RetryStep
from intent_pipelines.errors import IntentError
from intent_pipelines.lifecycle.liveness import Owner
from intent_pipelines.plan import dag_levels
from intent_pipelines.spec.loader import LoadedIntent, find_intent
from intent_pipelines.spec.models import IntentSpec

FINISH = "finish"
AFTER = "after"
RUNTIME_KEY = "intent"


def request_id_of(context: dg.OpExecutionContext) -> str:
    """The request id: the root run id, so re-executions continue the same request."""
    return context.run.root_run_id or context.run_id


def _owner(context: dg.OpExecutionContext, in_process: bool) -> Owner | None:
    """The process executing the run: the `intent run` that tagged it, or this one when steps run here."""
    tagged = context.run.tags.get(run_tags.OWNER)
    if tagged:
        return Owner.decode(tagged)
    # A step process of the multiprocess executor exits after its step: it cannot vouch for the run.
    return Owner.this_process() if in_process else None


def _tag_outcome(context: dg.OpExecutionContext, engine: Engine, request_id: str) -> None:
    """Once the request has ended, put its outcome on the run (Runs list filters), from the store."""
    row = engine.store.request(request_id)
    tags = run_tags.outcome_tags(row) if row is not None else {}
    if tags:
        context.instance.add_run_tags(context.run_id, tags)


def _failure(exc: IntentError) -> dg.Failure:
    detail = getattr(exc, "detail", None)
    metadata: dict[str, Any] = {"error": type(exc).__name__, "exit_code": exc.exit_code}
    if detail is not None:
        metadata.update({"command": detail.command, "stderr_tail": detail.stderr_tail,
                         "log_path": detail.log_path})
        if detail.exit_code is not None:
            metadata["process_exit_code"] = detail.exit_code
    # What Dagster stores (event log, UI) is masked like everything else that leaves the process.
    return dg.Failure(description=secrets.mask(exc.one_line()), metadata=secrets.mask_data(metadata),
                      allow_retries=False)


def _preflight_op(loaded: LoadedIntent) -> dg.OpDefinition:
    spec = loaded.spec

    @dg.op(name=f"{spec.job_name}__{PREFLIGHT}", out=dg.Out(dg.Nothing),
           config_schema=preflight_config_schema(), required_resource_keys={RUNTIME_KEY},
           description="Validate params and policy, capture context, record request.start, take the lock.")
    def preflight(context: dg.OpExecutionContext) -> None:
        engine = getattr(context.resources, RUNTIME_KEY).engine()
        cfg = context.op_config
        launch = LaunchRequest(params=cfg["params"], dry_run=cfg["dry_run"], confirm=cfg["confirm"],
                               reason=cfg["reason"], who=cfg["who"], replay_of=cfg["replay_of"],
                               fresh_context=cfg["fresh_context"], plan=cfg["plan"])
        request_id = request_id_of(context)
        try:
            plan = engine.preflight(loaded, launch, request_id=request_id, run_id=context.run_id,
                                    owner=_owner(context, is_chain(spec)))
        except IntentError as exc:
            engine.abort_preflight(loaded, launch, request_id=request_id, run_id=context.run_id, error=exc)
            _tag_outcome(context, engine, request_id)
            raise _failure(exc) from None
        tags = {run_tags.REPLAY_OF: launch.replay_of} if launch.replay_of else {}
        if plan.lock and not launch.dry_run:
            tags[run_tags.LOCK] = plan.lock
        # Launches from the UI cannot know these before the plan exists; record them on the run now.
        missing = {k: v for k, v in tags.items() if context.run.tags.get(k) != v}
        if missing:
            context.instance.add_run_tags(context.run_id, missing)
        context.add_output_metadata({"plan_hash": plan.plan_hash, "steps": len(plan.steps),
                                     "lock": plan.lock or "", "dry_run": launch.dry_run},
                                    output_name="result")

    return preflight


def _step_op(spec: IntentSpec, step_id: str, description: str, pool: str | None,
             in_process: bool) -> dg.OpDefinition:
    @dg.op(name=f"{spec.job_name}__{step_id}", ins={AFTER: dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing),
           required_resource_keys={RUNTIME_KEY}, pool=pool, description=description,
           tags={run_tags.STEP: step_id})
    def step(context: dg.OpExecutionContext) -> None:
        engine = getattr(context.resources, RUNTIME_KEY).engine()
        request_id = request_id_of(context)
        try:
            outputs = engine.run_step(request_id, step_id, run_id=context.run_id, attempt=context.retry_number + 1,
                                      owner=_owner(context, in_process))
        except RetryStep as retry:
            raise dg.RetryRequested(max_retries=retry.max_attempts - 1,
                                    seconds_to_wait=retry.wait_s) from None
        except IntentError as exc:
            _tag_outcome(context, engine, request_id)
            raise _failure(exc) from None
        if outputs:
            context.add_output_metadata({k: secrets.mask(str(v)) for k, v in outputs.items()}, output_name="result")

    return step


def _finish_op(spec: IntentSpec) -> dg.OpDefinition:
    @dg.op(name=f"{spec.job_name}__{FINISH}", ins={AFTER: dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing),
           required_resource_keys={RUNTIME_KEY},
           description="Run verify checks, release the lock, record request.complete.")
    def finish(context: dg.OpExecutionContext) -> None:
        engine = getattr(context.resources, RUNTIME_KEY).engine()
        request_id = request_id_of(context)
        try:
            status = engine.finish(request_id, run_id=context.run_id, owner=_owner(context, is_chain(spec)))
        except IntentError as exc:
            _tag_outcome(context, engine, request_id)
            raise _failure(exc) from None
        _tag_outcome(context, engine, request_id)
        context.add_output_metadata({"status": status.value}, output_name="result")

    return finish


# Steps mostly wait on external commands, so allow more concurrent steps than cores; forkserver
# with the package preloaded makes each step process start in well under a second.
PRELOAD_MODULES = ["intent_pipelines.dagster_defs.preload"]
PARALLEL_EXECUTOR = dg.multiprocess_executor.configured({
    "max_concurrent": 8,
    "start_method": {"forkserver": {"preload_modules": PRELOAD_MODULES}},
})


def warm_forkserver() -> None:
    """Start this process's forkserver (with the same preload) in the background, now.

    Its start-up (~2 s on 2 cores) would otherwise delay the first step; `intent run` calls this
    before it validates and plans, so the two overlap. The executor then reuses the running server.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD_MODULES)
    threading.Thread(target=multiprocessing.forkserver.ensure_running, daemon=True).start()


def _after(upstream: list[str]) -> dict[str, dg.DependencyDefinition | dg.MultiDependencyDefinition]:
    deps = [dg.DependencyDefinition(u) for u in upstream]
    return {AFTER: deps[0] if len(deps) == 1 else dg.MultiDependencyDefinition(deps)}


def is_chain(spec: IntentSpec) -> bool:
    """Whether at most one step can run at a time (then in-process execution costs least)."""
    levels = dag_levels({s.id: s.needs for s in spec.steps})
    return len(set(levels.values())) == len(levels)


def make_intent_job(loaded: LoadedIntent) -> dg.JobDefinition:
    """Build the job for one intent."""
    spec = loaded.spec
    preflight = _preflight_op(loaded)
    finish = _finish_op(spec)
    node_defs: list[dg.NodeDefinition] = [preflight, finish]
    dependencies: dict[Any, dict[str, dg.DependencyDefinition | dg.MultiDependencyDefinition]] = {
        dg.NodeInvocation(preflight.name, alias=PREFLIGHT): {}}
    needed = {n for s in spec.steps for n in s.needs}
    for step in spec.steps:
        description = step.name or (f"uses {step.uses}" if step.uses else "run a command")
        op_def = _step_op(spec, step.id, description, step.pool, is_chain(spec))
        node_defs.append(op_def)
        dependencies[dg.NodeInvocation(op_def.name, alias=step.id)] = _after(step.needs or [PREFLIGHT])
    sinks = [s.id for s in spec.steps if s.id not in needed]
    dependencies[dg.NodeInvocation(finish.name, alias=FINISH)] = _after(sinks)
    graph = dg.GraphDefinition(name=spec.job_name, node_defs=node_defs, dependencies=dependencies,
                               description=spec.summary)
    tags: dict[str, str] = {run_tags.NAME: spec.name}
    if spec.policy.timeout:
        tags["dagster/max_runtime"] = str(int(spec.policy.timeout))
    executor = dg.in_process_executor if is_chain(spec) else PARALLEL_EXECUTOR
    return graph.to_job(
        name=spec.job_name,
        description=f"{spec.summary} (intent {spec.name} v{spec.version})",
        resource_defs={RUNTIME_KEY: IntentRuntime()},
        config=launch_config_mapping(spec),
        tags=tags,
        executor_def=executor,
    )


@lru_cache(maxsize=32)
def job_for(name: str) -> dg.JobDefinition:
    """Rebuild one intent's job by name: the reconstructor the CLI hands to execute_job.

    Dagster calls it several times per run and in every step process, so it reads one file and
    caches the job for the life of the process.
    """
    return make_intent_job(find_intent(name))
