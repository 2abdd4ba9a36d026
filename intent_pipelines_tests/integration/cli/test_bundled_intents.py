import json
from pathlib import Path

import dagster as dg
import pytest
import requests

from intent_pipelines.engine import Engine
from intent_pipelines.fleet import load_fleet
from intent_pipelines.home import IntentHome
from intent_pipelines.testing import run_intent

APP = {"app": "hello-api"}


def port_of(home: IntentHome) -> int:
    return load_fleet(home.fleet_file).app("hello-api").port


def releases(home: IntentHome) -> list[str]:
    directory = home.fleet_dir / "hello-api" / "releases"
    return sorted(p.name for p in directory.iterdir() if p.is_dir()) if directory.exists() else []


def step_log(home: IntentHome, request_id: str, step: str) -> str:
    return home.step_log(request_id, step).read_text()


def commit_to_sample(home: IntentHome, filename: str, content: str) -> None:
    import subprocess

    repo = home.fleet_dir / "src" / "hello-api"
    (repo / filename).write_text(content)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "add", "-A"], check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", f"change {filename}"], check=True, capture_output=True)


def test_deploy_then_broken_deploy_rolls_back(sample_home: IntentHome, instance: dg.DagsterInstance,
                                              engine: Engine) -> None:
    """deploy-app serves the new release; a release failing health is rolled back to the old one."""
    result, request = run_intent("deploy-app", APP, instance)
    assert result.success and request["status"] == "SUCCEEDED"
    first = releases(sample_home)
    health = requests.get(f"http://127.0.0.1:{port_of(sample_home)}/health", timeout=5)
    assert health.status_code == 200
    version = requests.get(f"http://127.0.0.1:{port_of(sample_home)}/version", timeout=5).json()
    assert version["release"] == first[0]
    assert "applied 0002_add_price" in step_log(sample_home, result.run_id, "migrate")

    commit_to_sample(sample_home, "BROKEN", "this release is broken\n")
    result, request = run_intent("deploy-app", APP, instance)
    assert not result.success
    assert request["status"] == "ROLLED_BACK" and request["exit_code"] == 12
    assert len(releases(sample_home)) == 2
    version = requests.get(f"http://127.0.0.1:{port_of(sample_home)}/version", timeout=5).json()
    assert version["release"] == first[0], "the app must be back on the first release"
    kinds = [r.kind for r in engine.store.audit_records(request_id=result.run_id)]
    assert kinds.index("verify.fail") < kinds.index("rollback.complete") < kinds.index("request.complete")


def test_prod_deploy_needs_confirmation_and_explicit_ref(sample_home: IntentHome,
                                                         instance: dg.DagsterInstance) -> None:
    """Policy refuses prod deploys of HEAD and asks for confirmation otherwise; nothing is built."""
    result, request = run_intent("deploy-app", {**APP, "env": "prod"}, instance)
    assert request["status"] == "REFUSED" and request["exit_code"] == 5
    assert "explicit ref" in request["error"]
    result, request = run_intent("deploy-app", {**APP, "env": "prod", "ref": "master"}, instance)
    assert request["exit_code"] in (6, 4)
    assert releases(sample_home) == []


def test_restart_scale_observe_and_logs(sample_home: IntentHome, instance: dg.DagsterInstance) -> None:
    """restart-app, scale-app, observe-app and check-logs act on the running sample app."""
    assert run_intent("deploy-app", APP, instance)[0].success
    port = port_of(sample_home)
    result, request = run_intent("restart-app", APP, instance)
    assert result.success, request["error"]

    result, request = run_intent("scale-app", {**APP, "replicas": 3}, instance)
    assert result.success, request["error"]
    for offset in range(3):
        assert requests.get(f"http://127.0.0.1:{port + offset}/health", timeout=5).status_code == 200

    requests.get(f"http://127.0.0.1:{port}/does-not-exist", timeout=5)
    result, request = run_intent("observe-app", APP, instance)
    assert result.success
    report = step_log(sample_home, result.run_id, "observe")
    assert "replicas: 3/3 alive" in report and "HEALTHY" in report

    result, request = run_intent("check-logs", {**APP, "pattern": "GET /health", "lines": 5}, instance)
    assert result.success
    lines = step_log(sample_home, result.run_id, "logs")
    assert "matching line(s)" in lines and "GET /health" in lines

    result, request = run_intent("scale-app", {**APP, "replicas": 1}, instance)
    assert result.success
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port + 2}/health", timeout=2)


