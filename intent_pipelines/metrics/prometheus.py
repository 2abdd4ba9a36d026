"""The metrics document as Prometheus text exposition format, for node_exporter's textfile collector.

Every series is a gauge over the reported period (not a monotonic counter): write the output to
``<textfile dir>/intent_metrics.prom`` (atomically: write a temp file, then rename) from cron or a
systemd timer and graph it in Grafana. Overall series carry no labels; per-intent series live in
their own ``intent_metrics_by_intent_*`` families with an ``intent`` label, so summing a family
never double counts. Durations are in seconds (Prometheus base unit); a value with no data (a rate
of an empty period, a percentile of no samples) is left out rather than written as NaN.
"""

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

DEFAULT_PREFIX: Final = "intent_metrics"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# (suffix, stats field, help, scale): scale 0.001 turns milliseconds into seconds.
_STATS: Final = (
    ("executions", "total_executions", "Requests that ended in the period, dry runs excluded.", None),
    ("successes", "success_count", "Executions that ended SUCCEEDED.", None),
    ("failures", "failure_count", "Executions that failed (rolled back or not), cancellations excluded.", None),
    ("cancellations", "cancelled_count", "Executions stopped by an operator or the watchdog.", None),
    ("rollbacks", "rollback_count", "Executions whose completed steps were rolled back.", None),
    ("dry_runs", "dry_run_count", "Dry runs that ended in the period.", None),
    ("retries", "retries", "Step retries (step.retry records) in the executions.", None),
    ("replays", "replay_count", "Executions that replayed an earlier request.", None),
    ("success_ratio", "success_rate", "Successes / executions (0..1).", None),
    ("duration_avg_seconds", "avg_duration_ms", "Mean request duration.", 0.001),
)
_QUANTILES: Final = (
    ("duration_seconds", (("0.5", "p50_duration_ms"), ("0.95", "p95_duration_ms")),
     "Request duration, nearest-rank percentiles."),
    ("cancel_latency_seconds", (("0.5", "cancel_latency_p50_ms"), ("0.95", "cancel_latency_p95_ms")),
     "Time from a stop request to the run being stopped, nearest-rank percentiles."),
)


def escape_label(value: str) -> str:
    r"""A label value as the exposition format wants it: \\, \" and \n escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Integers without a decimal point, floats in their shortest round-trip form."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    for name in labels:
        if not _LABEL.match(name):
            raise ValueError(f"invalid Prometheus label name {name!r}")
    return "{" + ",".join(f'{name}="{escape_label(str(value))}"' for name, value in labels.items()) + "}"


class _Writer:
    def __init__(self, prefix: str) -> None:
        if not _NAME.match(prefix):
            raise ValueError(f"invalid Prometheus metric name prefix {prefix!r}")
        self.prefix = prefix
        self.families: dict[str, tuple[str, list[str]]] = {}

    def add(self, name: str, help_text: str, labels: Mapping[str, str], value: float | None) -> None:
        full = f"{self.prefix}_{name}"
        family = self.families.setdefault(full, (help_text, []))
        if value is not None:
            family[1].append(f"{full}{_labels(labels)} {format_value(value)}")

    def lines(self) -> Iterator[str]:
        for name, (help_text, samples) in self.families.items():
            yield f"# HELP {name} {_escape_help(help_text)}"
            yield f"# TYPE {name} gauge"
            yield from samples


def _scaled(stats: Mapping[str, Any], field: str, scale: float | None) -> float | None:
    value = stats.get(field)
    if value is None or not isinstance(value, int | float):
        return None
    return value * scale if scale is not None else value


def _add_stats(out: _Writer, family: str, stats: Mapping[str, Any], labels: dict[str, str]) -> None:
    for suffix, field, help_text, scale in _STATS:
        out.add(f"{family}{suffix}", help_text, labels, _scaled(stats, field, scale))
    for suffix, quantiles, help_text in _QUANTILES:
        for quantile, field in quantiles:
            out.add(f"{family}{suffix}", help_text, {**labels, "quantile": quantile}, _scaled(stats, field, 0.001))


def to_prometheus(doc: Mapping[str, Any], *, by_intent: bool = True, by_step: bool = True,
                  prefix: str = DEFAULT_PREFIX) -> str:
    """The document as exposition text (ends with a newline, as the textfile collector requires)."""
    out = _Writer(prefix)
    period = doc.get("period") or {}
    out.add("info", "Metrics schema version and the period the other series cover (value always 1).",
            {"schema_version": str(doc.get("schema_version", "")), "period_from": period.get("from") or "",
             "period_to": period.get("to") or ""}, 1)
    _add_stats(out, "", doc.get("overall") or {}, {})
    if by_intent:
        for stats in doc.get("by_intent") or []:
            _add_stats(out, "by_intent_", stats, {"intent": str(stats.get("intent", ""))})
    if by_step:
        for step in doc.get("by_step") or []:
            labels = {"intent": str(step.get("intent", "")), "step": str(step.get("step", ""))}
            out.add("step_failures", "Failed executions by the step (or check) that failed.", labels,
                    step.get("failure_count"))
            if step.get("top_signature"):
                out.add("step_top_signature_failures",
                        "Failures of the step with its most frequent failure signature.",
                        {**labels, "signature": str(step["top_signature"])}, step.get("top_signature_count"))
    return "\n".join(out.lines()) + "\n"
