"""IntentsComponent in a dg project: the real `dg` CLI loads it from a defs.yaml, as docs/component.md says.

dagster-dg-cli 1.13.27 has no `dg scaffold project` (that moved to `create-dagster`, which wants
uv and the network), so `dg_project` writes by hand the layout `create-dagster project` scaffolds:
pyproject.toml with [tool.dg], src/<pkg>/definitions.py calling `load_from_defs_folder`, and
src/<pkg>/defs/intents/defs.yaml. The package is put on PYTHONPATH instead of being installed.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from intent_pipelines import IntentsComponent
from intent_pipelines.errors import SpecError

DOC = Path(__file__).resolve().parents[3] / "docs" / "component.md"
BUNDLED_JOBS = {"deploy_app", "restart_app", "scale_app"}
PLATFORM_JOBS = {"audit_integrity_job", "metrics_rollup_job"}
SCHEDULES = {"audit_integrity_daily", "metrics_rollup_daily"}
SENSORS = {"intent_failure_alerts_sensor", "intent_cancel_alerts_sensor", "stuck_request_watchdog_sensor"}
ASSETS = {"audit_events", "audit_checkpoint", "intent_requests", "intent_metrics", "failure_signatures"}

PYPROJECT = """\
[project]
name = "team_ops"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["dagster", "intent_pipelines"]

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "team_ops"
"""
DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def doc_yaml(first_line: str) -> str:
    """The ```yaml block of docs/component.md that starts with ``first_line``."""
    blocks = re.findall(r"^```yaml\n(.*?)^```$", DOC.read_text(encoding="utf-8"), flags=re.M | re.S)
    matches = [b for b in blocks if b.startswith(first_line + "\n")]
    assert len(matches) == 1, f"docs/component.md needs one yaml block starting {first_line!r}"
    return matches[0]


DEFS_YAML = doc_yaml("type: intent_pipelines.IntentsComponent")
TEAM_INTENT = doc_yaml("name: rotate-logs")


def component_defs(component: IntentsComponent) -> dg.Definitions:
    """Build the component in-process, as Dagster's own component tests do (a test load context)."""
    return component.build_defs(dg.ComponentTree.for_test().load_context)


def write_project(root: Path) -> Path:
    """Write the sample dg project under ``root``; return the team's intent folder."""
    package = root / "src" / "team_ops"
    component = package / "defs" / "intents"
    intents = component / "intents"
    intents.mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    (package / "defs" / "__init__.py").write_text("")
    (component / "defs.yaml").write_text(DEFS_YAML)
    (intents / "rotate-logs.yaml").write_text(TEAM_INTENT)
    return intents


def dg_env(root: Path) -> dict[str, str]:
    """The environment a user's shell would have: this venv active, the project importable, no telemetry."""
    dagster_home = root / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if k != "INTENTS_PATH"}
    bin_dir = str(Path(sys.executable).parent)
    env.update(PATH=bin_dir + os.pathsep + env.get("PATH", ""), VIRTUAL_ENV=sys.prefix,
               PYTHONPATH=str(root / "src"), DAGSTER_HOME=str(dagster_home),
               INTENT_HOME=str(root / "intent_home"), COLUMNS="200", NO_COLOR="1")
    return env


def run_dg(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `dg` in the project, as a user would."""
    dg_bin = shutil.which("dg", path=str(Path(sys.executable).parent))
    assert dg_bin, "dagster-dg-cli is not installed: pip install -e '.[dev]'"
    return subprocess.run([dg_bin, *args], cwd=root, env=dg_env(root), capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sample project shared by the read-only dg tests (each dg call loads Dagster: seconds)."""
    root = tmp_path_factory.mktemp("team_ops")
    write_project(root)
    return root


def test_dg_check_defs_passes(project: Path) -> None:
    """`dg check defs` loads the component from the documented defs.yaml and exits 0."""
    result = run_dg(project, "check", "defs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout


def test_dg_list_defs_shows_intent_jobs_sensors_schedules_assets(project: Path) -> None:
    """`dg list defs --json` lists the team's job, the bundled jobs, the sensors, schedules and assets."""
    result = run_dg(project, "list", "defs", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    jobs = {job["name"] for job in listed["jobs"]}
    assert jobs >= {"rotate_logs", *BUNDLED_JOBS, *PLATFORM_JOBS}
    assert {sensor["name"] for sensor in listed["sensors"]} >= SENSORS
    assert {schedule["name"] for schedule in listed["schedules"]} >= SCHEDULES
    assert {asset["asset_key"] for asset in listed["assets"]} >= ASSETS
    assert "intent" in {resource["name"] for resource in listed["resources"]}


def test_dg_list_components_shows_intents_component(project: Path) -> None:
    """The registry entry point makes `dg list components` offer intent_pipelines.IntentsComponent."""
    result = run_dg(project, "list", "components", "--json")
    assert result.returncode == 0, result.stderr
    keys = {item["key"] for item in json.loads(result.stdout)["items"]}
    assert "intent_pipelines.IntentsComponent" in keys


def test_broken_intent_fails_dg_check_naming_the_file(tmp_path: Path) -> None:
    """A broken team intent file fails `dg check defs` with its path, not a silent skip."""
    intents = write_project(tmp_path)
    broken = intents / "broken-one.yaml"
    broken.write_text("name: broken-one\nsummary: broken\nversion: 1\nsteps:\n  - id: a\n    uses: no.such\n")
    result = run_dg(tmp_path, "check", "defs")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"{broken}:6: steps[0].uses: unknown action 'no.such'" in output


def test_include_bundled_false_builds_only_the_team_intents(tmp_path: Path) -> None:
    """With include_bundled false the jobs are the team's intents plus the audit and metrics jobs."""
    (tmp_path / "rotate-logs.yaml").write_text(TEAM_INTENT)
    defs = component_defs(IntentsComponent(path=str(tmp_path), include_bundled=False))
    jobs = {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}
    assert jobs == {"rotate_logs", *PLATFORM_JOBS}
    dg.Definitions.validate_loadable(defs)


def test_skip_invalid_skips_a_broken_file(tmp_path: Path) -> None:
    """skip_invalid true keeps the other intents when one file is broken, as `intent dev` does."""
    (tmp_path / "rotate-logs.yaml").write_text(TEAM_INTENT)
    (tmp_path / "broken.yaml").write_text("name: broken\n")
    component = IntentsComponent(path=str(tmp_path), include_bundled=False, skip_invalid=True)
    jobs = {job.name for job in component_defs(component).resolve_all_job_defs()}
    assert "rotate_logs" in jobs


def test_missing_intent_folder_is_a_spec_error(tmp_path: Path) -> None:
    """A `path` that is not a folder fails with a SpecError naming it and what to set."""
    with pytest.raises(SpecError, match="intent folder not found") as raised:
        component_defs(IntentsComponent(path=str(tmp_path / "nope")))
    assert raised.value.path == str(tmp_path / "nope")
    assert "defs.yaml" in raised.value.hint


def test_import_intent_pipelines_stays_light() -> None:
    """`import intent_pipelines` does not import dagster; IntentsComponent is resolved on first use."""
    code = ("import sys, intent_pipelines; assert 'dagster' not in sys.modules; "
            "assert 'IntentsComponent' in dir(intent_pipelines); print(intent_pipelines.IntentsComponent.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "IntentsComponent"
