"""The audit chain as Dagster assets: daily Parquet partitions, their integrity check, the daily checkpoint."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
from pydantic import Field
from upath import UPath

from intent_pipelines.audit.checkpoint import Checkpoint
from intent_pipelines.audit.export import (
    FILE_NAME,
    SCHEMA,
    day_bounds,
    day_table,
    export_day,
    partition_path,
    read_records,
)
from intent_pipelines.audit.integrity import store_checkpoints, take_checkpoint, verify_store, write_alert
from intent_pipelines.audit.record import GENESIS_PREV
from intent_pipelines.audit.verify import BreakKind, ChainBreak, RecordTuple, VerifyResult, verify_records
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.errors import AuditBroken
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore

AUDIT_GROUP = "audit"
WAREHOUSE_KEY = "audit_warehouse"
MISSING_EXPORT = "missing_export"
# A local directory (plain pathlib) or any fsspec location (s3://, gs://, memory://, ...) through UPath.
AuditRoot = Path | UPath

# end_offset=1 makes today's partition exist, so an operator can export (and check) the day so far
# from the UI. The schedule below targets the previous day itself: build_schedule_from_partitioned_job
# targets the *last* partition, which with end_offset=1 is today (verified on 1.13.27), and with
# end_offset=0 today's partition is refused (DagsterUnknownPartitionError).
AUDIT_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)


class AuditWarehouse(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the audit_events partitions are written; shared by the asset and its check."""

    root: str = Field(default="", description="Directory or fsspec URL (s3://bucket/audit_events, memory://…); "
                                              "empty means INTENT_HOME/warehouse/audit_events.")

    def location(self, home: IntentHome) -> AuditRoot:
        """The configured root, resolved: plain Path for local directories, UPath for URLs."""
        if not self.root:
            return home.warehouse / "audit_events"
        return UPath(self.root) if "://" in self.root else Path(self.root).expanduser().resolve()


def _partition_file(root: AuditRoot, day: date) -> AuditRoot:
    if isinstance(root, Path):
        return partition_path(root, day)
    return root / f"date={day.isoformat()}" / FILE_NAME


