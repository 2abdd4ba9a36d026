"""Operator commands: status, watch, explain, stop, unlock."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.table import Table

from intent_pipelines.cli.context import CliContext
from intent_pipelines.cli.options import Seconds
from intent_pipelines.cli.output import console, err_console, print_json
from intent_pipelines.errors import UsageError
from intent_pipelines.operations import Operations
from intent_pipelines.status import RequestStatus
from intent_pipelines.store.state import SHORT_ID

pass_ctx = click.make_pass_decorator(CliContext, ensure=True)


@contextmanager
def operations(cli: CliContext) -> Iterator[Operations]:
    """Operations on this home's store and the Dagster instance the UI shows."""
    # The store first: with PostgreSQL down (both live there, ADR 0012) that is a one-line store
    # error (exit 8) at once, where Dagster's storage retries for ~15 s and fails as an internal error.
    store = cli.engine.store
    import dagster as dg

    cli.ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        yield Operations(cli.home, store, instance)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


@click.command()
@click.option("--all", "include_finished", is_flag=True, help="Also show recent finished requests.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def status(cli: CliContext, include_finished: bool, as_json: bool) -> None:
    """What is running: intent, phase, attempt, heartbeat age, lock, Dagster run and its status."""
    from intent_pipelines.dagster_defs.sensor_health import stopped_product_sensors

    with operations(cli) as ops:
        views = ops.list(include_finished=include_finished)
        stopped = stopped_product_sensors(ops.instance)
    for name in stopped:  # on stderr, so --json stays one document
        err_console.print(f"warning: sensor {name} is stopped: what it watches goes unnoticed; start it in the "
                          "Dagster UI (Automation)", markup=False)
    if as_json:
        print_json([v.to_dict(cli.home) for v in views])
        return
    if not views:
        console.print("no running or waiting requests" + ("" if include_finished else " (use --all for recent ones)"),
                      markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("request", "intent", "status", "phase", "try", "heartbeat", "lock", "run status"):
        # Narrow terminals squeeze the other columns, never the id or status (and nothing is cut).
        table.add_column(column, overflow="fold", no_wrap=column in ("request", "status"))
    for view in views:
        row = view.row
        table.add_row(view.id[:SHORT_ID], row["intent"], view.status.value, row["phase"], str(row["attempt"]),
                      _age(view.heartbeat_age_s()), row["lock_key"] or "-", view.run_status)
    console.print(table)
    for view in views:
        if view.status is RequestStatus.NEEDS_APPROVAL:
            console.print(f"{view.id[:SHORT_ID]} waits for approval: {view.next_action()}", markup=False)
    console.print(f"logs: {cli.home.root / 'logs' / 'steps'}/<request>/", markup=False)


@click.command()
@click.argument("request_or_run")
@pass_ctx
def explain(cli: CliContext, request_or_run: str) -> None:
    """Why a request is where it is, its last output, and what to do next."""
    with operations(cli) as ops:
        view = ops.find(request_or_run)
    row = view.row
    console.print(f"request {view.id} ({row['intent']}) by {row['who'] or '?'}: {view.status.value}", markup=False)
    console.print(f"phase: {row['phase']} (attempt {row['attempt']}); Dagster run {row['run_id']}: "
                  f"{view.run_status}; heartbeat {_age(view.heartbeat_age_s())} ago", markup=False)
    if row["error"]:
        console.print(f"reason: {row['error']}", markup=False)
    steps = cli.engine.store.steps(view.id)
    if steps:
        console.print("steps: " + ", ".join(f"{s['step_id']}={s['status']}" for s in steps), markup=False)
    for line in _last_lines(cli.home.root / "logs" / "steps" / view.id, 10):
        console.print(f"  {line}", markup=False)
    console.print(f"next: {view.next_action()}", markup=False)


def _last_lines(log_dir: Path, count: int) -> list[str]:
    """The last lines of the most recently written step log of a request, prefixed by its step."""
    logs = sorted(log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime) if log_dir.is_dir() else []
    if not logs:
        return []
    latest = logs[-1]
    return [f"[{latest.stem}] {line}" for line in latest.read_text(errors="replace").splitlines()[-count:]]


class LogFollower:
    """Prints the new lines of a request's step logs, each prefixed by its step (`intent watch`)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._offsets: dict[Path, int] = {}

    def drain(self) -> None:
        """Print whatever was appended to any step log since the last call."""
        logs = sorted(self.log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime) if self.log_dir.is_dir() else []
        for path in logs:
            with path.open("r", errors="replace") as fh:
                fh.seek(self._offsets.get(path, 0))
                for line in fh:
                    console.print(f"[{path.stem}] {line.rstrip()}", markup=False)
                self._offsets[path] = fh.tell()


@click.command()
@click.argument("request_or_run")
@click.option("--interval", default=0.5, show_default=True, type=Seconds(min=0.1, max=3600),
              help="Seconds between polls.")
@pass_ctx
def watch(cli: CliContext, request_or_run: str, interval: float) -> None:
    """Follow a request's step output with [step] prefixes until it ends."""
    with operations(cli) as ops:
        request_id = ops.find(request_or_run).id
    follower = LogFollower(cli.home.root / "logs" / "steps" / request_id)
    while True:
        row = cli.engine.store.request(request_id)
        follower.drain()
        if row is not None and row["status"] != RequestStatus.RUNNING.value:
            console.print(f"request {request_id}: {row['status']}" + (f" — {row['error']}" if row["error"] else ""),
                          markup=False)
            return
        time.sleep(interval)


@click.command()
@click.argument("request_or_run")
@click.option("--grace", default=10.0, show_default=True, type=Seconds(min=0, max=3600),
              help="Seconds between SIGTERM and SIGKILL.")
@click.option("--reason", default="", help="Why; recorded in the audit log.")
@click.option("--wait", "wait_s", default=60.0, show_default=True, type=Seconds(min=0, max=86_400),
              help="Seconds to wait for the stop.")
@pass_ctx
def stop(cli: CliContext, request_or_run: str, grace: float, reason: str, wait_s: float) -> None:
    """Stop a queued or running request: its command's process group gets SIGTERM, then SIGKILL."""
    # A running step stops through the store: ask first, before loading Dagster (~2 s saved).
    asked = Operations(cli.home, cli.engine.store, None).request_stop(request_or_run, grace_s=grace, reason=reason)
    with operations(cli) as ops:
        outcome = ops.stop(request_or_run, grace_s=grace, reason=reason, wait_s=wait_s, asked=asked)
    console.print(f"request {outcome['request_id']}: {outcome['status']} (Dagster run {outcome['run_status']}) "
                  f"after {outcome['latency_ms']} ms", markup=False)
    if outcome["status"] == RequestStatus.RUNNING.value:
        raise UsageError(f"request {outcome['request_id']} did not stop within {wait_s:g}s",
                         hint="Check `intent explain`; the watchdog stops stuck runs.")


@click.command()
@click.argument("lock")
@click.option("--force", is_flag=True, help="Release even a live holder's lock (needs --reason).")
@click.option("--reason", default="", help="Why; recorded in the audit log.")
@pass_ctx
def unlock(cli: CliContext, lock: str, force: bool, reason: str) -> None:
    """Release a lock whose holder is dead (its run ended or its lease expired)."""
    with operations(cli) as ops:
        holder = ops.unlock(lock, force=force, reason=reason)
    console.print(f"released {lock} (was held by request {holder.request_id})", markup=False)
