"""Metrics end to end: assets materialized into tmp and read back, the schedule, and the `intent metrics` CLI."""

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from intent_pipelines.audit.export import TYPED_COLUMNS, day_table, typed_values
from intent_pipelines.cli.main import main
from intent_pipelines.dagster_defs.audit_assets import AuditWarehouse, audit_events
from intent_pipelines.dagster_defs.jobs import RUNTIME_KEY
from intent_pipelines.dagster_defs.metrics_assets import (
    MetricsWarehouse,
    failure_signatures,
    intent_metrics,
    intent_requests,
    metrics_definitions,
)
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.home import IntentHome
from intent_pipelines.metrics.requests import REQUESTS_SCHEMA, derive_requests
from intent_pipelines.metrics.rollup import rollup
from intent_pipelines.store import StateStore
from intent_pipelines_tests.support.metrics_events import AFTER, BEFORE, DAY, events_table, fill_store


@dataclass
class Setup:
    home: IntentHome
    store: StateStore
    warehouse: Path

    def resources(self) -> dict[str, Any]:
        return {RUNTIME_KEY: IntentRuntime(intent_home=str(self.home.root)),
                "audit_warehouse": AuditWarehouse(root=str(self.warehouse / "audit_events")),
                "metrics_warehouse": MetricsWarehouse(root=str(self.warehouse))}

    def file(self, asset: str, day: date = DAY) -> Path:
        return self.warehouse / asset / f"date={day.isoformat()}" / f"{asset}.parquet"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """A home whose store holds the hand-computed fixture (conftest.py) on 2026-03-09..11."""
    home = IntentHome(tmp_path / "home").ensure()
    monkeypatch.setenv("INTENT_HOME", str(home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    monkeypatch.delenv("INTENT_STORE_URL", raising=False)
    store = StateStore(home.store_url())
    fill_store(store)
    return Setup(home, store, tmp_path / "warehouse")


def _materialize(setup: Setup, assets: list[Any], day: str = DAY.isoformat()) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, partition_key=day, resources=setup.resources())


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    (materialization,) = result.asset_materializations_for_node(node)
    return {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}


def test_assets_write_requests_rollup_and_signatures_from_exported_days(setup: Setup) -> None:
    """From exported audit_events, the three assets write Parquet that reads back to the hand-computed figures."""
    for day in (BEFORE, DAY.isoformat()):
        _materialize(setup, [audit_events], day)
    result = _materialize(setup, [intent_requests, intent_metrics, failure_signatures])
    assert result.success

    requests = pq.read_table(setup.file("intent_requests"))
    assert requests.schema.remove_metadata() == REQUESTS_SCHEMA
    assert sorted(requests["request_id"].to_pylist()) == sorted([*(f"r{i}" for i in range(1, 10)), "r12"])
    assert _meta(result, "intent_requests")["sources"] == {BEFORE: "parquet", DAY.isoformat(): "parquet"}

    meta = _meta(result, "intent_metrics")
    assert (meta["success_rate"], meta["p95_duration_ms"], meta["total_executions"]) == (0.625, 304_000, 8)
    assert (meta["failure_count"], meta["rollback_count"], meta["cancelled_count"]) == (2, 1, 1)
    assert meta["rollup"] == rollup(derive_requests(events_table(), first=DAY, last=DAY), first=DAY, last=DAY)
    rows = pq.read_table(setup.file("intent_metrics")).to_pylist()
    overall = next(r for r in rows if r["scope"] == "overall")
    assert (overall["total_executions"], overall["p50_duration_ms"], overall["success_rate"]) == (8, 20_000, 0.625)
    assert {r["intent"] for r in rows if r["scope"] == "intent"} == {"deploy-app", "restart-app"}
    assert [r["step"] for r in rows if r["scope"] == "step"] == ["switch", "restart"]

    signatures = pq.read_table(setup.file("failure_signatures")).to_pylist()
    assert sorted(s["step"] for s in signatures) == ["(preflight)", "build", "restart", "switch"]
    assert all(s["count"] == 1 for s in signatures)


def test_requests_fall_back_to_the_store_when_a_day_is_not_exported(setup: Setup) -> None:
    """Without exported partitions the rows come from the store's chain and equal the rows from Parquet."""
    result = _materialize(setup, [intent_requests])
    assert _meta(result, "intent_requests")["sources"] == {BEFORE: "store", DAY.isoformat(): "store"}
    from_store = pq.read_table(setup.file("intent_requests"))
    for day in (BEFORE, DAY.isoformat()):
        _materialize(setup, [audit_events], day)
    _materialize(setup, [intent_requests])
    assert pq.read_table(setup.file("intent_requests")).equals(from_store)


def test_export_fills_the_typed_columns_from_the_bodies(setup: Setup) -> None:
    """The exported typed columns (dry_run, replay_of, error, latency_ms, ...) hold exactly what each body says."""
    exported = pa.concat_tables([day_table(setup.store, date.fromisoformat(BEFORE)), day_table(setup.store, DAY)])
    expected = events_table().filter(pc.less(events_table()["ts"], AFTER))
    assert TYPED_COLUMNS == ["intent", "step", "status", "duration_ms", "dry_run", "replay_of", "error",
                             "error_class", "latency_ms", "reason", "signature"]
    # intent is left out: the store knows no requests' intents here (fill_store writes the chain only).
    for name in ["ts", "request_id", "kind", *TYPED_COLUMNS[1:]]:
        assert exported[name].to_pylist() == expected[name].to_pylist(), name
    assert exported["latency_ms"].drop_null().to_pylist() == [1500]
    assert exported["replay_of"].drop_null().to_pylist() == ["r1"]


def test_typed_values_keep_only_fields_of_the_right_type() -> None:
    """A body field of the wrong JSON type (or an integer beyond int64) gives null, never a coerced value."""
    odd = {"dry_run": "yes", "replay_of": 7, "error": None, "error_class": ["X"], "latency_ms": True}
    assert typed_values(odd, "x")[4:] == (None,) * 7
    assert typed_values({"reason": 1, "signature": "abc"}, "x", "request.complete")[-2:] == (None, "abc")
    assert typed_values({"reason": "why not", "signature": "abc"}, "x", "request.start")[-2:] == (None, None)
    assert typed_values({"latency_ms": 2**63}, None)[TYPED_COLUMNS.index("latency_ms")] is None
    assert typed_values({"latency_ms": -(2**63), "dry_run": False}, None)[TYPED_COLUMNS.index("latency_ms")] == -(2**63)
    assert typed_values({"check": "http", "intent": "own"}, "x")[:2] == ("own", "http")


def test_empty_day_materializes_empty_files(setup: Setup) -> None:
    """A day without requests still materializes: zero rows, zero counts, no success_rate plotted."""
    result = _materialize(setup, [intent_requests, intent_metrics, failure_signatures], "2026-02-01")
    assert result.success
    assert pq.read_table(setup.file("intent_requests", date(2026, 2, 1))).num_rows == 0
    meta = _meta(result, "intent_metrics")
    assert meta["total_executions"] == 0 and "success_rate" not in meta


def test_rollup_without_upstream_requests_fails_with_a_clear_message(setup: Setup) -> None:
    """intent_metrics alone, before intent_requests exists for the day, fails and says what to materialize."""
    result = dg.materialize([intent_metrics], partition_key="2026-02-02", resources=setup.resources(),
                            raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "materialize intent_requests for 2026-02-02 first" in str(failure.step_failure_data.error)


def test_lineage_and_schedule_for_the_previous_day() -> None:
    """Lineage runs audit_events -> intent_requests -> intent_metrics/failure_signatures; the schedule asks for yesterday."""
    from intent_pipelines.definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert graph.get(intent_requests.key).parent_keys == {audit_events.key}
    assert graph.get(intent_metrics.key).parent_keys == {intent_requests.key}
    assert graph.get(failure_signatures.key).parent_keys == {intent_requests.key}

    local = dg.Definitions.merge(metrics_definitions(), dg.Definitions(
        assets=[audit_events], resources={RUNTIME_KEY: IntentRuntime(), "audit_warehouse": AuditWarehouse()}))
    schedule = local.get_schedule_def("metrics_rollup_daily")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("15 2 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "metrics_rollup_job"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 11, 2, 15, tzinfo=UTC),
                                        repository_def=local.get_repository_def())
    run_requests = schedule.evaluate_tick(context).run_requests
    assert run_requests is not None
    assert [(r.partition_key, r.run_key) for r in run_requests] == [("2026-03-10", "2026-03-10")]


def test_schedule_job_runs_all_three_assets(setup: Setup, instance: dg.DagsterInstance) -> None:
    """The scheduled job materializes requests, rollup and signatures for the partition in one run."""
    job = dg.Definitions.merge(metrics_definitions(warehouse=MetricsWarehouse(root=str(setup.warehouse))),
                               dg.Definitions(assets=[audit_events], resources={
                                   k: v for k, v in setup.resources().items() if k != "metrics_warehouse"})
                               ).resolve_job_def("metrics_rollup_job")
    result = job.execute_in_process(partition_key=DAY.isoformat(), instance=instance)
    assert result.success
    assert all(setup.file(a).exists() for a in ("intent_requests", "intent_metrics", "failure_signatures"))


# --- the CLI ------------------------------------------------------------------------------------

def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["metrics", *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_text_json_and_prometheus_for_a_day(setup: Setup) -> None:
    """`intent metrics` prints the fixture's figures as text, JSON (schema v2) and parseable Prometheus text."""
    code, out, _ = _cli("--from", "2026-03-10", "--to", "2026-03-10")
    assert code == 0
    assert out.splitlines()[0] == "Intent System Metrics - 2026-03-10"
    assert "Success rate: 62.5% (5/8)" in out and "By Intent:" in out and "Top Failure Steps:" in out

    code, out, _ = _cli("--from", "2026-03-10", "--to", "2026-03-10", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["schema_version"] == 2 and doc["overall"]["total_executions"] == 8
    assert doc == json.loads(json.dumps(rollup(derive_requests(events_table(), first=DAY, last=DAY),
                                               first=DAY, last=DAY)))

    code, out, _ = _cli("--from", "2026-03-10", "--to", "2026-03-10", "--format", "prometheus", "--by-intent")
    families = {f.name: f for f in text_string_to_metric_families(out)}
    assert code == 0 and families["intent_metrics_executions"].samples[0].value == 8
    assert "intent_metrics_by_intent_executions" in families and "intent_metrics_step_failures" not in families

    code, out, _ = _cli("--from", "2026-03-10", "--to", "2026-03-10", "--by-step")
    assert "By Intent:" not in out and "Top Failure Steps:" in out


def test_cli_counts_today_without_any_export(setup: Setup) -> None:
    """Today's requests count at once: read from the store, no schedule or export needed."""
    setup.store.append_audit("request.start", request_id="now-1", run_id="now-1",
                             body={"intent": "scale-app", "dry_run": False})
    setup.store.append_audit("request.complete", request_id="now-1", run_id="now-1",
                             body={"status": "SUCCEEDED", "duration_ms": 1234})
    code, out, _ = _cli("--format", "json")
    doc = json.loads(out)
    today = datetime.now(UTC).date().isoformat()
    assert code == 0 and doc["period"] == {"from": today, "to": today}
    assert doc["overall"]["total_executions"] == 1 and doc["by_intent"][0]["intent"] == "scale-app"


def test_cli_baseline_then_drift(setup: Setup, tmp_path: Path) -> None:
    """--save-baseline writes the document; --drift against it reports no drift (Markdown) and JSON on request."""
    baseline = tmp_path / "baseline.json"
    code, _, err = _cli("--from", "2026-03-10", "--to", "2026-03-10", "--save-baseline", str(baseline))
    assert code == 0 and f"baseline saved to {baseline}" in err
    assert json.loads(baseline.read_text())["overall"]["total_executions"] == 8

    code, out, _ = _cli("--from", "2026-03-10", "--to", "2026-03-10", "--drift", str(baseline))
    assert code == 0 and out.startswith("# Metrics drift: 2026-03-10 vs baseline 2026-03-10")
    assert "No drift beyond the thresholds." in out
    # Against a quiet day: the period is empty, nothing to judge, still a report.
    code, out, _ = _cli("--from", "2026-02-01", "--to", "2026-02-01", "--drift", str(baseline), "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["findings"] == [] and report["current_period"]["from"] == "2026-02-01"


@pytest.mark.parametrize(("args", "message"), [
    (("--from", "2026-13-01"), "--from '2026-13-01' is not a date"),
    (("--from", "2026-03-10", "--to", "2026-03-01"), "is after --to"),
    (("--format", "jsn"), "Did you mean 'json'?"),
    (("--drift", "/nonexistent/base.json"), "cannot read baseline"),
    (("--drift", "x.json", "--format", "prometheus"), "--drift prints Markdown or JSON"),
    (("--threshold", "speed=1"), "unknown drift threshold 'speed'"),
])
def test_cli_bad_input_exits_2_with_one_line(setup: Setup, args: tuple[str, ...], message: str) -> None:
    """Bad dates, formats, baselines and thresholds exit 2 with one line on stderr and nothing on stdout."""
    code, out, err = _cli(*args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
