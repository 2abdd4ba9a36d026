"""The `intent` command: list, show, validate, lint, plan, run, graph, init."""

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from intent_pipelines.cli.boundary import check_arguments, error_boundary
from intent_pipelines.cli.context import POOL_LIMITS, CliContext
from intent_pipelines.cli.output import console, print_json
from intent_pipelines.cli.plan_view import print_plan
from intent_pipelines.errors import (
    FleetError,
    IntentError,
    SpecError,
    UsageError,
    exit_code_table,
)
from intent_pipelines.fleet import load_fleet
from intent_pipelines.home import IntentHome
from intent_pipelines.settings import settings
from intent_pipelines.spec.loader import intent_dirs, intent_files, load_intent_file
from intent_pipelines.spec.params import parse_assignments
from intent_pipelines.spec.secret_lint import FLEET_HINT, find_literal_secrets

# "\b" keeps click from re-wrapping the table into one paragraph.
EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {name}: {meaning}" for code, name, meaning
                                        in exit_code_table())


# Commands whose modules are imported only when they run (or for --help): `intent run` must not pay
# for operate, audit, failures, metrics and requests (bench/cli_overhead).
LAZY_COMMANDS = {
    "audit": "audit:audit", "failures": "failures:failures", "metrics": "metrics_cmd:metrics",
    **{name: f"operate:{name}" for name in ("status", "watch", "explain", "stop", "unlock")},
    **{name: f"requests_cmd:{name}" for name in ("replay", "resume", "approve", "reject")},
    "up": "up:up", "code-server": "up:code_server",
    "proxy": "proxy_cmd:proxy",
}


class IntentGroup(click.Group):
    """Ends every error in one line on stderr and its documented exit code (cli/boundary.py); loads commands lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module, attr = LAZY_COMMANDS[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(f"intent_pipelines.cli.{module}"), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        # The group's own options and the command name are parsed here, before invoke.
        with error_boundary():
            check_arguments(args)
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with error_boundary():
            return super().invoke(ctx)


pass_ctx = click.make_pass_decorator(CliContext, ensure=True)
# `--confirm` alone means yes; `--confirm=HASH` confirms exactly the plan with that hash.
CONFIRM_OPTION = click.option("--confirm", is_flag=False, flag_value="true", default="", metavar="[=PLANHASH]",
                              help="Confirm a guarded change; with =PLANHASH, only exactly that plan.")
PARAM_OPTION = click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
                            help="A param value; repeat for several.")


@click.group(cls=IntentGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="intent_pipelines")
def main() -> None:
    """Operational runbooks ("intents") declared in YAML and run as Dagster jobs."""


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def list_intents(cli: CliContext, as_json: bool) -> None:
    """List the intents this install knows."""
    intents = list(cli.catalog)
    if as_json:
        print_json([{"name": i.spec.name, "job": i.spec.job_name, "summary": i.spec.summary,
                     "aliases": i.spec.aliases, "path": str(i.path)} for i in intents])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("intent", "job", "summary"):
        table.add_column(column)
    for loaded in intents:
        table.add_row(loaded.spec.name, loaded.spec.job_name, loaded.spec.summary)
    console.print(table)


@main.command()
@click.argument("intent")
@pass_ctx
def show(cli: CliContext, intent: str) -> None:
    """Show an intent's params, policy and steps."""
    loaded = cli.catalog.get(intent)
    spec = loaded.spec
    console.print(f"[bold]{spec.name}[/] v{spec.version} — {escape(spec.summary)}")
    console.print(f"file: {loaded.path}  job: {spec.job_name}"
                  + (f"  aliases: {', '.join(spec.aliases)}" if spec.aliases else ""))
    if spec.params:
        table = Table(title="params", box=None, title_justify="left")
        for column in ("name", "type", "required", "default", "constraints", "help"):
            table.add_column(column)
        for name, p in spec.params.items():
            constraints = ", ".join(filter(None, [
                f"one of {p.enum}" if p.enum else "", f"pattern {p.pattern}" if p.pattern else "",
                f"min {p.min:g}" if p.min is not None else "", f"max {p.max:g}" if p.max is not None else "",
                "secret (from $" + (p.env or f"INTENT_SECRET_{name.upper()}") + ")" if p.secret else ""]))
            default = "" if p.default is None else json.dumps(p.default)
            table.add_row(name, p.type, "yes" if p.required else "", escape(default),
                          escape(constraints), escape(p.help))
        console.print(table)
    policy = spec.policy
    console.print(f"policy: lock={policy.lock or '-'} confirm={policy.confirm} "
                  f"timeout={policy.timeout or '-'} deny rules={len(policy.deny)}", markup=False)
    for step in spec.steps:
        action = step.uses or (step.run if isinstance(step.run, str) else " ".join(step.run or []))
        needs = f" (after {', '.join(step.needs)})" if step.needs else ""
        console.print(f"  step {step.id}{needs}: {action}", markup=False)
    for check in spec.verify:
        console.print(f"  verify {check.id}: {check.uses or check.run}", markup=False)


