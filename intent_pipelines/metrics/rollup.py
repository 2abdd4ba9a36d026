"""The metrics rollup of a period's requests: overall, by intent and by failing step, as a versioned dict and as text.

The dict is the JSON document `intent metrics --format json` prints and `--save-baseline` saves; its
schema is documented in docs/metrics.md and versioned by ``schema_version`` (fields are only ever
added within a version). Counts are over *executions*: requests that ended in the period and ran:
not dry runs, not refusals (nothing ran: counted as ``refused_count``, by reason in
``refused_by_reason``) and not waiting at a manual gate (``waiting_count``). success + failure +
cancelled = total_executions; rollback_count overlaps failures. A request's outcome is its last
ending, so a request resumed to success is a success.
Averages are exact (integer sum / count); percentiles are nearest-rank (see percentiles.py).
"""

from datetime import date
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from intent_pipelines.alerts.signatures import normalize
from intent_pipelines.metrics.percentiles import grouped_percentiles
from intent_pipelines.metrics.requests import CANCELLED, DRY_RUN, FAILURE, REFUSED, SUCCESS, WAITING

SCHEMA_NAME: Final = "intent-pipelines/metrics"
# 2: refusals and waiting requests are no longer executions (refused_count, waiting_count, refused_by_reason).
SCHEMA_VERSION: Final = 2
PERCENTILE_METHOD: Final = "nearest-rank"
UNKNOWN_STEP: Final = "(unknown)"

# Every field of a stats block, in the order the JSON shows them.
STAT_FIELDS: Final = (
    "total_executions", "success_count", "failure_count", "cancelled_count", "rollback_count", "dry_run_count",
    "refused_count", "waiting_count",
    "success_rate", "avg_duration_ms", "p50_duration_ms", "p95_duration_ms", "retries", "requests_with_retries",
    "replay_count", "cancel_latency_p50_ms", "cancel_latency_p95_ms",
)
STEP_FIELDS: Final = ("intent", "step", "failure_count", "top_signature", "top_signature_count", "top_message")