def write_partition(store: StateStore, day: date, root: AuditRoot) -> tuple[AuditRoot, int]:
    """Export one day: atomically for local paths (export_day), one PUT for object stores."""
    if isinstance(root, Path):
        return export_day(store, day, root)
    table = day_table(store, day)
    path = _partition_file(root, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pq.write_table(table, fh)
    return path, table.num_rows


def read_partition(path: AuditRoot) -> list[RecordTuple]:
    """(seq, prev, hash, body) of one partition file, in seq order."""
    if isinstance(path, Path):
        return list(read_records([path]))
    with path.open("rb") as fh:
        table = pq.read_table(fh, columns=["seq", "prev", "hash", "body"])
    table = table.sort_by("seq") if table.num_rows else table
    return list(zip(*(table.column(name).to_pylist() for name in ("seq", "prev", "hash", "body")), strict=True))


def _start_prev(store: StateStore, root: AuditRoot, day: date, first_seq: int) -> bytes | None:
    """Hash of the record before ``first_seq``: from the store, else from the previous day's file."""
    if first_seq == 0:
        return GENESIS_PREV
    before = store.audit_record(first_seq - 1)
    if before is not None:
        return before.hash
    previous = _partition_file(root, day - timedelta(days=1))
    if previous.exists():
        records = read_partition(previous)
        if records and records[-1][0] == first_seq - 1:
            return records[-1][2]
    return None


def _prefix_result(store: StateStore, home: IntentHome, last_seq: int) -> VerifyResult:
    """Verify the chain from genesis through ``last_seq`` and against every checkpoint.

    verify_store verifies either the whole chain or a segment without checkpoints; here the prefix is
    extended to the latest checkpoint's size so every checkpoint can be checked, and records appended
    after the partition (e.g. today, while yesterday is checked) cannot fail yesterday's check.
    """
    checkpoints, checkpoint_breaks = store_checkpoints(store, home)
    upto = max([last_seq, *(c.size - 1 for c in checkpoints)])
    result = verify_records(store.audit_raw(0, upto), checkpoints=checkpoints) if upto >= 0 else VerifyResult()
    result.breaks += checkpoint_breaks
    return result


def verify_partition(store: StateStore, home: IntentHome, root: AuditRoot, day: date) -> VerifyResult:
    """Verify one exported day: its own links and hashes, its link to the day before, the store, checkpoints."""
    records = read_partition(_partition_file(root, day))
    breaks: list[ChainBreak] = []
    if records:
        first_seq, last_seq = records[0][0], records[-1][0]
        start_prev = _start_prev(store, root, day, first_seq)
        if start_prev is None:
            breaks.append(ChainBreak(first_seq - 1, BreakKind.SEQ_GAP,
                                     f"record {first_seq - 1} is in neither the store nor the previous day's file"))
        link = records[0][1] if start_prev is None else start_prev  # unlinkable: already a break
        result = verify_records(records, start_seq=first_seq, start_prev=link)
        # The file must be what the store holds (a file rewritten consistently would verify alone).
        stored = {seq: digest for seq, _, digest, _ in store.audit_raw(first_seq, last_seq)}
        for seq, _, digest, _ in records:
            if stored.get(seq) != digest:
                breaks.append(ChainBreak(seq, BreakKind.REWRITTEN,
                                         f"the exported record {seq} differs from the store's"))
                break
        # A finished day's file must hold all of the day's records (today's may trail the store).
        in_store = store.audit_seq_range(*day_bounds(day))
        if in_store is not None and datetime.now(UTC).date() > day and in_store != (first_seq, last_seq):
            detail = (f"the file holds seq {first_seq}..{last_seq}, the store {in_store[0]}..{in_store[1]} "
                      f"for {day}: re-materialize the partition")
            breaks.append(ChainBreak(in_store[0], BreakKind.SEQ_GAP, detail) if in_store[0] < first_seq
                          else ChainBreak(last_seq + 1, BreakKind.TRUNCATED, detail))
    else:
        result = VerifyResult()
    before_end = store.audit_seq_range("", day_bounds(day)[1])
    prefix = _prefix_result(store, home, before_end[1] if before_end else -1)
    result.breaks += breaks + prefix.breaks
    result.checkpoints_checked = prefix.checkpoints_checked
    return result


def _break_metadata(result: VerifyResult) -> dict[str, Any]:
    first = result.first_break
    return {
        "records": result.records,
        "first_bad_seq": first.seq if first else None,
        "kind": first.kind.value if first else None,
        "detail": first.detail if first else None,
        "checkpoints_checked": dg.MetadataValue.json(result.checkpoints_checked),
    }


# The audit log as queryable, offline-verifiable files: one Parquet file per UTC day with the stored
# bytes (seq, prev, hash, body) plus typed columns. Resource parameters are named by their keys in
# definitions.py: `intent` (jobs.RUNTIME_KEY) and `audit_warehouse` (WAREHOUSE_KEY).
@dg.asset(
    partitions_def=AUDIT_PARTITIONS,
    group_name=AUDIT_GROUP,
    kinds={"parquet"},
    description="The audit chain's records of one UTC day as Parquet: seq, prev, hash and body as stored "
                "(anyone can re-verify them offline) plus ts, request_id, run_id, intent, kind, step, status, "
                "duration_ms for queries.",
)
def audit_events(context: dg.AssetExecutionContext, intent: IntentRuntime,
                 audit_warehouse: AuditWarehouse) -> dg.MaterializeResult[None]:
    """Export the partition's day from the state store."""
    engine = intent.engine()
    day = date.fromisoformat(context.partition_key)
    path, rows = write_partition(engine.store, day, audit_warehouse.location(engine.home))
    records = read_partition(path)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)),
        "dagster/row_count": rows,
        "first_seq": records[0][0] if records else None,
        "last_seq": records[-1][0] if records else None,
        "head": dg.MetadataValue.text(records[-1][2].hex() if records else ""),
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn(name, str(field.type)) for name, field in zip(SCHEMA.names, SCHEMA, strict=True)]),
    })


