"""Baseline and drift: compare a period's metrics document with a saved one and flag changes beyond thresholds.

A baseline is simply a saved metrics document (`intent metrics --save-baseline FILE`). Drift compares
the overall block and every intent present in both documents, metric by metric, and reports each
comparison (as JSON and Markdown) with the ones past a threshold as findings. Missing fields, older
documents and empty periods are compared as "no data", never as zero; a scope with fewer than
``min_executions`` executions on either side is reported but raises no finding. The output depends
only on the two documents and the thresholds (sorted, no clock), so it is deterministic.
"""

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final

from intent_pipelines.metrics.rollup import SCHEMA_NAME, format_duration, format_rate, period_label

DRIFT_SCHEMA_NAME: Final = "intent-pipelines/metrics-drift"
DRIFT_SCHEMA_VERSION: Final = 1


@dataclass(frozen=True)
class DriftThresholds:
    """When a change counts as drift (defaults documented in docs/metrics.md)."""

    success_rate_drop: float = 0.05  # absolute: 0.05 = five percentage points lower
    rate_increase: float = 0.05  # absolute, for the failure, cancellation and rollback rates
    duration_increase: float = 0.25  # relative, for avg and p95 duration: 0.25 = 25 % slower
    min_executions: int = 5  # fewer executions on either side: compared, never flagged

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) >= 0:  # written so that nan fails too
                raise ValueError(f"drift threshold {f.name} must be >= 0, got {getattr(self, f.name)}")

    @classmethod
    def from_assignments(cls, assignments: Mapping[str, str]) -> "DriftThresholds":
        """Thresholds from NAME=VALUE pairs (CLI ``--threshold``); unknown names raise ValueError."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, raw in assignments.items():
            if name not in known:
                raise ValueError(f"unknown drift threshold {name!r} (known: {', '.join(sorted(known))})")
            try:
                values[name] = int(raw) if name == "min_executions" else float(raw)
            except ValueError:
                raise ValueError(f"drift threshold {name}={raw!r} is not a number") from None
        return cls(**values)


# (metric, kind): "drop" flags a fall of the rate, "rise" a rise of the rate, "slower" a relative rise.
_METRICS: Final = (
    ("total_executions", "info"),
    ("success_rate", "drop"),
    ("failure_rate", "rise"),
    ("cancel_rate", "rise"),
    ("rollback_rate", "rise"),
    ("avg_duration_ms", "slower"),
    ("p95_duration_ms", "slower"),
)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _value(stats: Mapping[str, Any], metric: str) -> float | None:
    """A metric of a stats block; rates are derived from counts when the document lacks them."""
    total = _number(stats.get("total_executions"))
    counts = {"failure_rate": "failure_count", "cancel_rate": "cancelled_count", "rollback_rate": "rollback_count"}
    if metric in counts:
        count = _number(stats.get(counts[metric]))
        return count / total if count is not None and total else None
    return _number(stats.get(metric))


def _compare(scope: str, intent: str | None, baseline: Mapping[str, Any], current: Mapping[str, Any],
             t: DriftThresholds) -> list[dict[str, Any]]:
    rows = []
    enough = all((_number(s.get("total_executions")) or 0) >= max(t.min_executions, 1) for s in (baseline, current))
    for metric, kind in _METRICS:
        before, now = _value(baseline, metric), _value(current, metric)
        change = None if before is None or now is None else now - before
        threshold: float | None = None
        exceeded = False
        if kind == "drop":
            threshold = t.success_rate_drop
            exceeded = change is not None and -change > threshold
        elif kind == "rise":
            threshold = t.rate_increase
            exceeded = change is not None and change > threshold
        elif kind == "slower":
            threshold = t.duration_increase
            exceeded = change is not None and before is not None and before > 0 and change / before > threshold
        rows.append({"scope": scope, "intent": intent, "metric": metric, "baseline": before, "current": now,
                     "change": change, "threshold": threshold, "exceeded": bool(exceeded and enough),
                     "note": "" if enough else "too few executions to judge"})
    return rows


def _stats(doc: Mapping[str, Any]) -> dict[str | None, Mapping[str, Any]]:
    out: dict[str | None, Mapping[str, Any]] = {None: doc.get("overall") or {}}
    for stats in doc.get("by_intent") or []:
        if isinstance(stats, Mapping) and isinstance(stats.get("intent"), str):
            out[stats["intent"]] = stats
    return out


def _failing_steps(doc: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(str(s.get("intent")), str(s.get("step"))): s for s in doc.get("by_step") or []
            if isinstance(s, Mapping)}


def drift(baseline: Mapping[str, Any], current: Mapping[str, Any],
          thresholds: DriftThresholds | None = None) -> dict[str, Any]:
    """The drift document (schema_version 1): every comparison, the findings, and new failing steps."""
    t = thresholds or DriftThresholds()
    before, now = _stats(baseline), _stats(current)
    comparisons = _compare("overall", None, before[None], now[None], t)
    for intent in sorted(k for k in before.keys() & now.keys() if k is not None):
        comparisons += _compare("intent", intent, before[intent], now[intent], t)
    old_steps = _failing_steps(baseline)
    new_steps = [{"intent": s["intent"], "step": s["step"], "failure_count": s.get("failure_count"),
                  "top_signature": s.get("top_signature"), "top_message": s.get("top_message")}
                 for key, s in sorted(_failing_steps(current).items()) if key not in old_steps]
    findings = [c for c in comparisons if c["exceeded"]]
    return {
        "schema": DRIFT_SCHEMA_NAME,
        "schema_version": DRIFT_SCHEMA_VERSION,
        "baseline_period": baseline.get("period") or {"from": None, "to": None},
        "current_period": current.get("period") or {"from": None, "to": None},
        "thresholds": asdict(t),
        "drifted": bool(findings or new_steps),
        "findings": findings,
        "new_failing_steps": new_steps,
        "intents_only_in_baseline": sorted(k for k in before.keys() - now.keys() if k is not None),
        "intents_only_in_current": sorted(k for k in now.keys() - before.keys() if k is not None),
        "comparisons": comparisons,
    }


def _show(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric.endswith("_rate"):
        return format_rate(value)
    if metric.endswith("_ms"):
        return format_duration(value)
    return f"{value:g}"


def _show_change(metric: str, row: Mapping[str, Any]) -> str:
    change, before = row["change"], row["baseline"]
    if change is None:
        return "n/a"
    if metric.endswith("_rate"):
        return f"{change * 100:+.1f} pp"
    if metric.endswith("_ms") and before:
        return f"{change / before * 100:+.1f}%"
    return f"{change:+g}"


def to_markdown(report: Mapping[str, Any]) -> str:
    """The drift document as a Markdown report."""
    base = period_label({"period": report["baseline_period"]})
    cur = period_label({"period": report["current_period"]})
    lines = [f"# Metrics drift: {cur} vs baseline {base}", "",
             "**Drift detected.**" if report["drifted"] else "No drift beyond the thresholds.", ""]
    t = report["thresholds"]
    lines += [f"Thresholds: success rate drop > {t['success_rate_drop'] * 100:g} pp; failure/cancel/rollback "
              f"rate rise > {t['rate_increase'] * 100:g} pp; avg/p95 duration rise > "
              f"{t['duration_increase'] * 100:g}%; at least {t['min_executions']} executions on both sides.", ""]
    header = ["| scope | metric | baseline | current | change |", "| --- | --- | ---: | ---: | ---: |"]

    def row(c: Mapping[str, Any]) -> str:
        scope = c["intent"] or "overall"
        return (f"| {scope} | {c['metric']} | {_show(c['metric'], c['baseline'])} | "
                f"{_show(c['metric'], c['current'])} | {_show_change(c['metric'], c)} |")

    lines.append("## Findings")
    lines += ["", *header, *(row(c) for c in report["findings"])] if report["findings"] else ["", "None."]
    lines += ["", "## New failing steps", ""]
    if report["new_failing_steps"]:
        lines += [f"- {s['step']} ({s['intent']}): {s['failure_count']} failures"
                  + (f" — {s['top_message']}" if s.get("top_message") else "") for s in report["new_failing_steps"]]
    else:
        lines.append("None.")
    if report["intents_only_in_baseline"] or report["intents_only_in_current"]:
        lines += ["", f"Intents only in the baseline: {', '.join(report['intents_only_in_baseline']) or '-'}; "
                      f"only now: {', '.join(report['intents_only_in_current']) or '-'}."]
    lines += ["", "## Overall", "", *header, *(row(c) for c in report["comparisons"] if c["scope"] == "overall")]
    return "\n".join(lines) + "\n"


def load_baseline(path: Path) -> dict[str, Any]:
    """A saved metrics document; ValueError (one line) when the file is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"baseline {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema", SCHEMA_NAME) != SCHEMA_NAME:
        raise ValueError(f"baseline {path} is not an intent metrics document (saved with --save-baseline)")
    return data


def save_baseline(doc: Mapping[str, Any], path: Path) -> None:
    """Write the document atomically, pretty-printed with sorted keys (diffable, deterministic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