FLEET_FILE_NAMES = ("fleet.yaml", "fleet.yml")


def _expand(paths: tuple[Path, ...], *, fleets: bool) -> tuple[list[Path], list[Path]]:
    """(intent files, fleet files) named by ``paths``; directories give their *.yaml, not recursively.

    With ``fleets``, a file named fleet.yaml or fleet.yml is a fleet file, never an intent file.
    """
    intents: list[Path] = []
    fleet_files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise SpecError("no such file or directory", path=str(path), hint="Check the path.")
        for file in intent_files([path]) if path.is_dir() else [path]:
            (fleet_files if fleets and file.name in FLEET_FILE_NAMES else intents).append(file)
    return intents, fleet_files


def _check_intent_file(path: Path) -> list[str]:
    """The one-line problems of an intent file: the first validation error, or each literal secret."""
    try:
        loaded = load_intent_file(path)
    except SpecError as exc:
        return [exc.one_line()]
    return [s.one_line() for s in find_literal_secrets(loaded.content, str(path))]


def _check_fleet_file(path: Path) -> list[str]:
    """The one-line problems of a fleet file: its validation error, or each literal secret."""
    try:
        load_fleet(path)
    except FleetError as exc:
        return [exc.one_line()]
    text = path.read_text(encoding="utf-8")
    return [s.one_line() for s in find_literal_secrets(text, str(path), hint=FLEET_HINT)]


def _report(path: Path, problems: list[str]) -> bool:
    """Print ``ok`` or one ``FAIL`` line per problem; whether the file passed."""
    if not problems:
        console.print(f"ok    {path}", markup=False)
    for problem in problems:
        console.print(f"FAIL  {problem}", markup=False)
    return not problems


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Validate intent files (default: every intent visible to this install); a literal secret is invalid."""
    files, _ = _expand(paths or tuple(intent_dirs()), fleets=False)
    failures = sum(not _report(path, _check_intent_file(path)) for path in files)
    if failures:
        raise SpecError(f"{failures} of {len(files)} intent files are invalid",
                        hint="Fix the files listed above.")
    console.print(f"{len(files)} intent files valid", markup=False)


# The name for the check; it is `validate` plus the fleet file, because a password in
# fleet.yaml (an app's env, a database URL) leaks the same way as one in an intent.
@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def lint(paths: tuple[Path, ...]) -> None:
    """Validate intent files and fleet files and refuse literal secrets (default: all of this install)."""
    if paths:
        intents, fleet_files = _expand(paths, fleets=True)
    else:
        intents, _ = _expand(tuple(intent_dirs()), fleets=False)
        fleet_file = IntentHome.from_env().fleet_file
        fleet_files = [fleet_file] if fleet_file.exists() else []
    bad_intents = sum(not _report(path, _check_intent_file(path)) for path in intents)
    bad_fleets = sum(not _report(path, _check_fleet_file(path)) for path in fleet_files)
    total = len(intents) + len(fleet_files)
    if bad_intents:  # SpecError (3) first: the table's order, and an intent file is the likelier culprit
        raise SpecError(f"{bad_intents + bad_fleets} of {total} files are invalid or hold literal secrets",
                        hint="Fix the files listed above.")
    if bad_fleets:
        raise FleetError(f"{bad_fleets} of {total} files are invalid or hold literal secrets",
                         hint="Fix the files listed above.")
    console.print(f"{total} files valid, no literal secrets", markup=False)


@main.command()
@click.argument("intent")
@PARAM_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def plan(cli: CliContext, intent: str, params: tuple[str, ...], as_json: bool) -> None:
    """Render what INTENT would do with these params, without doing it."""
    loaded = cli.catalog.get(intent)
    execution_plan, _ = cli.engine.plan(loaded, parse_assignments(list(params)))
    if as_json:
        print_json({**execution_plan.to_dict(), "plan_hash": execution_plan.plan_hash})
    else:
        print_plan(execution_plan)


@main.command()
@click.argument("intent")
@pass_ctx
def graph(cli: CliContext, intent: str) -> None:
    """Print the intent's step graph as Mermaid."""
    spec = cli.catalog.get(intent).spec
    lines = ["flowchart TD", "  preflight([preflight])"]
    needed = {n for s in spec.steps for n in s.needs}
    for step in spec.steps:
        label = step.uses or "run"
        lines.append(f'  {step.id}["{step.id}<br/>{label}"]')
        for upstream in step.needs or ["preflight"]:
            lines.append(f"  {upstream} --> {step.id}")
    lines.append("  finish([finish: verify])")
    lines += [f"  {s.id} --> finish" for s in spec.steps if s.id not in needed]
    console.out("\n".join(lines), highlight=False)


@main.command()
@click.argument("intent")
@PARAM_OPTION
@click.option("--dry-run", is_flag=True, help="Plan and log every step; change nothing.")
@CONFIRM_OPTION
@click.option("--reason", default="", help="Why you run this; recorded in the audit log.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option("--submit", is_flag=True,
              help="Queue the run on the running Dagster webserver instead of executing it here.")
