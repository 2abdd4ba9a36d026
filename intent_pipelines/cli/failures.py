"""`intent failures`: the daily failure summary, by intent, step and signature, from the alert log.

Only failures (status.Category.FAILURE) are counted and grouped; refusals, waiting gates and stops
are on the alert log too and are counted beside them, never as failures.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import click

from intent_pipelines.alerts.log import AlertRecord, alert_log_path, read_alerts
from intent_pipelines.cli.context import CliContext
from intent_pipelines.cli.dates import day_span, each_day, parse_date
from intent_pipelines.cli.output import console, print_json
from intent_pipelines.status import Category

pass_ctx = click.make_pass_decorator(CliContext, ensure=True)


@dataclass
class Group:
    """Failures of one intent at one step with one signature: the same problem, repeated."""

    intent: str
    step: str
    signature: str
    reason: str
    error_class: str
    example: str
    count: int = 0
    first_ts: str = ""
    last_ts: str = ""
    requests: list[str] = field(default_factory=list)
    last_report: str = ""

    def add(self, alert: AlertRecord) -> None:
        self.count += 1
        self.first_ts = self.first_ts or alert.ts
        self.last_ts = alert.ts
        if alert.request_id not in self.requests:
            self.requests.append(alert.request_id)
        self.last_report = alert.report

    def to_dict(self) -> dict[str, Any]:
        return {"intent": self.intent, "step": self.step, "signature": self.signature, "reason": self.reason,
                "error_class": self.error_class, "count": self.count, "example": self.example,
                "first_ts": self.first_ts, "last_ts": self.last_ts, "request_ids": self.requests,
                "last_report": self.last_report}


def summarize(alerts: list[AlertRecord], day: date) -> dict[str, Any]:
    """One day's summary: totals by intent and the groups, most frequent first (stable JSON schema)."""
    days_alerts = [a for a in alerts if a.day == day]
    todays = [a for a in days_alerts if a.category == Category.FAILURE.value]
    others = Counter(a.category for a in days_alerts if a.category != Category.FAILURE.value)
    groups: dict[tuple[str, str, str], Group] = {}
    for alert in todays:
        key = (alert.intent, alert.step, alert.signature)
        if key not in groups:
            groups[key] = Group(alert.intent, alert.step, alert.signature, alert.reason, alert.error_class,
                                alert.message)
        groups[key].add(alert)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.intent, g.step, g.signature))
    return {"date": day.isoformat(), "total": len(todays),
            **{c.value: others.get(c.value, 0) for c in (Category.REFUSED, Category.WAITING, Category.STOPPED)},
            "by_intent": dict(sorted(Counter(a.intent for a in todays).items())),
            "by_reason": dict(sorted(Counter(a.reason for a in todays).items())),
            "groups": [g.to_dict() for g in ordered]}


def _days(day: str | None, days: int | None) -> list[date]:
    span = day_span(parse_date(day, "--date"), days) or day_span(None, 1)
    assert span is not None
    return each_day(span)


def _print_day(summary: dict[str, Any]) -> None:
    besides = [f"{summary[c.value]} {c.value}" for c in (Category.REFUSED, Category.WAITING, Category.STOPPED)
               if summary[c.value]]
    console.print(f"Intent failures - {summary['date']}: {summary['total']}"
                  + (f" (not failures: {', '.join(besides)})" if besides else ""), markup=False)
    if not summary["total"]:
        return
    console.print("By intent: " + "  ".join(f"{name}: {n}" for name, n in summary["by_intent"].items()),
                  markup=False)
    console.print("By reason: " + "  ".join(f"{name}: {n}" for name, n in summary["by_reason"].items()),
                  markup=False)
    for group in summary["groups"]:
        console.print(f"  {group['count']:>3}x  {group['intent']} / {group['step'] or '-'}  "
                      f"[{group['signature']}] {group['reason']}: {group['example'][:160]}", markup=False)
        console.print(f"        last {group['last_ts']}  request {group['request_ids'][-1]}  "
                      f"report {group['last_report']}", markup=False)


@click.command()
@click.option("--date", "day", help="One UTC day (YYYY-MM-DD); default today.")
@click.option("--days", type=int, help="The last N days, today included, one summary per day.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def failures(cli: CliContext, day: str | None, days: int | None, fmt: str) -> None:
    """Daily failure summary by intent, step and signature (from the failure alert log)."""
    chosen = _days(day, days)
    # Read once and sorted by day, so N days cost one pass over the log, not N.
    by_day: dict[date, list[AlertRecord]] = defaultdict(list)
    for alert in read_alerts(cli.home):
        by_day[alert.day].append(alert)
    summaries = [summarize(by_day.get(d, []), d) for d in chosen]
    if fmt == "json":
        print_json({"log": str(alert_log_path(cli.home)), "days": summaries,
                    "total": sum(s["total"] for s in summaries)})
        return
    for n, summary in enumerate(summaries):
        if n:
            console.print("", markup=False)
        _print_day(summary)
