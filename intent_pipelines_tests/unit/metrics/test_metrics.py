"""Per-request rows and the rollup on the hand-computed fixture (see conftest.py), empty days and edge cases."""

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from intent_pipelines.alerts.signatures import normalize, signature
from intent_pipelines.metrics.percentiles import grouped_percentiles, nearest_rank, percentile
from intent_pipelines.metrics.requests import (
    REQUESTS_SCHEMA,
    derive_requests,
    empty_requests,
    read_compact,
    read_events,
)
from intent_pipelines.metrics.rollup import SCHEMA_VERSION, empty_stats, rollup, rollup_rows, to_text
from intent_pipelines_tests.support.metrics_events import DAY, LEGACY_EVENTS, SWITCH_FAILED, Event, events_table


def _rows(events: pa.Table) -> dict[str, dict[str, object]]:
    table = derive_requests(events, first=DAY, last=DAY)
    assert table.schema == REQUESTS_SCHEMA
    return {row["request_id"]: row for row in table.to_pylist()}


def rows_signature(events: pa.Table, request_id: str) -> object:
    return _rows(events)[request_id]["signature"]


def test_one_row_per_request_that_ended_on_the_day(events: pa.Table) -> None:
    """Requests ending on the day get a row (even one started the day before); later and unfinished ones do not."""
    rows = _rows(events)
    assert sorted(rows) == sorted(["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r12"])
    assert derive_requests(events, first=date(2026, 3, 11), last=date(2026, 3, 11))["request_id"].to_pylist() == ["r10"]


def test_row_fields_come_from_the_right_records(events: pa.Table) -> None:
    """Outcome, flags, failed step, signature, retries, cancel latency, dry run and replay link are derived exactly."""
    rows = _rows(events)
    assert [rows[r]["outcome"] for r in ("r1", "r3", "r4", "r6", "r7", "r8", "r12")] == [
        "success", "failure", "cancelled", "failure", "dry_run", "refused", "success"]
    assert (rows["r8"]["status"], rows["r8"]["reason"]) == ("REFUSED", "bad_input")
    # r12 failed, was resumed and succeeded: its last ending counts, and a success has no failure fields.
    assert (rows["r12"]["status"], rows["r12"]["duration_ms"], rows["r12"]["failed_step"]) == ("SUCCEEDED", 304_000,
                                                                                               None)
    assert rows["r12"]["signature"] is None and rows["r3"]["reason"] == "step_failed"
    assert rows["r2"]["retries"] == 1 and rows["r1"]["retries"] == 0
    assert rows["r3"]["rolled_back"] and not rows["r6"]["rolled_back"]
    assert rows["r3"]["failed_step"] == "switch" and rows["r3"]["error_class"] == "StepFailed"
    assert rows["r3"]["signature"] == signature("health check failed after 30s on 10.0.0.7", step="switch",
                                                error_class="StepFailed")
    assert rows["r4"]["cancelled"] and rows["r4"]["cancel_latency_ms"] == 1500
    assert rows["r8"]["failed_step"] == "(preflight)" and rows["r8"]["error_class"] == "ParamError"
    # r1..r6 carry context {"dry_run": true}: only the top-level field counts.
    assert [r for r, row in rows.items() if row["dry_run"]] == ["r7"]
    assert rows["r9"]["replay_of"] == "r1" and rows["r1"]["replay_of"] is None
    assert str(rows["r9"]["started"]) == "2026-03-09 23:59:30+00:00"
    assert rows["r9"]["duration_ms"] == 50_000


def test_start_outside_the_window_falls_back_to_end_minus_duration(events: pa.Table) -> None:
    """Without its request.start (older than the lookback), a request still counts; started = ended - duration."""
    only_day = events.filter(pa.compute.starts_with(events["ts"], DAY.isoformat()))
    rows = _rows(only_day)
    assert str(rows["r9"]["started"]) == "2026-03-09 23:59:30+00:00"
    assert rows["r9"]["intent"] == "deploy-app" and rows["r9"]["replay_of"] is None


