import json
from pathlib import Path

import dagster as dg
import pytest

from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome
from intent_pipelines.testing import invoke_cli


def runs_in_instance(home: IntentHome) -> int:
    with dg.DagsterInstance.get() as instance:
        return len(instance.get_runs())


def test_list_show_graph_validate(sample_home: IntentHome) -> None:
    """The read-only commands list the seven intents, describe one, draw its graph and validate."""
    code, out, _ = invoke_cli("list", "--json")
    assert code == 0
    assert {i["name"] for i in json.loads(out)} == {
        "deploy-app", "restart-app", "scale-app", "check-logs", "observe-app", "migrate-schema",
        "create-nextjs-app"}
    code, out, _ = invoke_cli("show", "deploy")
    assert code == 0 and "deploy-app" in out and '"HEAD"' in out
    code, out, _ = invoke_cli("graph", "deploy-app")
    assert code == 0 and out.startswith("flowchart TD") and "build --> switch" in out
    code, out, _ = invoke_cli("validate")
    assert code == 0 and "7 intent files valid" in out


def test_validate_reports_bad_file_in_one_line(sample_home: IntentHome, tmp_path: Path) -> None:
    """A bad intent file fails validation with exit 3 and names file and line."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsummary: x\nsteps:\n  - id: a\n    run: [true]\n    need: [b]\n")
    code, out, err = invoke_cli("validate", str(bad))
    assert code == 3
    assert f"{bad}:6: steps[0].need: unknown key 'need'" in out
    assert "Traceback" not in out + err


def test_plan_json_has_a_stable_hash(sample_home: IntentHome) -> None:
    """`intent plan --json` is machine-readable and gives the same hash twice."""
    hashes = []
    for _ in range(2):
        code, out, _ = invoke_cli("plan", "deploy-app", "-p", "app=hello-api", "--json")
        assert code == 0
        hashes.append(json.loads(out)["plan_hash"])
    assert hashes[0] == hashes[1] and len(hashes[0]) == 64


@pytest.mark.parametrize(("args", "exit_code", "message"), [
    (["run", "deploy-app", "-p", "app=nope"], 4, "app 'nope' is not in the fleet"),
    (["run", "deploy-app"], 4, "deploy-app needs param 'app'"),
    (["run", "scale-app", "-p", "app=hello-api", "-p", "replicas=many"], 4, "is not a valid integer"),
    (["run", "scale-app", "-p", "app=hello-api", "-p", "replicas=99"], 4, "above the maximum"),
    (["run", "deploy-app", "-p", "app=hello-api", "-p", "ref=x;rm -rf /"], 4, "does not match"),
    (["run", "deploy-app", "-p", "app=hello-api", "-p", "env=prod"], 5, "explicit ref"),
    (["run", "deploy-app", "-p", "app=hello-api", "-p", "env=prod", "-p", "ref=v1"], 6, "needs confirmation"),
    (["run", "deploy-ap", "-p", "app=hello-api"], 3, "Did you mean 'deploy-app'?"),
    (["run", "deploy-app", "-p", "app"], 2, "is not key=value"),
])
def test_bad_input_is_one_line_with_its_exit_code_and_no_run(sample_home: IntentHome, args: list[str],
                                                             exit_code: int, message: str) -> None:
    """Bad input exits with the documented code, one line on stderr, and creates no Dagster run."""
    code, out, err = invoke_cli(*args)
    assert code == exit_code, err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert runs_in_instance(sample_home) == 0


def test_run_with_typed_params_and_json_outcome(sample_home: IntentHome) -> None:
    """`intent run` passes integer params to the typed launchpad and prints the outcome as JSON."""
    code, out, err = invoke_cli("run", "deploy-app", "-p", "app=hello-api", "-p", "migrate=false", "--json")
    assert code == 0, err
    code, out, err = invoke_cli("run", "scale-app", "-p", "app=hello-api", "-p", "replicas=2", "--json")
    assert code == 0, err
    outcome = json.loads(out)
    assert outcome["status"] == "SUCCEEDED" and outcome["steps"][0]["step"] == "scale"
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(outcome["run_id"])
        assert run is not None and run.tags["intent/lock"] == "app:hello-api"


def test_step_time_template_error_fails_request_and_frees_lock(sample_home: IntentHome, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A template that only fails while the step runs ends the request FAILED with the lock released."""
    intents = tmp_path / "intents"
    intents.mkdir()
    (intents / "missing-output.yaml").write_text("""
name: missing-output
summary: the second step reads an output the first never writes
policy: {lock: demo}
steps:
  - id: first
    run: [true]
  - id: second
    needs: [first]
    run: [echo, "{{ steps.first.outputs.version }}"]
""")
    monkeypatch.setenv("INTENTS_PATH", str(intents))
    code, out, err = invoke_cli("run", "missing-output", "--json")
    assert code == 4, err
    outcome = json.loads(out)
    assert outcome["status"] == "FAILED" and "version" in outcome["error"]
    engine = Engine(sample_home)
    assert engine.store.lock_holder("demo") is None
    assert engine.store.request(outcome["request_id"])["status"] == "FAILED"
