"""Prometheus exposition text (parsed back with prometheus_client) and the baseline/drift report."""

import copy
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from intent_pipelines.metrics.drift import DriftThresholds, drift, load_baseline, save_baseline, to_markdown
from intent_pipelines.metrics.prometheus import escape_label, to_prometheus
from intent_pipelines.metrics.requests import derive_requests, empty_requests
from intent_pipelines.metrics.rollup import rollup
from intent_pipelines_tests.support.metrics_events import DAY


@pytest.fixture
def doc(events: pa.Table) -> dict[str, Any]:
    return rollup(derive_requests(events, first=DAY, last=DAY), first=DAY, last=DAY)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_prometheus_text_parses_back_with_the_right_values(doc: dict[str, Any]) -> None:
    """prometheus_client's parser reads every family (HELP, TYPE gauge) and the values match the document."""
    text = to_prometheus(doc)
    assert text.endswith("\n")
    samples = _samples(text)
    assert samples[("intent_metrics_executions", ())] == 8
    assert samples[("intent_metrics_success_ratio", ())] == 0.625
    assert samples[("intent_metrics_duration_seconds", (("quantile", "0.95"),))] == 304.0
    assert samples[("intent_metrics_cancel_latency_seconds", (("quantile", "0.5"),))] == 1.5
    assert samples[("intent_metrics_by_intent_executions", (("intent", "deploy-app"),))] == 6
    assert samples[("intent_metrics_step_failures", (("intent", "deploy-app"), ("step", "switch")))] == 1
    info = [k for k in samples if k[0] == "intent_metrics_info"]
    assert info == [("intent_metrics_info", (("period_from", "2026-03-10"), ("period_to", "2026-03-10"),
                                             ("schema_version", "2")))]


def test_prometheus_labels_are_escaped_and_names_valid(doc: dict[str, Any]) -> None:
    """Label values with quotes, backslashes and newlines survive a round trip through the parser."""
    odd = 'we"ird\\app\nx'
    doc["by_intent"][0]["intent"] = odd
    doc["by_step"][0]["step"] = odd
    samples = _samples(to_prometheus(doc))
    assert samples[("intent_metrics_by_intent_executions", (("intent", odd),))] == 6
    assert escape_label(odd) == 'we\\"ird\\\\app\\nx'
    with pytest.raises(ValueError):
        to_prometheus(doc, prefix="bad-prefix")


def test_prometheus_of_an_empty_period_leaves_out_values_it_does_not_have() -> None:
    """An empty day has zero counts and no rate/percentile samples (not NaN), and still parses."""
    samples = _samples(to_prometheus(rollup(empty_requests(), first=DAY, last=DAY)))
    assert samples[("intent_metrics_executions", ())] == 0
    assert not any(name in ("intent_metrics_success_ratio", "intent_metrics_duration_seconds")
                   for name, _ in samples)


def test_prometheus_sections_follow_the_flags(doc: dict[str, Any]) -> None:
    """--by-intent/--by-step select the labelled families; overall series are always there."""
    names = {name for name, _ in _samples(to_prometheus(doc, by_intent=False, by_step=False))}
    assert "intent_metrics_executions" in names
    assert not any(n.startswith(("intent_metrics_by_intent_", "intent_metrics_step_")) for n in names)


def test_no_drift_against_itself(doc: dict[str, Any]) -> None:
    """A document compared with itself has no findings and a deterministic report."""
    report = drift(doc, doc)
    assert not report["drifted"] and report["findings"] == [] and report["new_failing_steps"] == []
    assert to_markdown(report) == to_markdown(drift(copy.deepcopy(doc), copy.deepcopy(doc)))
    assert "No drift beyond the thresholds." in to_markdown(report)


def test_drift_flags_changes_beyond_thresholds(doc: dict[str, Any]) -> None:
    """A success-rate drop, a slower p95 and a new failing step are findings; small changes are not."""
    baseline = copy.deepcopy(doc)
    baseline["overall"].update(success_rate=0.9, p95_duration_ms=200_000, avg_duration_ms=55_000.0)
    baseline["by_step"] = baseline["by_step"][1:]
    report = drift(baseline, doc)
    flagged = {(f["scope"], f["metric"]) for f in report["findings"]}
    assert flagged == {("overall", "success_rate"), ("overall", "p95_duration_ms")}
    assert [(s["intent"], s["step"]) for s in report["new_failing_steps"]] == [("deploy-app", "switch")]
    markdown = to_markdown(report)
    assert "**Drift detected.**" in markdown and "| overall | success_rate | 90.0% | 62.5% | -27.5 pp |" in markdown
    assert json.loads(json.dumps(report)) == report
    looser = drift(baseline, doc, DriftThresholds(success_rate_drop=0.5, duration_increase=1.0))
    assert {(f["scope"], f["metric"]) for f in looser["findings"]} == set()


def test_drift_is_safe_on_missing_fields_and_empty_periods(doc: dict[str, Any]) -> None:
    """Missing keys, an empty period on either side and a bare {} baseline give "n/a" comparisons, no findings."""
    empty = rollup(empty_requests(), first=DAY, last=DAY)
    for before, after in ((empty, doc), (doc, empty), ({}, doc), ({"overall": {"success_rate": "x"}}, empty)):
        report = drift(before, after)
        assert report["findings"] == []
        to_markdown(report)
    report = drift({"overall": {"total_executions": 8}}, doc)
    rate = next(c for c in report["comparisons"] if c["scope"] == "overall" and c["metric"] == "success_rate")
    assert rate["baseline"] is None and rate["change"] is None and not rate["exceeded"]


def test_few_executions_are_reported_but_not_flagged(doc: dict[str, Any]) -> None:
    """Below min_executions a change is shown with a note but raises no finding (too little data to judge)."""
    baseline = copy.deepcopy(doc)
    baseline["overall"]["success_rate"] = 1.0
    report = drift(baseline, doc, DriftThresholds(min_executions=100))
    assert report["findings"] == []
    assert all(c["note"] for c in report["comparisons"])


def test_baseline_round_trip_and_bad_files(doc: dict[str, Any], tmp_path: Path) -> None:
    """A saved baseline loads back equal; a non-JSON or foreign file is refused with one line."""
    path = tmp_path / "base" / "metrics.json"
    save_baseline(doc, path)
    assert load_baseline(path) == json.loads(json.dumps(doc))
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "other.json").write_text('{"schema": "something-else"}')
    for name in ("bad.json", "other.json", "missing.json"):
        with pytest.raises(ValueError) as info:
            load_baseline(tmp_path / name)
        assert "\n" not in str(info.value)


def test_threshold_assignments_are_validated() -> None:
    """--threshold NAME=VALUE accepts known names and numbers only."""
    assert DriftThresholds.from_assignments({"success_rate_drop": "0.1", "min_executions": "3"}) == DriftThresholds(
        success_rate_drop=0.1, min_executions=3)
    for bad in ({"nope": "1"}, {"rate_increase": "x"}, {"rate_increase": "-1"}):
        with pytest.raises(ValueError):
            DriftThresholds.from_assignments(bad)
