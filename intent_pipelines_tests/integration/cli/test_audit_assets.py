"""The audit assets in process: daily Parquet export, the blocking chain check, the checkpoint job, the schedule."""

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from intent_pipelines.audit.export import SCHEMA, partition_path
from intent_pipelines.audit.integrity import ALERT_FILE, checkpoint_dir
from intent_pipelines.dagster_defs.audit_assets import (
    AuditWarehouse,
    audit_chain_intact,
    audit_definitions,
    audit_events,
    verify_partition,
)
from intent_pipelines.dagster_defs.jobs import RUNTIME_KEY
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore
from intent_pipelines.store import schema as store_schema

DAY1, DAY2, DAY3 = date(2026, 3, 9), date(2026, 3, 10), date(2026, 3, 11)


@dataclass
class Audit:
    """A throwaway INTENT_HOME with a chain of 3 records on each of DAY1 and DAY2, and its resources."""

    home: IntentHome
    store: StateStore
    warehouse: Path

    def resources(self, root: str | None = None) -> dict[str, Any]:
        return {RUNTIME_KEY: IntentRuntime(intent_home=str(self.home.root)),
                "audit_warehouse": AuditWarehouse(root=root or str(self.warehouse))}

    def file(self, day: date) -> Path:
        return partition_path(self.warehouse, day)

    def append(self, day: date, count: int) -> list[int]:
        """Append ``count`` records and move them onto ``day`` (ts is not covered by the hash)."""
        seqs = [self.store.append_audit("step.complete", request_id=f"req-{day}", run_id="run-1",
                                        body={"step": "build", "status": "SUCCEEDED", "duration_ms": 12}).seq
                for _ in range(count)]
        with self.store.engine.begin() as conn:
            for seq in seqs:
                conn.execute(sa.update(store_schema.audit_events).where(store_schema.audit_events.c.seq == seq)
                             .values(ts=f"{day.isoformat()}T12:00:00.{seq:03d}Z"))
        return seqs

    def flip_store_body(self, seq: int) -> None:
        record = self.store.audit_record(seq)
        assert record is not None
        with self.store.engine.begin() as conn:
            conn.execute(sa.update(store_schema.audit_events).where(store_schema.audit_events.c.seq == seq)
                         .values(body=_flip(record.body)))

    def delete(self, seq: int) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(sa.delete(store_schema.audit_events).where(store_schema.audit_events.c.seq == seq))

    def alerts(self) -> list[dict[str, Any]]:
        path = self.home.alerts / ALERT_FILE
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def definitions(self) -> dg.Definitions:
        return dg.Definitions.merge(audit_definitions(warehouse=AuditWarehouse(root=str(self.warehouse))),
                                    dg.Definitions(resources={RUNTIME_KEY: IntentRuntime(intent_home=str(self.home.root))}))


def _flip(body: bytes, index: int = 5) -> bytes:
    return body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1:]


@pytest.fixture
def audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Audit:
    """A home whose store holds seq 0..2 on DAY1 and seq 3..5 on DAY2."""
    home = IntentHome(tmp_path / "home").ensure()
    monkeypatch.setenv("INTENT_HOME", str(home.root))
    monkeypatch.delenv("INTENT_STORE_URL", raising=False)
    monkeypatch.delenv("INTENT_AUDIT_ANCHOR_DIR", raising=False)
    result = Audit(home, StateStore(home.store_url()), tmp_path / "warehouse")
    result.append(DAY1, 3)
    result.append(DAY2, 3)
    return result


