"""Metrics as Dagster assets: per-request rows, the daily rollup (plotted in the UI), failure signatures."""

import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field
from upath import UPath

from intent_pipelines.alerts.signatures import normalize
from intent_pipelines.dagster_defs.audit_assets import AUDIT_PARTITIONS, AuditRoot, AuditWarehouse, audit_events
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.home import IntentHome
from intent_pipelines.metrics.requests import LOOKBACK_DAYS, REQUESTS_SCHEMA
from intent_pipelines.metrics.rollup import ROLLUP_SCHEMA, rollup, rollup_rows
from intent_pipelines.metrics.sources import EventSource

METRICS_GROUP = "metrics"
METRICS_WAREHOUSE_KEY = "metrics_warehouse"

SIGNATURES_SCHEMA = pa.schema([
    ("signature", pa.string()),
    ("intent", pa.string()),
    ("step", pa.string()),
    ("error_class", pa.string()),
    ("count", pa.int64()),
    ("message", pa.string()),
    ("first_ended", pa.timestamp("ms", tz="UTC")),
    ("last_ended", pa.timestamp("ms", tz="UTC")),
])
# The stats the UI plots over time (numeric materialization metadata of intent_metrics).
PLOTTED = ("success_rate", "p50_duration_ms", "p95_duration_ms", "avg_duration_ms", "total_executions",
           "success_count", "failure_count", "rollback_count", "cancelled_count", "dry_run_count", "retries")


class MetricsWarehouse(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the metrics partitions are written: <root>/<asset>/date=YYYY-MM-DD/<asset>.parquet."""

    root: str = Field(default="", description="Directory or fsspec URL; empty means INTENT_HOME/warehouse.")

    def location(self, home: IntentHome) -> AuditRoot:
        """The configured root, resolved: plain Path for local directories, UPath for URLs."""
        if not self.root:
            return home.warehouse
        return UPath(self.root) if "://" in self.root else Path(self.root).expanduser().resolve()

    def file(self, home: IntentHome, asset: str, day: date) -> AuditRoot:
        """The partition file of ``asset`` for ``day``."""
        return self.location(home) / asset / f"date={day.isoformat()}" / f"{asset}.parquet"


def write_table(table: pa.Table, path: AuditRoot) -> None:
    """Write a Parquet file: atomically (temp file + rename) locally, one PUT on object stores."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(path, Path):
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        return
    with path.open("wb") as fh:
        pq.write_table(table, fh)


def read_table(path: AuditRoot) -> pa.Table:
    """Read a Parquet file from a Path or UPath."""
    if isinstance(path, Path):
        return pq.read_table(path)
    with path.open("rb") as fh:
        return pq.read_table(fh)


def _upstream_requests(home: IntentHome, warehouse: MetricsWarehouse, day: date) -> pa.Table:
    path = warehouse.file(home, "intent_requests", day)
    if not path.exists():
        raise dg.Failure(description=f"{path} does not exist: materialize intent_requests for {day} first",
                         allow_retries=False)
    return read_table(path)


def _lookback_mapping() -> dg.TimeWindowPartitionMapping:
    """Day D depends on audit_events D-LOOKBACK_DAYS..D; before the first partition there is nothing to wait for."""
    with warnings.catch_warnings():
        # allow_nonexistent_upstream_partitions is beta in 1.13; without it the first day could not be materialized.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.TimeWindowPartitionMapping(start_offset=-LOOKBACK_DAYS, allow_nonexistent_upstream_partitions=True)


def _schema_metadata(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


# One row per request that ended on the day, from the day's audit events (and the day before, where
# its request.start may be). A day not exported yet (today, or a late export) is read from the store's
# chain with the export's own code, so the rows are the same either way; metadata says which it was.
@dg.asset(
    partitions_def=AUDIT_PARTITIONS,
    deps=[dg.AssetDep(audit_events, partition_mapping=_lookback_mapping())],
    group_name=METRICS_GROUP,
    kinds={"parquet"},
    description="One row per request that ended on the UTC day: intent, status, outcome, started/ended, duration_ms, "
                "failed step, error class, failure signature, retries, rolled_back, cancelled, cancel latency, "
                "dry_run, replay_of. Derived from the audit_events partitions of the day and the day before.",
)
def intent_requests(context: dg.AssetExecutionContext, intent: IntentRuntime, audit_warehouse: AuditWarehouse,
                    metrics_warehouse: MetricsWarehouse) -> dg.MaterializeResult[None]:
    """Derive the day's per-request rows from the audit chain."""
    engine = intent.engine()
    day = date.fromisoformat(context.partition_key)
    source = EventSource(engine.store, audit_warehouse.location(engine.home), today=datetime.now(UTC).date())
    requests = source.requests(day, day)
    path = metrics_warehouse.file(engine.home, "intent_requests", day)
    write_table(requests, path)
    if "store" in source.used.values():
        from_store = sorted(k for k, v in source.used.items() if v == "store")
        context.log.info(f"audit events of {from_store} read from the store (no exported partition yet)")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)),
        "dagster/row_count": requests.num_rows,
        "sources": dg.MetadataValue.json(source.used),
        "dagster/column_schema": _schema_metadata(REQUESTS_SCHEMA),
    })


def _plotted(doc: dict[str, Any]) -> dict[str, Any]:
    """Numeric metadata for the UI's plots; a value with no data (empty day) is left out, not zero."""
    overall = doc["overall"]
    return {name: float(overall[name]) if isinstance(overall[name], float) else int(overall[name])
            for name in PLOTTED if overall[name] is not None}


