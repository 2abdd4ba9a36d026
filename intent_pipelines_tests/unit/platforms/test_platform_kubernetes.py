"""The kubernetes platform drives kubectl with exact argv, checked against a recording fake kubectl."""

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from intent_pipelines.actions.base import Outputs
from intent_pipelines.errors import FleetError, StepFailed
from intent_pipelines.fleet import App, KubernetesTarget, register_app
from intent_pipelines.home import IntentHome

K = ["kubectl", "--context", "homelab", "-n", "shop"]
GET = [*K, "get", "deployment", "shop-api", "-o", "json"]
ROLLOUT_STATUS = [*K, "rollout", "status", "deployment/shop-api", "--timeout=300s"]

FAKE_KUBECTL = """\
#!{python}
import json, os, sys
with open(os.environ["FAKE_KUBECTL_CALLS"], "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_KUBECTL_FAIL"):
    print(os.environ["FAKE_KUBECTL_FAIL"])
    sys.exit(1)
if "get" in sys.argv:
    print(json.dumps({{
        "spec": {{"replicas": 2, "template": {{"spec": {{"containers": [
            {{"name": "api", "image": "registry.example.com:5000/shop-api:v1"}}]}}}}}},
        "status": {{"readyReplicas": 1}},
    }}, indent=2))
elif "logs" in sys.argv:
    print("2030-01-01T00:00:00Z INFO ok\\n2030-01-01T00:00:01Z ERROR boom\\n2030-01-01T00:00:02Z INFO ok")
"""


@pytest.fixture
def kubectl(tmp_path: Path, home: IntentHome, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a fake kubectl first on PATH and list a kubernetes app; returns the calls file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    fake.write_text(FAKE_KUBECTL.format(python=sys.executable))
    fake.chmod(0o755)
    calls = tmp_path / "kubectl-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KUBECTL_CALLS", str(calls))
    target = KubernetesTarget(
        context="homelab",
        namespace="shop",
        deployment="shop-api",
        container="api",
        image="registry.example.com:5000/shop-api",
    )
    register_app(home.fleet_file, App(name="shop-api", platform="kubernetes", kubernetes=target,
                                      inherit_env=["FAKE_KUBECTL_CALLS", "FAKE_KUBECTL_FAIL"]))
    return calls


def calls(path: Path) -> list[list[str]]:
    return [["kubectl", *json.loads(line)] for line in path.read_text().splitlines()]


def test_switch_sets_the_image_and_waits_for_the_rollout(
    kubectl: Path, run_action: Callable[..., Outputs]
) -> None:
    """app.switch reads the running tag, sets the new image and waits on rollout status."""
    assert run_action("app.switch", app="shop-api", release="v2") == {"previous": "v1"}
    assert calls(kubectl) == [
        GET,
        [*K, "set", "image", "deployment/shop-api", "api=registry.example.com:5000/shop-api:v2"],
        ROLLOUT_STATUS,
    ]


def test_build_only_names_the_image(kubectl: Path, run_action: Callable[..., Outputs]) -> None:
    """app.build on kubernetes names <image>:<ref> and reports the running tag as previous."""
    assert run_action("app.build", app="shop-api", ref="v3") == {"release": "v3", "previous": "v1"}
    assert calls(kubectl) == [GET]


def test_rollback_without_release_is_rollout_undo(kubectl: Path, run_action: Callable[..., Outputs]) -> None:
    """app.rollback with no release undoes the last rollout and waits for it."""
    run_action("app.rollback", app="shop-api")
    assert calls(kubectl) == [GET, [*K, "rollout", "undo", "deployment/shop-api"], ROLLOUT_STATUS, GET]


def test_scale_restart_stop(kubectl: Path, run_action: Callable[..., Outputs]) -> None:
    """Scale, restart and stop map to kubectl scale / rollout restart / scale to zero."""
    assert run_action("app.scale", app="shop-api", replicas=3) == {"replicas": 1}
    run_action("app.restart", app="shop-api")
    run_action("app.stop", app="shop-api")
    assert calls(kubectl) == [
        [*K, "scale", "deployment/shop-api", "--replicas=3"],
        ROLLOUT_STATUS,
        GET,
        [*K, "rollout", "restart", "deployment/shop-api"],
        ROLLOUT_STATUS,
        GET,
        GET,
        [*K, "scale", "deployment/shop-api", "--replicas=0"],
    ]


def test_logs_pass_since_and_tail_and_filter_here(
    kubectl: Path, run_action: Callable[..., Outputs], step_lines: list[str]
) -> None:
    """app.logs passes --since-time and --tail to kubectl, and filters by pattern itself."""
    since = "2030-01-01T00:00:00+00:00"
    assert run_action("app.logs", app="shop-api", since=since, lines=5) == {"matches": 3}
    assert run_action("app.logs", app="shop-api", pattern="ERROR") == {"matches": 1}
    logs = [*K, "logs", "deployment/shop-api", "-c", "api"]
    assert calls(kubectl) == [[*logs, "--since-time=2030-01-01T00:00:00Z", "--tail=5"], logs]
    assert "2030-01-01T00:00:01Z ERROR boom" in step_lines


def test_status_and_health_come_from_ready_replicas(
    kubectl: Path, run_action: Callable[..., Outputs]
) -> None:
    """Health is the deployment's readiness: one of two ready replicas is an unhealthy app."""
    report = run_action("app.observe", app="shop-api")
    assert report["healthy"] is False and report["replicas"] == 1 and report["version"] == "v1"


def test_no_context_means_no_context_flag(
    kubectl: Path, home: IntentHome, run_action: Callable[..., Outputs]
) -> None:
    """Without kubernetes.context the current kubectl context is used (no --context flag)."""
    target = KubernetesTarget(namespace="shop", deployment="shop-api", image="shop-api")
    register_app(home.fleet_file, App(name="shop-api", platform="kubernetes", kubernetes=target,
                                      inherit_env=["FAKE_KUBECTL_CALLS", "FAKE_KUBECTL_FAIL"]))
    run_action("app.stop", app="shop-api")
    plain = ["kubectl", "-n", "shop"]
    assert calls(kubectl) == [
        [*plain, "get", "deployment", "shop-api", "-o", "json"],
        [*plain, "scale", "deployment/shop-api", "--replicas=0"],
    ]


def test_kubectl_failures_are_classified(
    kubectl: Path, run_action: Callable[..., Outputs], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kubectl failure because the API server is unreachable is transient, so the step retries."""
    refused = "Unable to connect to the server: dial tcp 10.0.0.1:6443: connect: connection refused"
    monkeypatch.setenv("FAKE_KUBECTL_FAIL", refused)
    with pytest.raises(StepFailed) as failed:
        run_action("app.scale", app="shop-api", replicas=2)
    assert failed.value.transient


def test_kubernetes_app_without_target_is_a_fleet_error(
    home: IntentHome, run_action: Callable[..., Outputs]
) -> None:
    """A kubernetes app with no `kubernetes:` section fails with a FleetError naming the section."""
    register_app(home.fleet_file, App(name="bare", platform="kubernetes"))
    with pytest.raises(FleetError, match="has no `kubernetes:` section"):
        run_action("app.restart", app="bare")
