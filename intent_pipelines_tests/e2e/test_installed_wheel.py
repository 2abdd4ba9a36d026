"""The built wheel in a fresh virtualenv outside the checkout: init, a real deploy, validate, `intent up`.

The wheel is built from a copy of the working tree and installed with its declared dependencies
(pip's cache makes that about a minute), so a runtime file left out of the package, or a
dependency missing from pyproject.toml, fails here as it would for a user.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from intent_pipelines.dagster_graphql_client import DagsterGraphQL
from intent_pipelines.home import IntentHome
from intent_pipelines.testing import free_ports, stop_fleet, wait_for

REPO = Path(__file__).resolve().parents[2]
# What a checkout holds that is not source: never copied into the build.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".intent_home", "build", "dist", "*.egg-info", "__pycache__",
                                    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "results")


@dataclass(frozen=True)
class Installed:
    """The fresh virtualenv with the wheel, and a working directory outside the checkout."""

    wheel: Path
    bin: Path
    cwd: Path

    def env(self, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("INTENT", "DAGSTER")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update({"INTENT_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                    "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}"})
        return env

    def run(self, home: Path, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / argv[0]), *argv[1:]], cwd=self.cwd, env=self.env(home),
                              capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(source)],
                   check=True, timeout=600)
    (wheel,) = (root / "dist").glob("intent_pipelines-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, timeout=900)
    cwd = root / "elsewhere"
    cwd.mkdir()
    return Installed(wheel, venv / "bin", cwd)


@pytest.fixture
def home(installed: Installed, tmp_path: Path) -> Iterator[Path]:
    """A fresh INTENT_HOME set up by the installed `intent init`, the sample app on a free port."""
    root = tmp_path / "home"
    init = installed.run(root, "intent", "init")
    assert init.returncode == 0, init.stderr
    fleet = yaml.safe_load((root / "fleet.yaml").read_text())
    fleet["apps"]["hello-api"]["port"] = free_ports(1)
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    yield root
    stop_fleet(IntentHome(root))


def test_the_wheel_ships_the_runtime_files_and_no_tests(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert {"intent_pipelines/bundled/dagster.yaml", "intent_pipelines/bundled/sample/fleet.yaml",
            "intent_pipelines/bundled/sample/apps/hello-api/app.py",
            "intent_pipelines/intents/deploy-app.yaml"} <= names
    assert not [name for name in names if name.startswith("intent_pipelines_tests/")]


def test_installed_intent_deploys_the_sample_app_and_the_definitions_validate(installed: Installed,
                                                                               home: Path) -> None:
    where = installed.run(home, "python", "-c", "import intent_pipelines; print(intent_pipelines.__file__)")
    assert where.stdout.startswith(str(installed.bin.parent)), where.stdout
    assert (home / "dagster" / "dagster.yaml").exists()
    deployed = installed.run(home, "intent", "run", "deploy-app", "-p", "app=hello-api")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "SUCCEEDED" in deployed.stdout
    validate = installed.run(home, "dagster", "definitions", "validate", "-m", "intent_pipelines.definitions")
    assert validate.returncode == 0, validate.stderr
    assert "Validation successful" in validate.stderr + validate.stdout


def _start_up(installed: Installed, home: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(installed.bin / "intent"), "up", "-p", str(port)], cwd=installed.cwd,
                            env=installed.env(home), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("stop", ["sigterm-to-intent-up", "ctrl-c-to-the-group"])
def test_intent_up_serves_the_ui_and_stops_cleanly(installed: Installed, home: Path, stop: str) -> None:
    port = free_ports(1)
    up = _start_up(installed, home, port)
    try:
        client = DagsterGraphQL(f"http://127.0.0.1:{port}")

        def loaded() -> bool:
            try:
                return client.location_status() == ("LOADED", None)
            except Exception:  # not listening yet
                return False

        wait_for(loaded, timeout=180, poll=0.5, what="a loaded code location served by intent up")
        assert set(client.job_names()) >= {"deploy_app", "restart_app"}
        if stop == "sigterm-to-intent-up":
            up.send_signal(signal.SIGTERM)
        else:
            os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0
        wait_for(lambda: not _group_alive(up.pid), timeout=30, what="every Dagster process of intent up to exit")
    finally:
        if _group_alive(up.pid):
            os.killpg(up.pid, signal.SIGKILL)
        up.wait()


def test_intent_up_refuses_an_unprepared_home_and_a_busy_port(installed: Installed, home: Path,
                                                              tmp_path: Path) -> None:
    bare = installed.run(tmp_path / "bare", "intent", "up")
    assert bare.returncode == 2
    assert bare.stderr.strip().splitlines() == [bare.stderr.strip()]
    assert "intent init" in bare.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        started = time.monotonic()
        taken = installed.run(home, "intent", "up", "-p", str(busy.getsockname()[1]), timeout=60)
    assert taken.returncode == 2, taken.stderr
    assert "cannot listen on 127.0.0.1:" in taken.stderr and "--port" in taken.stderr
    assert time.monotonic() - started < 30
    assert not (home / "workspace.yaml").exists()  # nothing was started
