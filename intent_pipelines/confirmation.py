"""Confirmation bound to a plan: `--confirm=PLANHASH` confirms exactly that plan and nothing else."""

import difflib
import json
import re

from intent_pipelines.errors import ConfirmationRequired, UsageError
from intent_pipelines.plan import ExecutionPlan

_HASH = re.compile(r"^[0-9a-f]{12,64}$")


def parse_confirm(value: bool | str | None) -> tuple[bool, str | None]:
    """(confirmed, plan hash prefix) from `--confirm`, `--confirm=HASH` or the launchpad's value."""
    if value is None or value is False:
        return False, None
    if value is True:
        return True, None
    text = str(value).strip().lower()
    if text in ("", "false", "no", "0"):
        return False, None
    if text in ("true", "yes", "1"):
        return True, None
    if _HASH.match(text):
        return True, text
    raise UsageError(f"confirm value {value!r} is neither true nor a plan hash",
                     hint="Use --confirm, or --confirm=<hash> from `intent plan` / `--dry-run`.")


def plan_json(plan: ExecutionPlan) -> str:
    """The plan as stable, readable JSON: what is stored and diffed."""
    return json.dumps({**plan.to_dict(), "plan_hash": plan.plan_hash}, indent=2, sort_keys=True, default=str)


def plan_diff(old_body: str | None, new: ExecutionPlan, *, limit: int = 60) -> list[str]:
    """Unified diff of a confirmed plan against the plan that would run now."""
    if old_body is None:
        return ["(the confirmed plan is not in this store, so no diff can be shown)"]
    lines = list(difflib.unified_diff(old_body.splitlines(), plan_json(new).splitlines(),
                                      "confirmed plan", "plan now", lineterm="", n=1))
    return lines[:limit] + ([f"... {len(lines) - limit} more lines"] if len(lines) > limit else [])


class PlanChanged(ConfirmationRequired):
    """The confirmed plan hash is not the plan that would run now; ``diff`` shows what changed."""

    def __init__(self, confirmed: str, plan: ExecutionPlan, diff: list[str]) -> None:
        super().__init__(f"plan changed since it was confirmed: confirmed {confirmed[:12]}, now "
                         f"{plan.plan_hash[:12]}",
                         hint="Review the difference, then confirm the new hash (or pass plain --confirm).")
        self.diff = diff


def check_confirmation(plan: ExecutionPlan, confirm: bool | str | None, *, dry_run: bool,
                       confirmed_plan_body: str | None) -> None:
    """Raise when the policy wants confirmation and none was given, or a bound hash does not match."""
    confirmed, bound = parse_confirm(confirm)
    if bound is not None and not plan.plan_hash.startswith(bound):
        raise PlanChanged(bound, plan, plan_diff(confirmed_plan_body, plan))
    if plan.confirm_required and not confirmed and not dry_run:
        raise ConfirmationRequired(f"{plan.intent} needs confirmation for these params",
                                   hint=f"Review it, then pass --confirm={plan.plan_hash[:12]} (or --confirm).")