# Blocking, so a broken day stops the run before audit_checkpoint could certify it. A separate
# partitioned check (preview in 1.13) rather than check_specs on the asset: verified on 1.13.27 that it
# runs once per partition (context.partition_key), records the evaluation against that partition, fails
# its step on an ERROR result (failing the run) and skips the downstream checkpoint. What does not work
# in 1.13.27 is a check-only run of one partition (the partition key is refused when no asset is
# selected), so the check always runs with the export; verify_partition is the same check without Dagster.
@dg.asset_check(
    asset=audit_events,
    blocking=True,
    partitions_def=AUDIT_PARTITIONS,
    description="The day's file verifies record by record, links to the previous day's last record, matches "
                "the store, and the chain up to it is consistent with every checkpoint. A failure appends a "
                "line to INTENT_HOME/logs/alerts/audit-integrity.log.",
)
def audit_chain_intact(context: dg.AssetCheckExecutionContext, intent: IntentRuntime,
                       audit_warehouse: AuditWarehouse) -> dg.AssetCheckResult:
    """Verify the partition's exported file and the chain before it."""
    engine = intent.engine()
    day = date.fromisoformat(context.partition_key)
    root = audit_warehouse.location(engine.home)
    path = _partition_file(root, day)
    if not path.exists():
        # Not a chain break (no alert): the partition was never exported, or the file was removed.
        return dg.AssetCheckResult(passed=False, metadata={
            "records": 0, "kind": MISSING_EXPORT, "detail": f"{path} does not exist: materialize the partition"})
    result = verify_partition(engine.store, engine.home, root, day)
    if not result.ok:
        alert = write_alert(engine.home, result, extra={"check": "audit_chain_intact", "partition": str(day)})
        context.log.error(f"audit chain broken in partition {day}: {result.first_break}; alert in {alert}")
    return dg.AssetCheckResult(passed=result.ok, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={**_break_metadata(result), "head": result.head.hex()})


def _checkpoint_metadata(checkpoint: Checkpoint, verified: VerifyResult) -> dict[str, Any]:
    return {"number": checkpoint.number, "size": checkpoint.size, "head": checkpoint.head.hex(),
            "merkle_root": checkpoint.root.hex(), "records_verified": verified.records,
            "checkpoints_checked": dg.MetadataValue.json(verified.checkpoints_checked)}


# A hash chain alone misses tail truncation and rewrite-and-recompute; the daily checkpoint (size,
# head, Merkle root) in the store, a file and the optional anchor makes both detectable later.
@dg.asset(
    partitions_def=AUDIT_PARTITIONS,
    deps=[audit_events],
    group_name=AUDIT_GROUP,
    description="Verifies the whole chain against the previous checkpoints, then records a new checkpoint "
                "(size, head hash, RFC 6962 Merkle root) in the store, INTENT_HOME/audit/checkpoints and "
                "$INTENT_AUDIT_ANCHOR_DIR. A broken chain fails the run and appends the alert line.",
)
def audit_checkpoint(context: dg.AssetExecutionContext, intent: IntentRuntime) -> dg.MaterializeResult[None]:
    """Verify everything since (and including) the last checkpoint, then take the next one."""
    engine = intent.engine()
    verified = verify_store(engine.store, engine.home)
    if not verified.ok:
        write_alert(engine.home, verified, extra={"step": "audit_checkpoint", "partition": context.partition_key})
        first = verified.first_break
        assert first is not None
        raise dg.Failure(description=f"audit chain broken at seq {first.seq}: {first.kind.value} ({first.detail})",
                         metadata=_break_metadata(verified), allow_retries=False)
    try:
        checkpoint = take_checkpoint(engine.store, engine.home)
    except AuditBroken as exc:  # broken between the two verifications; take_checkpoint wrote the alert
        raise dg.Failure(description=exc.one_line(), allow_retries=False) from exc
    return dg.MaterializeResult(metadata=_checkpoint_metadata(checkpoint, verified))


# The daily integrity run: export the day, check it (blocking), verify all and checkpoint. In process:
# three short steps in sequence, where a process per step would cost seconds for nothing.
audit_integrity_job = dg.define_asset_job(
    "audit_integrity_job",
    selection=dg.AssetSelection.assets(audit_events, audit_checkpoint),
    executor_def=dg.in_process_executor,
    description="Export a day of the audit chain to Parquet, check it, verify the chain since the last "
                "checkpoint and write a new checkpoint; fails (and alerts) when the chain is broken.",
)


# 02:00 UTC, for the day that just ended. A plain schedule instead of build_schedule_from_partitioned_job:
# with end_offset=1 (today materializable) that helper would target today's partition, not yesterday's.
@dg.schedule(
    job=audit_integrity_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 02:00 UTC: export and check the previous day's audit events, verify the whole "
                "chain and write a new checkpoint.",
)
def audit_integrity_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """One run for the UTC day before the tick."""
    when = context.scheduled_execution_time or datetime.now(UTC)
    day = (when.astimezone(UTC) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)


def audit_definitions(*, warehouse: AuditWarehouse | None = None) -> dg.Definitions:
    """The audit assets, check, job and schedule, with the warehouse resource (the runtime comes from defs)."""
    return dg.Definitions(
        assets=[audit_events, audit_checkpoint],
        asset_checks=[audit_chain_intact],
        jobs=[audit_integrity_job],
        schedules=[audit_integrity_daily],
        resources={WAREHOUSE_KEY: warehouse or AuditWarehouse()},
    )