def test_rollup_matches_the_hand_computed_figures(events: pa.Table) -> None:
    """Overall and per-intent counts, success rate, exact mean and nearest-rank p50/p95 equal the worked figures."""
    doc = rollup(derive_requests(events, first=DAY, last=DAY), first=DAY, last=DAY)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["percentile_method"] == "nearest-rank"
    assert doc["period"] == {"from": "2026-03-10", "to": "2026-03-10"}
    # Executions r1 r2 r3 r4 r5 r6 r9 r12 (r7 is a dry run, r8 a refusal); durations
    # 5000 7000 10000 20000 30000 40000 50000 304000 (r12's last ending).
    assert doc["overall"] == {
        "total_executions": 8, "success_count": 5, "failure_count": 2, "cancelled_count": 1, "rollback_count": 1,
        "dry_run_count": 1, "refused_count": 1, "waiting_count": 0, "success_rate": 0.625,
        "avg_duration_ms": 466_000 / 8, "p50_duration_ms": 20_000, "p95_duration_ms": 304_000, "retries": 1,
        "requests_with_retries": 1, "replay_count": 1, "cancel_latency_p50_ms": 1500, "cancel_latency_p95_ms": 1500}
    assert doc["refused_by_reason"] == {"bad_input": 1}
    deploy, restart = doc["by_intent"]
    assert (deploy["intent"], deploy["total_executions"], deploy["success_count"], deploy["success_rate"]) == (
        "deploy-app", 6, 4, 4 / 6)
    assert (deploy["avg_duration_ms"], deploy["p50_duration_ms"], deploy["p95_duration_ms"]) == (
        454_000 / 6, 30_000, 304_000)
    assert (restart["intent"], restart["total_executions"], restart["failure_count"], restart["dry_run_count"],
            restart["refused_count"]) == ("restart-app", 2, 1, 1, 1)
    assert (restart["avg_duration_ms"], restart["p50_duration_ms"], restart["p95_duration_ms"]) == (6000.0, 5000, 7000)
    assert restart["cancel_latency_p95_ms"] is None
    assert [(s["intent"], s["step"], s["failure_count"]) for s in doc["by_step"]] == [
        ("deploy-app", "switch", 1), ("restart-app", "restart", 1)]
    assert doc["by_step"][0]["top_message"] == normalize(SWITCH_FAILED.one_line())
    assert doc["by_step"][0]["top_signature"] == rows_signature(events, "r3")


def test_text_reads_like_the_issue_example(events: pa.Table) -> None:
    """The text output has the overall line, one line per intent and the failing steps with their reason."""
    text = to_text(rollup(derive_requests(events, first=DAY, last=DAY), first=DAY, last=DAY))
    lines = text.splitlines()
    assert lines[0] == "Intent System Metrics - 2026-03-10"
    assert lines[1].startswith("Overall: Total executions: 8  Success rate: 62.5% (5/8)  Avg duration: 58.2s")
    assert "Refused: 1  Waiting: 0" in lines[2]
    assert "  deploy-app: 6 runs, 66.7% success, avg 1m15s, p95 5m04s, 1 rolled back, 1 cancelled" in lines
    assert any(line.startswith("  switch (deploy-app): 1 failure (health check failed") for line in lines)


def test_empty_day_has_zero_counts_and_no_rates() -> None:
    """A quiet day gives zero counts, null rates and percentiles, and text that says n/a instead of failing."""
    assert derive_requests(events_table([]), first=DAY, last=DAY).num_rows == 0
    doc = rollup(empty_requests(), first=DAY, last=DAY)
    assert doc["overall"] == empty_stats() and doc["by_intent"] == [] and doc["by_step"] == []
    assert doc["overall"]["success_rate"] is None and doc["overall"]["p95_duration_ms"] is None
    assert "Success rate: n/a (0/0)" in to_text(doc)
    assert rollup_rows(doc)[0]["scope"] == "overall"


def test_only_dry_runs_make_no_executions() -> None:
    """A day of dry runs only has no executions and a null success rate, but counts the dry runs."""
    events = events_table([Event("2026-03-10T09:00:00.000Z", "d1", "request.start", {"intent": "x", "dry_run": True}),
                           Event("2026-03-10T09:00:01.000Z", "d1", "request.complete",
                                 {"status": "DRY_RUN", "duration_ms": 9})])
    overall = rollup(derive_requests(events))["overall"]
    assert (overall["total_executions"], overall["dry_run_count"], overall["success_rate"]) == (0, 1, None)