def _materialize(audit: Audit, day: date, *, with_check: bool = True,
                 root: str | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize([audit_events, audit_chain_intact] if with_check else [audit_events],
                          partition_key=day.isoformat(), resources=audit.resources(root), raise_on_error=False)


def _evaluation(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def _meta(evaluation: dg.AssetCheckEvaluation) -> dict[str, Any]:
    return {key: getattr(value, "value", value) for key, value in evaluation.metadata.items()}


def test_materialize_writes_the_days_records_to_parquet(audit: Audit) -> None:
    """Materializing a partition writes exactly that UTC day's records, with the export schema, and reports them."""
    result = _materialize(audit, DAY2, with_check=False)
    assert result.success

    table = pq.read_table(audit.file(DAY2))
    assert table.column_names == SCHEMA.names
    assert table.column("seq").to_pylist() == [3, 4, 5]
    assert set(table.column("ts").to_pylist()) == {f"{DAY2}T12:00:00.00{s}Z" for s in (3, 4, 5)}
    assert table.column("step").to_pylist() == ["build"] * 3
    head = audit.store.audit_record(5)
    assert head is not None and table.column("hash").to_pylist()[-1] == head.hash

    (materialization,) = result.asset_materializations_for_node("audit_events")
    meta = {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}
    assert materialization.partition == DAY2.isoformat()
    assert meta["dagster/row_count"] == 3
    assert (meta["first_seq"], meta["last_seq"]) == (3, 5)
    assert meta["head"] == head.hash.hex()
    assert meta["path"] == str(audit.file(DAY2))


def test_check_passes_per_partition_on_an_intact_chain(audit: Audit) -> None:
    """On an untouched chain the check passes for each partition and is recorded against that partition."""
    for day, seqs in ((DAY1, 3), (DAY2, 3), (DAY3, 0)):
        result = _materialize(audit, day)
        assert result.success
        evaluation = _evaluation(result)
        assert evaluation.passed, _meta(evaluation)
        assert evaluation.partition == day.isoformat()
        assert _meta(evaluation)["records"] == seqs
    assert audit.alerts() == []


def test_check_fails_with_kind_and_seq_after_a_body_byte_changes_in_the_store(audit: Audit) -> None:
    """A flipped body byte in the store fails the blocking check as hash_mismatch at that seq and writes the alert."""
    audit.flip_store_body(4)
    result = _materialize(audit, DAY2)
    assert not result.success  # blocking check with ERROR severity fails its step
    evaluation = _evaluation(result)
    assert not evaluation.passed
    assert (_meta(evaluation)["kind"], _meta(evaluation)["first_bad_seq"]) == ("hash_mismatch", 4)
    (alert,) = audit.alerts()
    assert (alert["kind"], alert["first_bad_seq"], alert["partition"]) == ("hash_mismatch", 4, DAY2.isoformat())


def test_partition_verification_fails_after_a_body_byte_changes_in_the_file(audit: Audit) -> None:
    """After the export, a changed byte in the file fails the check's verification at that seq (store untouched)."""
    assert _materialize(audit, DAY2).success
    assert verify_partition(audit.store, audit.home, audit.warehouse, DAY2).ok
    path = audit.file(DAY2)
    table = pq.read_table(path)
    bodies = table.column("body").to_pylist()
    bodies[1] = _flip(bodies[1])
    pq.write_table(table.set_column(table.column_names.index("body"), "body", pa.array(bodies, pa.binary())), path)

    # A check-only run of one partition is refused by Dagster 1.13.27, so call what the check calls.
    result = verify_partition(audit.store, audit.home, audit.warehouse, DAY2)
    assert result.first_break is not None
    assert (result.first_break.kind.value, result.first_break.seq) == ("hash_mismatch", 4)


def test_check_links_the_first_record_to_the_previous_day(audit: Audit) -> None:
    """When the previous day's last record is gone from the store, the day's first link cannot be made: seq_gap."""
    audit.delete(2)
    evaluation = _evaluation(_materialize(audit, DAY2))
    assert (_meta(evaluation)["kind"], _meta(evaluation)["first_bad_seq"]) == ("seq_gap", 2)


def test_check_uses_the_checkpoint_to_catch_a_truncated_tail(audit: Audit) -> None:
    """After a checkpoint covered seq 0..5, deleting seq 5 (the file then verifies alone) fails as truncated."""
    assert audit.definitions().resolve_job_def("audit_integrity_job").execute_in_process(
        partition_key=DAY2.isoformat()).success
    audit.delete(5)
    evaluation = _evaluation(_materialize(audit, DAY2))
    assert not evaluation.passed
    assert (_meta(evaluation)["kind"], _meta(evaluation)["first_bad_seq"]) == ("truncated", 5)


def test_partitions_can_go_to_an_fsspec_location(audit: Audit) -> None:
    """With an fsspec URL as root (memory://) the partition is written there and the check reads it back."""
    result = _materialize(audit, DAY1, root="memory://audit-test/audit_events")
    assert result.success
    assert _evaluation(result).passed
    (materialization,) = result.asset_materializations_for_node("audit_events")
    assert str(materialization.metadata["path"].value).startswith("memory://audit-test/audit_events/date=2026-03-09")
    assert not audit.file(DAY1).exists()


def test_schedule_requests_the_previous_days_partition_at_0200_utc(audit: Audit) -> None:
    """The daily schedule runs at 02:00 UTC, is RUNNING by default and asks for the day that just ended."""
    defs = audit.definitions()
    schedule = defs.get_schedule_def("audit_integrity_daily")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "audit_integrity_job"

    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 10, 2, 0, tzinfo=UTC),
                                        repository_def=defs.get_repository_def())
    run_requests = schedule.evaluate_tick(context).run_requests
    assert run_requests is not None
    assert [r.partition_key for r in run_requests] == ["2026-03-09"]