# The day's rollup. Its numeric metadata (success rate, p95, counts) is recorded on every
# materialization, which is what the Dagster UI plots over time on the asset's page.
@dg.asset(
    partitions_def=AUDIT_PARTITIONS,
    deps=[intent_requests],
    group_name=METRICS_GROUP,
    kinds={"parquet"},
    description="The day's metrics rollup: overall, by intent and by failing step (scope column), with "
                "success_rate, avg/p50/p95 duration (nearest-rank), counts, retries and cancel latency. "
                "success_rate, p95_duration_ms and the counts are numeric metadata the UI plots.",
)
def intent_metrics(context: dg.AssetExecutionContext, intent: IntentRuntime,
                   metrics_warehouse: MetricsWarehouse) -> dg.MaterializeResult[None]:
    """Roll the day's intent_requests up."""
    engine = intent.engine()
    day = date.fromisoformat(context.partition_key)
    doc = rollup(_upstream_requests(engine.home, metrics_warehouse, day), first=day, last=day)
    table = pa.Table.from_pylist(rollup_rows(doc), schema=ROLLUP_SCHEMA)
    path = metrics_warehouse.file(engine.home, "intent_metrics", day)
    write_table(table, path)
    return dg.MaterializeResult(metadata={
        **_plotted(doc),
        "path": dg.MetadataValue.path(str(path)),
        "dagster/row_count": table.num_rows,
        "rollup": dg.MetadataValue.json(doc),
    })


def signature_table(requests: pa.Table) -> pa.Table:
    """Failures of the day grouped by signature, most frequent first (ties by signature)."""
    failed = requests.filter(pc.is_valid(requests["signature"]))
    if failed.num_rows == 0:
        return SIGNATURES_SCHEMA.empty_table()
    grouped = failed.group_by("signature", use_threads=False).aggregate([
        ([], "count_all"), ("intent", "first"), ("failed_step", "first"), ("error_class", "first"),
        ("error", "first"), ("ended", "min"), ("ended", "max")]).to_pylist()
    rows = [{"signature": g["signature"], "intent": g["intent_first"], "step": g["failed_step_first"],
             "error_class": g["error_class_first"], "count": g["count_all"],
             "message": normalize(g["error_first"] or ""), "first_ended": g["ended_min"], "last_ended": g["ended_max"]}
            for g in grouped]
    rows.sort(key=lambda r: (-r["count"], r["signature"]))
    return pa.Table.from_pylist(rows, schema=SIGNATURES_SCHEMA)


# Repeated failures cluster under one signature (alerts.signatures): this is the day's list of them,
# the thing to look at first when the success rate drops.
@dg.asset(
    partitions_def=AUDIT_PARTITIONS,
    deps=[intent_requests],
    group_name=METRICS_GROUP,
    kinds={"parquet"},
    description="The day's failures grouped by failure signature (step, error class and normalized message): "
                "count, intent, step, normalized message, first and last occurrence.",
)
def failure_signatures(context: dg.AssetExecutionContext, intent: IntentRuntime,
                       metrics_warehouse: MetricsWarehouse) -> dg.MaterializeResult[None]:
    """Group the day's failed requests by signature."""
    engine = intent.engine()
    day = date.fromisoformat(context.partition_key)
    table = signature_table(_upstream_requests(engine.home, metrics_warehouse, day))
    path = metrics_warehouse.file(engine.home, "failure_signatures", day)
    write_table(table, path)
    top = table.slice(0, 10).to_pylist()
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)),
        "dagster/row_count": table.num_rows,
        "failures": int(pc.sum(table["count"]).as_py() or 0),
        "top": dg.MetadataValue.md("\n".join(
            ["| signature | count | step | message |", "| --- | ---: | --- | --- |"]
            + [f"| {r['signature']} | {r['count']} | {r['step']} | {r['message']} |" for r in top])),
    })


# The daily metrics run: three small steps in sequence, in process (a process per step costs seconds).
metrics_rollup_job = dg.define_asset_job(
    "metrics_rollup_job",
    selection=dg.AssetSelection.assets(intent_requests, intent_metrics, failure_signatures),
    executor_def=dg.in_process_executor,
    description="Derive a day's per-request rows from the audit events, roll them up and group its failures "
                "by signature.",
)


# 02:15 UTC, after audit_integrity_daily (02:00) exported the day; a plain schedule for the same reason
# as that one (the partitions end today, and the helper would target today instead of yesterday).
@dg.schedule(
    job=metrics_rollup_job,
    cron_schedule="15 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 02:15 UTC: requests, metrics rollup and failure signatures of the previous day.",
)
def metrics_rollup_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """One run for the UTC day before the tick."""
    when = context.scheduled_execution_time or datetime.now(UTC)
    day = (when.astimezone(UTC) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)


def metrics_definitions(*, warehouse: MetricsWarehouse | None = None) -> dg.Definitions:
    """The metrics assets, job and schedule with their warehouse (the runtime and audit warehouse come from defs)."""
    return dg.Definitions(
        assets=[intent_requests, intent_metrics, failure_signatures],
        jobs=[metrics_rollup_job],
        schedules=[metrics_rollup_daily],
        resources={METRICS_WAREHOUSE_KEY: warehouse or MetricsWarehouse()},
    )

