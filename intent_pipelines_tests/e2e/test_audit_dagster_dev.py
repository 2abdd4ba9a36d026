"""End to end: the audit assets and the daily integrity schedule served by a real `dagster dev`."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from intent_pipelines.audit.export import partition_path
from intent_pipelines.audit.integrity import checkpoint_dir
from intent_pipelines.dagster_dev import LOCATION, REPOSITORY, DagsterDev
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore

_AUDIT_QUERY = """
query AuditWorkspace($repo: RepositorySelector!) {
  schedulesOrError(repositorySelector: $repo) {
    __typename
    ... on Schedules { results { name cronSchedule executionTimezone pipelineName scheduleState { status } } }
    ... on Error { message }
  }
  assetNodes {
    assetKey { path }
    groupName
    isPartitioned
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
}
"""


def test_integrity_job_for_today_succeeds_under_dagster_dev(tmp_path: Path) -> None:
    """Under dagster dev the audit asset, check and RUNNING schedule are served, and today's run writes a checkpoint."""
    home = IntentHome(tmp_path / "home").ensure()
    store = StateStore(home.store_url())
    for step in ("build", "switch", "restart"):
        store.append_audit("step.complete", request_id="req-e2e", run_id="run-e2e",
                           body={"step": step, "status": "SUCCEEDED", "duration_ms": 5})
    today = datetime.now(UTC).date()

    with DagsterDev(home, env={"INTENT_AUDIT_ANCHOR_DIR": ""}) as dev:
        data = dev.client.query(_AUDIT_QUERY, {"repo": {"repositoryLocationName": LOCATION,
                                                        "repositoryName": REPOSITORY}})
        schedules = {s["name"]: s for s in data["schedulesOrError"]["results"]}
        daily = schedules["audit_integrity_daily"]
        assert daily["scheduleState"]["status"] == "RUNNING"
        assert (daily["cronSchedule"], daily["executionTimezone"]) == ("0 2 * * *", "UTC")
        assert daily["pipelineName"] == "audit_integrity_job"
        assets = {"/".join(a["assetKey"]["path"]): a for a in data["assetNodes"]}
        events = assets["audit_events"]
        assert (events["groupName"], events["isPartitioned"]) == ("audit", True)
        assert events["assetChecksOrError"]["checks"] == [{"name": "audit_chain_intact", "blocking": True}]

        run_id = dev.client.launch_run("audit_integrity_job", {}, tags={"dagster/partition": today.isoformat()})
        status = dev.client.wait_for_run(run_id, timeout=45)
        assert status == "SUCCESS", (dev.client.failure_messages(run_id), dev.log_tail())
        steps = {s["stepKey"]: s["status"] for s in dev.client.run(run_id)["stepStats"]}
        assert steps == {"audit_events": "SUCCESS", "audit_events_audit_chain_intact": "SUCCESS",
                         "audit_checkpoint": "SUCCESS"}

    table = pq.read_table(partition_path(home.warehouse / "audit_events", today))
    assert table.column("seq").to_pylist() == [0, 1, 2]
    (checkpoint_file,) = checkpoint_dir(home).iterdir()
    checkpoint = json.loads(checkpoint_file.read_bytes())
    assert (checkpoint["number"], checkpoint["size"]) == (1, 3)