def test_job_exports_checks_and_writes_a_checkpoint(audit: Audit, instance: dg.DagsterInstance) -> None:
    """The integrity job exports the day, passes the check, and writes a chained checkpoint covering the chain."""
    job = audit.definitions().resolve_job_def("audit_integrity_job")
    result = job.execute_in_process(partition_key=DAY1.isoformat(), instance=instance)
    assert result.success
    assert audit.file(DAY1).exists()
    assert _evaluation(result).passed
    (materialization,) = result.asset_materializations_for_node("audit_checkpoint")
    assert materialization.metadata["size"].value == 6
    assert materialization.metadata["number"].value == 1
    assert [p.name for p in sorted(checkpoint_dir(audit.home).iterdir())] == ["checkpoint-000001.json"]

    audit.append(DAY2, 1)
    assert job.execute_in_process(partition_key=DAY2.isoformat(), instance=instance).success
    assert len(list(checkpoint_dir(audit.home).iterdir())) == 2
    assert audit.alerts() == []


def test_job_fails_and_alerts_when_the_partition_is_broken(audit: Audit, instance: dg.DagsterInstance) -> None:
    """A broken day fails the run at the blocking check, skips the checkpoint, and writes the alert line."""
    audit.flip_store_body(1)
    job = audit.definitions().resolve_job_def("audit_integrity_job")
    result = job.execute_in_process(partition_key=DAY1.isoformat(), instance=instance, raise_on_error=False)
    assert not result.success
    assert result.asset_materializations_for_node("audit_checkpoint") == []
    assert not checkpoint_dir(audit.home).exists() or not list(checkpoint_dir(audit.home).iterdir())
    (alert,) = audit.alerts()
    assert (alert["kind"], alert["first_bad_seq"]) == ("hash_mismatch", 1)


def test_job_fails_at_the_checkpoint_when_the_chain_is_broken_after_the_day(audit: Audit,
                                                                            instance: dg.DagsterInstance) -> None:
    """A break after the checked day passes that day's check but fails the full verification before the checkpoint."""
    audit.flip_store_body(5)
    job = audit.definitions().resolve_job_def("audit_integrity_job")
    result = job.execute_in_process(partition_key=DAY1.isoformat(), instance=instance, raise_on_error=False)
    assert not result.success
    assert _evaluation(result).passed
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "audit_checkpoint"
    (alert,) = audit.alerts()
    assert (alert["kind"], alert["first_bad_seq"], alert["step"]) == ("hash_mismatch", 5, "audit_checkpoint")
    assert not checkpoint_dir(audit.home).exists() or not list(checkpoint_dir(audit.home).iterdir())
