"""Dagster settings that fail safe: a dead run's pool slot is freed, and a burst of failures is alerted in one tick."""

import datetime
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest
from dagster._daemon.monitoring import concurrency

from intent_pipelines.alerts.log import alert_log_path
from intent_pipelines.bundled import write_dagster_yaml
from intent_pipelines.dagster_defs.failure_sensor import intent_failure_alerts_sensor
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.home import IntentHome


def _instance_from_shipped_yaml(root: Path, *, edit: tuple[str, str] | None = None) -> dg.DagsterInstance:
    root.mkdir(parents=True)
    target = root / "dagster.yaml"
    write_dagster_yaml(target)
    if edit:
        target.write_text(target.read_text().replace(*edit))
    return dg.DagsterInstance.from_config(str(root))


def _ended_run_holding_the_db_slot(instance: dg.DagsterInstance) -> str:
    """A run that took the `db` pool slot in a step and then ended without giving it back (a killed worker)."""
    instance.event_log_storage.set_concurrency_slots("db", 1)
    run = instance.create_run_for_job(dg.GraphDefinition(name="g", node_defs=[]).to_job(), run_config={})
    claim = instance.event_log_storage.claim_concurrency_slot("db", run.run_id, "migrate")
    assert claim.is_claimed
    instance.report_run_canceled(run, "cancelled while migrate held the db slot")
    return run.run_id


def _daemon_iteration_at(instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch, later_s: float) -> None:
    """One pass of the daemon's slot monitor, as if ``later_s`` seconds had gone by (the clock seam)."""
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=later_s)
    monkeypatch.setattr(concurrency, "get_current_datetime", lambda: now)
    list(concurrency.execute_concurrency_slots_iteration(SimpleNamespace(instance=instance), dg.get_dagster_logger()))


def test_a_cancelled_run_gives_back_its_db_slot_after_the_shipped_delay(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with _instance_from_shipped_yaml(tmp_path / "dagster") as instance:
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30
        dead = _ended_run_holding_the_db_slot(instance)
        _daemon_iteration_at(instance, monkeypatch, later_s=5)
        assert instance.event_log_storage.get_concurrency_info("db").active_slot_count == 1  # not yet
        _daemon_iteration_at(instance, monkeypatch, later_s=60)
        assert instance.event_log_storage.get_concurrency_info("db").active_slot_count == 0
        assert instance.event_log_storage.claim_concurrency_slot("db", "next-run", "migrate").is_claimed
        assert dead not in instance.event_log_storage.get_concurrency_run_ids()


def test_without_the_setting_the_slot_stays_held_forever(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counter-proof: the setting, not something else, frees the slot."""
    with _instance_from_shipped_yaml(tmp_path / "dagster",
                                     edit=("free_slots_after_run_end_seconds: 30", "")) as instance:
        _ended_run_holding_the_db_slot(instance)
        _daemon_iteration_at(instance, monkeypatch, later_s=3600)
        assert instance.event_log_storage.get_concurrency_info("db").active_slot_count == 1
        assert not instance.event_log_storage.claim_concurrency_slot("db", "next-run", "migrate").is_claimed


def test_thirty_dead_runs_are_all_alerted_in_one_sensor_tick(sample_home: IntentHome,
                                                             instance: dg.DagsterInstance) -> None:
    from intent_pipelines.definitions import defs

    assert os.environ["DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT"] == "100"  # set by the sensor module
    repository = defs.get_repository_def()

    def tick(cursor: str | None) -> str | None:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repository,
                                          resources={"intent": IntentRuntime()})
        return intent_failure_alerts_sensor.evaluate_tick(context).cursor

    cursor = tick(None)  # a run-status sensor's first tick only sets its cursor
    job = defs.resolve_job_def("deploy_app")
    dead = []
    for _ in range(30):
        run = instance.create_run_for_job(job, run_config={"app": "hello-api"}, tags={"intent/name": "deploy-app"})
        instance.report_run_failed(run, "the run worker died")
        dead.append(run.run_id)
    tick(cursor)
    lines: list[dict[str, Any]] = [json.loads(line)
                                   for line in alert_log_path(sample_home).read_text().splitlines()]
    assert sorted(line["run_id"] for line in lines) == sorted(dead)
    assert {line["status"] for line in lines} == {"CRASHED"}
