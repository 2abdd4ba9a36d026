"""`intent metrics`: success rates, durations, failing steps; as text, JSON or Prometheus; baselines and drift."""

import difflib
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from intent_pipelines.cli.context import CliContext
from intent_pipelines.cli.dates import parse_date
from intent_pipelines.errors import UsageError

pass_ctx = click.make_pass_decorator(CliContext, ensure=True)
FORMATS = ("text", "json", "prometheus")


def _period(first: str | None, last: str | None, today: date) -> tuple[date, date]:
    """[--from, --to]: today by default; --from alone runs through today; --to alone is one day."""
    start, end = parse_date(first, "--from"), parse_date(last, "--to")
    if start is None and end is None:
        return today, today
    if start is None:
        assert end is not None
        return end, end
    end = end or max(start, today)
    if start > end:
        raise UsageError(f"--from {start} is after --to {end}", hint="Swap them.")
    return start, end


def _format(value: str) -> str:
    if value in FORMATS:
        return value
    close = difflib.get_close_matches(value, FORMATS, n=1)
    hint = f"Did you mean {close[0]!r}?" if close else f"Use one of {', '.join(FORMATS)}."
    raise UsageError(f"unknown --format {value!r}", hint=hint)


def _thresholds(assignments: tuple[str, ...]) -> Any:
    from intent_pipelines.metrics.drift import DriftThresholds

    pairs: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--threshold {item!r} is not NAME=VALUE", hint="E.g. --threshold success_rate_drop=0.1.")
        pairs[name.strip()] = value.strip()
    try:
        return DriftThresholds.from_assignments(pairs)
    except ValueError as exc:
        raise UsageError(str(exc), hint="See `intent metrics --help`.") from None


@click.command()
@click.option("--from", "first", metavar="YYYY-MM-DD", help="First UTC day (default: today).")
@click.option("--to", "last", metavar="YYYY-MM-DD", help="Last UTC day (default: today, or --from's day).")
@click.option("--by-intent", is_flag=True, help="Show the per-intent lines (text, prometheus).")
@click.option("--by-step", is_flag=True, help="Show the steps that fail most (text, prometheus).")
@click.option("--format", "fmt", default="text", metavar="text|json|prometheus",
              help="Output format (JSON always holds every section).")
@click.option("--save-baseline", "baseline_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Also save these metrics as a baseline JSON file.")
@click.option("--drift", "baseline_in", type=click.Path(path_type=Path, dir_okay=False),
              help="Compare with a saved baseline; print the drift report (Markdown, or JSON with --format json).")
@click.option("--threshold", "thresholds", multiple=True, metavar="NAME=VALUE",
              help="A drift threshold: success_rate_drop, rate_increase, duration_increase, min_executions.")
@pass_ctx
def metrics(cli: CliContext, first: str | None, last: str | None, by_intent: bool, by_step: bool, fmt: str,
            baseline_out: Path | None, baseline_in: Path | None, thresholds: tuple[str, ...]) -> None:
    """Metrics of the requests that ended in a period, computed from the audit log.

    Finished days come from their exported audit_events Parquet files when present; today and any
    day not exported yet are read from the store, so today's numbers need no schedule to have run.
    Without --by-intent/--by-step the text shows both sections.
    """
    fmt = _format(fmt)
    today = datetime.now(UTC).date()
    start, end = _period(first, last, today)
    limits = _thresholds(thresholds)
    if baseline_in is not None and fmt == "prometheus":
        raise UsageError("--drift prints Markdown or JSON", hint="Use --format text or --format json.")
    # Imported here: pyarrow and numpy cost time that `intent --help` should not pay.
    from intent_pipelines.metrics.drift import drift, load_baseline, save_baseline, to_markdown
    from intent_pipelines.metrics.prometheus import to_prometheus
    from intent_pipelines.metrics.rollup import rollup, to_text
    from intent_pipelines.metrics.sources import EventSource

    baseline = None
    if baseline_in is not None:
        try:
            baseline = load_baseline(baseline_in)
        except ValueError as exc:
            raise UsageError(str(exc), hint="Pass a file written by `intent metrics --save-baseline`.") from None
    source = EventSource(cli.engine.store, cli.home.warehouse / "audit_events", today=today)
    doc = rollup(source.requests(start, end), first=start, last=end)
    show_intents, show_steps = by_intent or not by_step, by_step or not by_intent
    if baseline is not None:
        report = drift(baseline, doc, limits)
        text = json.dumps(report, indent=2, sort_keys=True) + "\n" if fmt == "json" else to_markdown(report)
    elif fmt == "json":
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    elif fmt == "prometheus":
        text = to_prometheus(doc, by_intent=show_intents, by_step=show_steps)
    else:
        text = to_text(doc, by_intent=show_intents, by_step=show_steps) + "\n"
    sys.stdout.write(text)
    if baseline_out is not None:
        try:
            save_baseline(doc, baseline_out)
        except OSError as exc:
            raise UsageError(f"cannot write baseline {baseline_out}: {exc.strerror or exc}",
                             hint="Check the path.") from None
        click.echo(f"baseline saved to {baseline_out}", err=True)