@click.option("--dagster-url", default=None, metavar="URL",
              help="Webserver for --submit (default $INTENT_DAGSTER_URL or http://127.0.0.1:3000).")
@click.option("--no-wait", is_flag=True, help="With --submit: print the run id and return at once.")
@pass_ctx
def run(cli: CliContext, intent: str, params: tuple[str, ...], dry_run: bool, confirm: str,
        reason: str, as_json: bool, submit: bool, dagster_url: str | None, no_wait: bool) -> None:
    """Run INTENT through Dagster on the persistent instance (it shows in the UI).

    With --submit the run goes through the webserver's queue: a second request for the same
    target waits QUEUED until the first ends.
    """
    from intent_pipelines.cli.launch import launch, prepare, refusal_outcome
    from intent_pipelines.dagster_defs.jobs import is_chain, warm_forkserver

    if (no_wait or dagster_url) and not submit:
        raise UsageError("--no-wait and --dagster-url go with --submit", hint="Add --submit.")
    loaded = cli.catalog.get(intent)
    if not is_chain(loaded.spec) and not submit:
        warm_forkserver()
    try:
        prepared = prepare(cli, loaded, parse_assignments(list(params)), confirm=confirm, dry_run=dry_run,
                           reason=reason)
    except IntentError as exc:
        if as_json and exc.request_id:
            print_json(refusal_outcome(loaded, exc))
        raise
    execution_plan = prepared.plan
    if not as_json:
        console.print(f"plan {execution_plan.plan_hash}: {len(execution_plan.steps)} steps"
                      + (" (dry run; confirm exactly this plan with --confirm=" + execution_plan.plan_hash[:12] + ")"
                         if dry_run else ""), markup=False)
    if submit:
        from intent_pipelines.cli.submit import dagster_url as url_of
        from intent_pipelines.cli.submit import submit as submit_run

        outcome = submit_run(cli, loaded, prepared.typed, dry_run=dry_run, confirm=prepared.confirm,
                             reason=reason, lock=execution_plan.lock, url=url_of(dagster_url),
                             wait=not no_wait, quiet=as_json, plan=execution_plan.plan_hash)
    else:
        outcome = launch(cli, loaded, prepared.typed, dry_run=dry_run, confirm=prepared.confirm, reason=reason,
                         lock=execution_plan.lock, quiet=as_json, plan=execution_plan.plan_hash)
    if as_json:
        print_json(outcome)
    else:
        line = f"request {outcome['request_id']}: {outcome['status']}"
        if outcome["error"]:
            line += f" — {outcome['error']}"
        console.print(line, markup=False)
    sys.exit(outcome["exit_code"])


@main.command()
@click.option("--no-sample", is_flag=True, help="Do not install the sample fleet (hello-api).")
@click.option("--postgres", is_flag=True,
              help="Keep Dagster's runs, event logs and schedules in the PostgreSQL database of "
                   "$INTENT_STORE_URL (the state store's) instead of SQLite under DAGSTER_HOME.")
@pass_ctx
def init(cli: CliContext, no_sample: bool, postgres: bool) -> None:
    """Prepare INTENT_HOME: directories, DAGSTER_HOME with dagster.yaml, pool limits, sample fleet."""
    from dagster import DagsterInstance

    from intent_pipelines.sample_fleet import install_sample_fleet

    if postgres:
        _check_postgres_init(cli)
    cli.home.ensure()
    dagster_home = cli.ensure_dagster_home(postgres=postgres)
    with DagsterInstance.get() as instance:
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    fleet = cli.home.fleet_file if no_sample else install_sample_fleet(cli.home)
    console.print(f"INTENT_HOME  {cli.home.root}", markup=False)
    console.print(f"DAGSTER_HOME {dagster_home}", markup=False)
    console.print(f"storage      {'PostgreSQL ($INTENT_STORE_URL)' if postgres else 'SQLite'}", markup=False)
    console.print(f"fleet        {fleet}", markup=False)
    console.print(f"pools        {', '.join(f'{k}={v}' for k, v in POOL_LIMITS.items())}", markup=False)


def _check_postgres_init(cli: CliContext) -> None:
    """Refuse --postgres without a reachable PostgreSQL URL, or over a dagster.yaml that keeps SQLite."""
    url = settings().store_url
    if not url.startswith("postgresql"):
        raise UsageError("--postgres needs INTENT_STORE_URL, a postgresql:// URL of the server and database, in the "
                         "environment", hint="Export it (never on the command line), then run intent init again.")
    existing = cli.home.dagster_home / "dagster.yaml"
    if existing.exists() and "postgres_url" not in existing.read_text():
        raise UsageError(f"{existing} already keeps Dagster's storage in SQLite",
                         hint="Move it away (its runs stay in that SQLite storage), then run intent init --postgres.")
    from intent_pipelines.store import StateStore

    # Creates the state store's tables there now; a server that is down is a StoreError (password hidden).
    StateStore(url).engine.dispose()
