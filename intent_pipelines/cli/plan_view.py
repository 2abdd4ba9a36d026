"""How an execution plan reads on the console (`intent plan`, `intent replay --dry-run`)."""

from intent_pipelines.cli.output import console
from intent_pipelines.plan import ExecutionPlan


def print_plan(plan: ExecutionPlan) -> None:
    """The plan's hash, params, context, lock, and each step by level with its options."""
    console.print(f"[bold]plan[/] {plan.intent} v{plan.version}  hash {plan.plan_hash}")
    console.print(f"params: {plan.params}", markup=False)
    if plan.context:
        console.print(f"context: {plan.context}", markup=False)
    console.print(f"lock: {plan.lock or '-'}   confirm required: {plan.confirm_required}", markup=False)
    for level, ids in enumerate(plan.levels):
        for step_id in ids:
            step = plan.step(step_id)
            extra = []
            if step.when is False:
                extra.append("skipped: when is false")
            elif step.when is None:
                extra.append("when: decided at run time")
            if step.timeout_s:
                extra.append(f"timeout {step.timeout_s:g}s")
            if step.retry.attempts > 1:
                extra.append(f"{step.retry.attempts} attempts on {step.retry.on.value}")
            if step.pool:
                extra.append(f"pool {step.pool}")
            if step.rollback:
                extra.append(f"rollback: {step.rollback.describe()}")
            suffix = f"  [{'; '.join(extra)}]" if extra else ""
            console.print(f"  L{level} {step_id}: {step.call.describe()}{suffix}", markup=False)
    for check in plan.verify:
        console.print(f"  verify {check.id}: {check.call.describe()}", markup=False)
    console.print(f"critical path: {' -> '.join(plan.critical_path)}", markup=False)
