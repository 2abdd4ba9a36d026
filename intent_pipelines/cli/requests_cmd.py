"""Commands on past requests: replay, resume (re-execute from failure), approve and reject gates."""

import difflib
import getpass
import sys
from typing import Any

import click

from intent_pipelines.cli.context import CliContext
from intent_pipelines.cli.output import console, err_console, print_json
from intent_pipelines.cli.plan_view import print_plan
from intent_pipelines.errors import ConfirmationRequired, UsageError
from intent_pipelines.spec.loader import LoadedIntent, parse_intent
from intent_pipelines.spec.params import parse_assignments

pass_ctx = click.make_pass_decorator(CliContext, ensure=True)


def _print_outcome(outcome: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(outcome)
        return
    line = f"request {outcome['request_id']}: {outcome['status']}"
    console.print(line + (f" — {outcome['error']}" if outcome["error"] else ""), markup=False)


def _show_diff(title: str, old: str, new: str) -> bool:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"{title} (then)", f"{title} (now)",
                                      lineterm=""))
    for line in lines:
        err_console.print(line, markup=False, highlight=False)
    return bool(lines)


@click.command()
@click.argument("request_id")
@click.option("--dry-run", is_flag=True, help="Show what the replay would run (and any drift); run nothing.")
@click.option("--fresh-context", is_flag=True, help="Capture the context again instead of reusing the recorded one.")
@click.option("--override", "overrides", multiple=True, metavar="NAME=VALUE", help="Change a param; repeatable.")
@click.option("--confirm", is_flag=False, flag_value="true", default="", metavar="[=PLANHASH]",
              help="Confirm, if the original needed it (or its policy asks now).")
@click.option("--accept-drift", is_flag=True, help="Run the current intent definition although it changed.")
@click.option("--reason", default="", help="Why; recorded in the audit log.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_ctx
def replay(cli: CliContext, request_id: str, dry_run: bool, fresh_context: bool, overrides: tuple[str, ...],
           confirm: str, accept_drift: bool, reason: str, as_json: bool) -> None:
    """Run a past request again: same intent, params and context, from the audit log alone."""
    from intent_pipelines.cli.launch import launch, prepare
    from intent_pipelines.lifecycle.replay import original_request

    request_id = cli.request_id(request_id)
    recorded = original_request(cli.engine.store, cli.home, request_id)
    original, content = recorded.start, recorded.content
    current = cli.catalog.get(original["intent"])
    drifted = current.sha256 != original["intent_sha256"]
    if drifted:
        _show_diff(f"intent {original['intent']}", content, current.content)
        if not accept_drift and not dry_run:
            raise UsageError(f"intent {original['intent']} changed since request {request_id}",
                             hint="Review the diff above; pass --accept-drift to run the current definition.")
    loaded = current if drifted else LoadedIntent(parse_intent(content, f"<recorded {original['intent']}>"),
                                                  current.path, content)
    params = recorded.params()
    changes = parse_assignments(list(overrides))
    context = None if fresh_context else original["context"]
    prepared = prepare(cli, loaded, {**params, **changes}, confirm=confirm, dry_run=dry_run, context=context,
                       reason=reason, replay_of=request_id)
    # Only once they are valid: a refused override is the error's one line, nothing before it.
    for name, value in changes.items():
        err_console.print(f"override {name}: {params.get(name)!r} -> {value!r}", markup=False)
    if fresh_context:
        for key in sorted(set(original["context"]) | set(prepared.plan.context)):
            old, new = original["context"].get(key), prepared.plan.context.get(key)
            err_console.print(f"context {key}: {old!r} -> {new!r}" + ("" if old != new else " (same)"), markup=False)
    if original.get("confirmed") and not dry_run and prepared.confirm in ("", "false"):
        raise ConfirmationRequired(f"request {request_id} needed confirmation, so its replay does too",
                          hint=f"Pass --confirm={prepared.plan.plan_hash[:12]}.")
    if dry_run:
        if as_json:
            print_json({**prepared.plan.to_dict(), "plan_hash": prepared.plan.plan_hash, "drift": drifted})
        else:
            console.print(f"replay of {request_id}: plan {prepared.plan.plan_hash}"
                          + (" (intent changed: see the diff)" if drifted else ""), markup=False)
            changed = [what for what, yes in (("intent definition", drifted), ("context (fresh capture)",
                       fresh_context and prepared.plan.context != original["context"]),
                       ("params (overrides)", bool(changes))) if yes]
            console.print(f"changed since the original: {', '.join(changed) or 'nothing'}", markup=False)
            print_plan(prepared.plan)
        return
    outcome = launch(cli, loaded, prepared.typed, dry_run=False, confirm=prepared.confirm, reason=reason,
                     lock=prepared.plan.lock, quiet=as_json, replay_of=request_id, fresh_context=fresh_context,
                     plan=prepared.plan.plan_hash)
    _print_outcome(outcome, as_json)
    sys.exit(outcome["exit_code"])


@click.command()
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_ctx
def resume(cli: CliContext, request_id: str, as_json: bool) -> None:
    """Re-execute a failed, stopped or waiting request from failure (finished steps are not re-run)."""
    from intent_pipelines.cli.launch import launch
    from intent_pipelines.cli.operate import operations
    from intent_pipelines.lifecycle.resume import check_resumable

    with operations(cli) as ops:
        ops.reap()  # a request whose runner just died is CRASHED, and so resumable, now
    row = cli.engine.store.find_request(request_id)
    if row is None:
        raise UsageError(f"no request {request_id}", hint="Check the id (`intent status --all`).")
    check_resumable(row)
    loaded = cli.catalog.get(row["intent"])
    outcome = launch(cli, loaded, {}, dry_run=False, confirm="", reason="", lock=row["lock_key"], quiet=as_json,
                     reexecute_of=row["run_id"])
    _print_outcome(outcome, as_json)
    sys.exit(outcome["exit_code"])


def _decide(cli: CliContext, request_id: str, step: str, reason: str, decision: str) -> None:
    from intent_pipelines.lifecycle.gates import decide_gate

    row = cli.engine.store.find_request(request_id)
    if row is None:
        raise UsageError(f"no request {request_id}", hint="Check the id (`intent status --all`).")
    who = getpass.getuser()
    decide_gate(cli.engine.store, cli.engine.spec_of(row), row, step, decision=decision, who=who, reason=reason)
    console.print(f"gate {step} of request {row['request_id']} {decision} by {who}; re-execute the run from "
                  f"failure (UI) or `intent resume {row['request_id']}` to continue", markup=False)


@click.command()
@click.argument("request_id")
@click.option("--step", required=True, help="The manual gate's step id.")
@click.option("--reason", required=True, help="Why; recorded in the audit log.")
@pass_ctx
def approve(cli: CliContext, request_id: str, step: str, reason: str) -> None:
    """Approve a manual gate; the next re-execution passes it."""
    _decide(cli, request_id, step, reason, "approved")


@click.command()
@click.argument("request_id")
@click.option("--step", required=True, help="The manual gate's step id.")
@click.option("--reason", required=True, help="Why; recorded in the audit log.")
@pass_ctx
def reject(cli: CliContext, request_id: str, step: str, reason: str) -> None:
    """Reject a manual gate; the next re-execution fails the request for good."""
    _decide(cli, request_id, step, reason, "rejected")