def test_migrate_schema_status_apply_down(sample_home: IntentHome, instance: dg.DagsterInstance) -> None:
    """migrate-schema applies pending migrations, shows status and reverts only when confirmed."""
    assert run_intent("deploy-app", {**APP, "migrate": False}, instance)[0].success
    result, _ = run_intent("migrate-schema", {**APP, "action": "status"}, instance)
    assert "pending  0001_create_items" in step_log(sample_home, result.run_id, "migrate")
    result, _ = run_intent("migrate-schema", {**APP, "action": "apply"}, instance)
    assert result.success
    assert "applied 0002_add_price" in step_log(sample_home, result.run_id, "migrate")

    result, request = run_intent("migrate-schema", {**APP, "action": "down", "target": "1"}, instance)
    assert request["exit_code"] == 6, "a revert must need confirmation"
    result, request = run_intent("migrate-schema",
                                 {**APP, "action": "down", "target": "1", "confirm": True}, instance)
    assert result.success, request["error"]
    assert "reverted 0002_add_price" in step_log(sample_home, result.run_id, "migrate")


def test_create_nextjs_app_scaffolds_and_registers(sample_home: IntentHome,
                                                   instance: dg.DagsterInstance) -> None:
    """create-nextjs-app writes a committed Next.js project and adds it to the fleet."""
    result, request = run_intent("create-nextjs-app", {"name": "shop-web", "port": 3100}, instance)
    assert result.success, request["error"]
    target = sample_home.fleet_dir / "src" / "shop-web"
    assert json.loads((target / "package.json").read_text())["name"] == "shop-web"
    assert (target / ".git").is_dir()
    assert load_fleet(sample_home.fleet_file).app("shop-web").port == 3100


@pytest.mark.parametrize(("intent", "config"), [
    ("deploy-app", APP),
    ("restart-app", APP),
    ("scale-app", {**APP, "replicas": 2}),
    ("check-logs", APP),
    ("observe-app", APP),
    ("migrate-schema", {**APP, "action": "apply"}),
    ("create-nextjs-app", {"name": "dry-web"}),
])
def test_dry_run_changes_nothing(intent: str, config: dict[str, object], sample_home: IntentHome,
                                 instance: dg.DagsterInstance, engine: Engine) -> None:
    """A dry run of every bundled intent logs what it would do and changes nothing."""
    before = sorted(str(p.relative_to(sample_home.root)) for p in sample_home.fleet_dir.rglob("*"))
    result, request = run_intent(intent, {**config, "dry_run": True}, instance)
    assert result.success, request["error"]
    assert request["status"] == "DRY_RUN"
    after = sorted(str(p.relative_to(sample_home.root)) for p in sample_home.fleet_dir.rglob("*"))
    assert after == before
    assert engine.store.locks() == []
    states = {s["status"] for s in engine.store.steps(result.run_id)}
    assert states == {"SKIPPED"}


def test_bad_param_fails_before_any_step(sample_home: IntentHome, instance: dg.DagsterInstance,
                                         engine: Engine, tmp_path: Path) -> None:
    """An unknown app fails in preflight with a clear message and no step state at all."""
    result, request = run_intent("deploy-app", {"app": "no-such-app"}, instance)
    assert not result.success
    assert request["status"] == "REFUSED" and request["exit_code"] == 4
    assert "not in the fleet" in request["error"]
    assert engine.store.steps(result.run_id) == []