def _bools(column: pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    return np.asarray(pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=bool)


def _ints(column: pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Values (nulls as 0) and the validity mask."""
    valid = np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)
    values = np.asarray(pc.fill_null(column, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return values, valid


def _grouped_stats(requests: pa.Table, codes: npt.NDArray[np.int64], groups: int) -> list[dict[str, Any]]:
    """STAT_FIELDS for each group code in [0, groups)."""
    outcome = requests["outcome"]
    is_success, is_failure, is_cancelled, is_dry, is_refused, is_waiting = (
        _bools(pc.equal(outcome, value)) for value in (SUCCESS, FAILURE, CANCELLED, DRY_RUN, REFUSED, WAITING))
    executed = is_success | is_failure | is_cancelled
    rolled_back = _bools(requests["rolled_back"]) & executed
    retries, _ = _ints(requests["retries"])
    replayed = np.asarray(pc.is_valid(requests["replay_of"]).to_numpy(zero_copy_only=False), dtype=bool) & executed
    durations, has_duration = _ints(requests["duration_ms"])
    latency, has_latency = _ints(requests["cancel_latency_ms"])

    def count(mask: npt.NDArray[np.bool_]) -> list[int]:
        return [int(v) for v in np.bincount(codes[mask], minlength=groups)]

    def total(values: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]) -> list[int]:
        sums = np.zeros(groups, dtype=np.int64)
        np.add.at(sums, codes[mask], values[mask])
        return [int(v) for v in sums]

    timed = executed & has_duration
    timed_codes = codes[timed]
    timed_count = np.bincount(timed_codes, minlength=groups)
    duration_sum = total(durations, timed)
    duration_p = grouped_percentiles(timed_codes, durations[timed], groups, (50, 95))
    lat_mask = is_cancelled & has_latency
    latency_p = grouped_percentiles(codes[lat_mask], latency[lat_mask], groups, (50, 95))
    columns = {
        "total_executions": count(executed),
        "success_count": count(is_success),
        "failure_count": count(is_failure),
        "cancelled_count": count(is_cancelled),
        "rollback_count": count(rolled_back),
        "dry_run_count": count(is_dry),
        "refused_count": count(is_refused),
        "waiting_count": count(is_waiting),
        "retries": total(retries, executed),
        "requests_with_retries": count(executed & (retries > 0)),
        "replay_count": count(replayed),
    }
    out = []
    for g in range(groups):
        stats: dict[str, Any] = {name: values[g] for name, values in columns.items()}
        executions = stats["total_executions"]
        stats["success_rate"] = stats["success_count"] / executions if executions else None
        n = int(timed_count[g])
        stats["avg_duration_ms"] = duration_sum[g] / n if n else None
        stats["p50_duration_ms"], stats["p95_duration_ms"] = duration_p[50][g], duration_p[95][g]
        stats["cancel_latency_p50_ms"], stats["cancel_latency_p95_ms"] = latency_p[50][g], latency_p[95][g]
        out.append({name: stats[name] for name in STAT_FIELDS})
    return out


def empty_stats() -> dict[str, Any]:
    """The stats block of a period with no requests."""
    return {name: (None if name in _NULLABLE else 0) for name in STAT_FIELDS}


_NULLABLE: Final = frozenset({"success_rate", "avg_duration_ms", "p50_duration_ms", "p95_duration_ms",
                              "cancel_latency_p50_ms", "cancel_latency_p95_ms"})


def _by_step(requests: pa.Table) -> list[dict[str, Any]]:
    """Failing (intent, step) pairs, most failures first, each with its most frequent signature."""
    failed = requests.filter(pc.equal(requests["outcome"], FAILURE))
    if failed.num_rows == 0:
        return []
    failed = pa.table({
        "intent": failed["intent"],
        "step": pc.fill_null(failed["failed_step"], UNKNOWN_STEP),
        "signature": pc.fill_null(failed["signature"], ""),
        "error": pc.fill_null(failed["error"], ""),
    })
    grouped = failed.group_by(["intent", "step", "signature"], use_threads=False).aggregate(
        [([], "count_all"), ("error", "first")]).to_pylist()
    # Most frequent signature first; ties go to the smaller signature so the output is deterministic.
    grouped.sort(key=lambda r: (r["intent"], r["step"], r["signature"] == "", -r["count_all"], r["signature"]))
    steps: dict[tuple[str, str], dict[str, Any]] = {}
    for row in grouped:
        key = (row["intent"], row["step"])
        entry = steps.get(key)
        if entry is None:
            top = bool(row["signature"])
            entry = steps[key] = {
                "intent": key[0], "step": key[1], "failure_count": 0,
                "top_signature": row["signature"] if top else None,
                "top_signature_count": row["count_all"] if top else 0,
                "top_message": normalize(row["error_first"] or "") or None if top else None}
        entry["failure_count"] += row["count_all"]
    return sorted(steps.values(), key=lambda e: (-e["failure_count"], e["intent"], e["step"]))


def rollup(requests: pa.Table, *, first: date | None = None, last: date | None = None) -> dict[str, Any]:
    """The metrics document (SCHEMA_VERSION) of the requests (rows of requests.REQUESTS_SCHEMA)."""
    doc: dict[str, Any] = {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "period": {"from": first.isoformat() if first else None, "to": last.isoformat() if last else None},
        "percentile_method": PERCENTILE_METHOD,
        "overall": empty_stats(),
        "by_intent": [],
        "by_step": [],
        "refused_by_reason": {},
    }
    if requests.num_rows == 0:
        return doc
    refused = requests.filter(pc.equal(requests["outcome"], REFUSED))
    reasons = pc.fill_null(refused["reason"], "unknown").to_pylist()
    doc["refused_by_reason"] = {r: reasons.count(r) for r in sorted(set(reasons))}
    doc["overall"] = _grouped_stats(requests, np.zeros(requests.num_rows, dtype=np.int64), 1)[0]
    encoded = pc.dictionary_encode(requests["intent"]).combine_chunks()
    names = encoded.dictionary.to_pylist()
    codes = np.asarray(pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    per_intent = _grouped_stats(requests, codes, len(names))
    doc["by_intent"] = [{"intent": name, **stats} for name, stats in sorted(zip(names, per_intent, strict=True),
                                                                            key=lambda item: str(item[0]))]
    doc["by_step"] = _by_step(requests)
    return doc


# --- text -------------------------------------------------------------------------------------

def format_duration(ms: float | None) -> str:
    """45.2s, 3m05s, 1h02m; "-" for no value."""
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def format_rate(rate: float | None) -> str:
    """94.4%; "n/a" for no executions."""
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def period_label(doc: dict[str, Any]) -> str:
    """2026-11-21, or 2026-11-01..2026-11-21."""
    period = doc.get("period") or {}
    first, last = period.get("from"), period.get("to")
    if first and first == last:
        return str(first)
    return f"{first or 'start'}..{last or 'now'}"


def to_text(doc: dict[str, Any], *, by_intent: bool = True, by_step: bool = True, top: int = 5) -> str:
    """The human summary: overall line, one line per intent, the steps that fail most."""
    o = doc["overall"]
    total = o["total_executions"]
    lines = [f"Intent System Metrics - {period_label(doc)}",
             f"Overall: Total executions: {total}  Success rate: {format_rate(o['success_rate'])} "
             f"({o['success_count']}/{total})  Avg duration: {format_duration(o['avg_duration_ms'])}  "
             f"p50: {format_duration(o['p50_duration_ms'])}  p95: {format_duration(o['p95_duration_ms'])}",
             f"  Failures: {o['failure_count']}  Cancelled: {o['cancelled_count']}  Refused: {o['refused_count']}  "
             f"Waiting: {o['waiting_count']}  "
             f"Rolled back: {o['rollback_count']}  Retries: {o['retries']}  Dry runs: {o['dry_run_count']}  "
             f"Cancel latency p50/p95: {format_duration(o['cancel_latency_p50_ms'])}/"
             f"{format_duration(o['cancel_latency_p95_ms'])}"]
    if by_intent:
        lines.append("By Intent:" + ("" if doc["by_intent"] else " none"))
        for s in doc["by_intent"]:
            lines.append(f"  {s['intent']}: {s['total_executions']} runs, {format_rate(s['success_rate'])} success, "
                         f"avg {format_duration(s['avg_duration_ms'])}, p95 {format_duration(s['p95_duration_ms'])}"
                         + (f", {s['rollback_count']} rolled back" if s["rollback_count"] else "")
                         + (f", {s['cancelled_count']} cancelled" if s["cancelled_count"] else ""))
    if by_step:
        lines.append("Top Failure Steps:" + ("" if doc["by_step"] else " none"))
        for s in doc["by_step"][:top]:
            plural = "" if s["failure_count"] == 1 else "s"
            why = f" ({s['top_message']})" if s.get("top_message") else ""
            sig = f" [sig {s['top_signature']}]" if s.get("top_signature") else ""
            lines.append(f"  {s['step']} ({s['intent']}): {s['failure_count']} failure{plural}{why}{sig}")
    return "\n".join(lines)


def rollup_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document as flat rows (scope overall / intent / step) for the daily intent_metrics Parquet."""
    empty_step = dict.fromkeys(STEP_FIELDS[3:])
    rows = [{"scope": "overall", "intent": None, "step": None, **doc["overall"], **empty_step}]
    rows += [{"scope": "intent", **s, "step": None, **empty_step} for s in doc["by_intent"]]
    rows += [{"scope": "step", **empty_stats(), **s} for s in doc["by_step"]]
    return rows


ROLLUP_SCHEMA = pa.schema(
    [("scope", pa.string()), ("intent", pa.string()), ("step", pa.string())]
    + [(name, pa.float64() if name in ("success_rate", "avg_duration_ms") else pa.int64()) for name in STAT_FIELDS]
    + [("top_signature", pa.string()), ("top_signature_count", pa.int64()), ("top_message", pa.string())]
)