@pytest.mark.parametrize("legacy", [False, True], ids=["typed", "legacy"])
def test_missing_bodies_and_malformed_fields_are_tolerated(legacy: bool) -> None:
    """Without a body column, or with odd body types, derivation still yields rows (fields empty) instead of failing."""
    events = events_table([
        Event("2026-03-10T09:00:00.000Z", "a", "request.start", {"intent": "x", "dry_run": "yes"}),
        Event("2026-03-10T09:00:00.500Z", "a", "run.cancelled", {"latency_ms": "soon"}),
        Event("2026-03-10T09:00:01.000Z", "a", "request.complete", {"status": "FAILED"})], legacy=legacy)
    row = derive_requests(events).to_pylist()[0]
    assert (row["outcome"], row["dry_run"], row["cancel_latency_ms"], row["duration_ms"]) == (
        "failure", False, None, None)
    assert row["cancelled"]
    bare = derive_requests(events.drop_columns(["body"])).to_pylist()[0]
    assert bare["request_id"] == "a" and bare["signature"] is None


def test_typed_and_legacy_exports_give_identical_rows() -> None:
    """Rows from the typed body-field columns equal rows parsed from the bodies of an older export, field by field."""
    typed, legacy = derive_requests(events_table()), derive_requests(events_table(legacy=True))
    assert typed.num_rows == 11 and typed.equals(legacy)


def test_chains_written_before_typed_endings_stay_readable() -> None:
    """An old chain's refusal (FAILED after request.refused) counts as refused; its failure fields come from step.fail."""
    rows = {row["request_id"]: row for row in derive_requests(events_table(LEGACY_EVENTS)).to_pylist()}
    assert (rows["old1"]["outcome"], rows["old1"]["failed_step"], rows["old1"]["error_class"]) == (
        "failure", "switch", "StepFailed")
    assert rows["old1"]["signature"] == signature("health check failed after 30s on 10.0.0.7", step="switch",
                                                  error_class="StepFailed")
    assert (rows["old2"]["outcome"], rows["old2"]["failed_step"]) == ("refused", "(preflight)")


def test_typed_columns_are_read_and_bodies_never_are(tmp_path: Path) -> None:
    """With the typed columns present, bodies are not decoded: unparseable bodies change nothing."""
    events = events_table()
    garbled = events.set_column(events.schema.get_field_index("body"), "body",
                                pa.array([b"{not json"] * events.num_rows, type=pa.binary()))
    assert derive_requests(garbled).equals(derive_requests(events))
    pq.write_table(garbled, tmp_path / "typed.parquet")
    pq.write_table(events_table(legacy=True), tmp_path / "legacy.parquet")
    assert derive_requests(read_compact(tmp_path / "typed.parquet")).equals(derive_requests(events))
    assert derive_requests(read_events([tmp_path / "legacy.parquet"])).equals(derive_requests(events))


@pytest.mark.parametrize(("values", "p", "expected"), [
    (list(range(1, 21)), 95, 19),  # rank ceil(0.95 * 20) = 19
    (list(range(1, 20)), 95, 19),  # fewer than 20 values: p95 is the largest
    ([10, 20, 30, 40], 50, 20),
    ([40, 10, 30, 20], 50, 20),  # order does not matter
    ([7], 95, 7),
    ([7], 50, 7),
    ([5, 1], 50, 1),
    (list(range(1, 101)), 95, 95),
    (list(range(1, 102)), 95, 96),  # ceil(95.95)
    ([], 95, None),
])
def test_nearest_rank_percentiles_on_small_samples(values: list[int], p: int, expected: int | None) -> None:
    """Nearest-rank picks the value at rank ceil(P*n/100): exact, observed values, no interpolation."""
    assert percentile(values, p) == expected


def test_grouped_percentiles_match_the_single_sample_function() -> None:
    """The vectorized per-group percentiles equal percentile() on each group, and empty groups give None."""
    import numpy as np

    codes = np.array([0, 1, 0, 1, 0, 2, 2, 0], dtype=np.int64)
    values = np.array([5, 100, 1, 300, 9, 7, 7, 2], dtype=np.int64)
    result = grouped_percentiles(codes, values, 4, (50, 95))
    for g in range(4):
        for p in (50, 95):
            assert result[p][g] == percentile(values[codes == g].tolist(), p)
    assert nearest_rank(95, 1) == 1
    with pytest.raises(ValueError):
        nearest_rank(0, 10)
