"""`intent audit`: verify the chain, show a request's timeline, export days, take checkpoints."""

import json
from pathlib import Path

import click

from intent_pipelines.audit.verify import VerifyResult
from intent_pipelines.cli.context import CliContext
from intent_pipelines.cli.dates import day_span, parse_date
from intent_pipelines.cli.output import console, print_json
from intent_pipelines.errors import UsageError

pass_ctx = click.make_pass_decorator(CliContext, ensure=True)


def _unknown_request(request_id: str) -> UsageError:
    return UsageError(f"no audit records for request {request_id}",
                      hint="Check the id: it is the run id `intent run` prints and the UI shows.")


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command()
@click.option("--date", "day", help="Verify one UTC day (YYYY-MM-DD).")
@click.option("--days", type=int, help="Verify the last N days, today included.")
@click.option("--from", "first", help="First day of a range (with --to).")
@click.option("--to", "last", help="Last day of a range (with --from).")
@click.option("--request", "request_id",
              help="Verify that one request's records are all there and intact (checks the whole chain).")
@click.option("--parquet", type=click.Path(path_type=Path),
              help="Verify exported Parquet files (a directory or one file) instead of the store.")
@click.option("--checkpoints", type=click.Path(path_type=Path),
              help="Checkpoint files to check --parquet against (default: INTENT_HOME's).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@pass_ctx
def verify(cli: CliContext, day: str | None, days: int | None, first: str | None, last: str | None,
           request_id: str | None, parquet: Path | None, checkpoints: Path | None, fmt: str) -> None:
    """Verify the audit chain: exit 0 when intact, 20 naming the first bad seq when not."""
    # Imported here: pyarrow costs ~0.1 s that `intent run` should not pay.
    from intent_pipelines.audit.integrity import checkpoint_dir, day_range, raise_broken, verify_store

    span = day_span(parse_date(day, "--date"), days, parse_date(first, "--from"), parse_date(last, "--to"))
    if parquet is not None:
        if span or request_id:
            raise UsageError("--parquet verifies whole files", hint="Point it at the days you want instead.")
        result = _verify_files(parquet, checkpoints or checkpoint_dir(cli.home), explicit=checkpoints is not None)
    elif request_id:
        request_id = cli.request_id(request_id)
        if next(cli.engine.store.audit_records(request_id=request_id), None) is None:
            raise _unknown_request(request_id)
        # The whole chain: the chain is global, so nothing in a request's own records says how many it
        # has. A record moved to another request (its request_id column edited) could sit anywhere,
        # before the request's first record or after its last; only checking every record's columns
        # against its body proves none is missing from the request.
        result = verify_store(cli.engine.store, cli.home)
    elif span:
        seqs = day_range(cli.engine.store, *span)
        # A quiet day has nothing to break; the rest of the chain is checked without a span.
        result = verify_store(cli.engine.store, cli.home, first_seq=seqs[0], last_seq=seqs[1]) if seqs \
            else VerifyResult()
    else:
        result = verify_store(cli.engine.store, cli.home)
    if fmt == "json":
        print_json(result.to_dict())
    else:
        _print_summary(result)
    if not result.ok:
        raise_broken(cli.home, result)


def _verify_files(parquet: Path, checkpoints: Path, *, explicit: bool) -> VerifyResult:
    """verify_parquet, with a file that is not Parquet at all refused as a wrong path (exit 2)."""
    import pyarrow as pa

    from intent_pipelines.audit.integrity import verify_parquet

    try:
        # Checkpoints given explicitly must be checkable; the home's are used when they apply.
        return verify_parquet(parquet, checkpoints, require_checkpoints=explicit)
    except pa.ArrowException as exc:
        raise UsageError(f"--parquet {parquet} holds a file that is not readable as Parquet "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                         hint="Point --parquet at exported audit_events files (`intent audit export`).") from None


def _print_summary(result: VerifyResult) -> None:
    state = "INTACT" if result.ok else "BROKEN"
    span = f"seq {result.first_seq}..{result.last_seq}" if result.records else "no records"
    console.print(f"audit chain {state}: {result.records} records ({span}), head {result.head.hex()[:16]}",
                  markup=False)
    if result.checkpoints_checked:
        console.print(f"checkpoints checked: {', '.join(map(str, result.checkpoints_checked))}", markup=False)
    elif result.records:
        console.print("no checkpoint checked (none yet, or the records do not start at seq 0)", markup=False)
    for item in result.breaks[:10]:
        console.print(f"  seq {item.seq}: {item.kind.value} — {item.detail}", markup=False)


@audit.command()
@click.argument("request_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def show(cli: CliContext, request_id: str, as_json: bool) -> None:
    """A readable timeline of one request."""
    from intent_pipelines.audit.export import request_timeline

    request_id = cli.request_id(request_id)
    timeline = request_timeline(cli.engine.store, request_id)
    if not timeline:
        raise _unknown_request(request_id)
    if as_json:
        print_json(timeline)
        return
    skip = {"seq", "ts", "kind", "run_id", "request_id", "content"}
    start = next((e for e in timeline if e["kind"] == "request.start"), {})
    if start.get("replay_of"):
        console.print(f"replay of {start['replay_of']} ({start.get('replay_mode', 'exact')})", markup=False)
    replays = cli.engine.store.replays_of(request_id)
    if replays:
        console.print(f"replayed by {', '.join(replays)}", markup=False)
    for event in timeline:
        details = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(event.items()) if k not in skip and v not in
                            ("", None, [], {}))
        console.print(f"{event['ts']}  #{event['seq']:<6} {event['kind']:<18} {details}", markup=False)


@audit.command()
@click.option("--date", "day", required=True, help="The UTC day to export (YYYY-MM-DD).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False, writable=True),
              help="Directory (default INTENT_HOME/warehouse/audit_events).")
@pass_ctx
def export(cli: CliContext, day: str, out: Path | None) -> None:
    """Write one day of the chain to Parquet (what the audit_events asset materializes)."""
    from intent_pipelines.audit.export import export_day

    chosen = parse_date(day, "--date")
    assert chosen is not None
    path, rows = export_day(cli.engine.store, chosen, out or cli.home.warehouse / "audit_events")
    console.print(f"{rows} records -> {path}", markup=False)


@audit.command()
@pass_ctx
def checkpoint(cli: CliContext) -> None:
    """Verify the chain, then record a checkpoint (size, head, Merkle root)."""
    from intent_pipelines.audit.integrity import take_checkpoint

    taken = take_checkpoint(cli.engine.store, cli.home)
    console.print(f"checkpoint {taken.number}: {taken.size} records, head {taken.head.hex()[:16]}, "
                  f"root {taken.root.hex()[:16]}", markup=False)
