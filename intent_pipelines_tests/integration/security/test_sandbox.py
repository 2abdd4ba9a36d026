"""Sandboxed steps (`sandbox:`, real bubblewrap): what a command may write, read and reach, and the refusals."""

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome
from intent_pipelines.testing import http_answering, invoke_cli


@pytest.fixture
def bwrap() -> None:
    """bubblewrap, installed and able to build a sandbox here (required in CI, else the test is skipped)."""
    path = shutil.which("bwrap")
    probe = subprocess.run([path, "--ro-bind", "/", "/", "true"], capture_output=True, text=True) if path else None
    if probe is None or probe.returncode != 0:
        reason = "bubblewrap is not installed" if probe is None else f"bwrap cannot run here: {probe.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(f"the sandbox tests need a working bwrap in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture
def intents(sample_home: IntentHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty INTENTS_PATH directory for the test's own intents."""
    directory = tmp_path / "intents"
    directory.mkdir()
    monkeypatch.setenv("INTENTS_PATH", str(directory))
    return directory


@pytest.fixture
def loopback_port() -> Iterator[int]:
    """A loopback HTTP server of the test's own network namespace."""
    with http_answering(200) as port:
        yield port


def run(intents: Path, body: str) -> tuple[int, dict[str, Any], str]:
    """Write intent ``sandboxed`` (``body`` after its name and summary), run it: (exit code, outcome, stderr)."""
    (intents / "sandboxed.yaml").write_text(f"name: sandboxed\nsummary: a sandboxed step\n{body}")
    code, out, err = invoke_cli("run", "sandboxed", "--json")
    return code, json.loads(out) if out.strip() else {}, err


def test_a_sandboxed_step_writes_its_work_dir_outputs_and_declared_paths(
        bwrap: None, intents: Path, sample_home: IntentHome, tmp_path: Path) -> None:
    """Without a cwd the command runs in the request's work dir; it writes there, INTENT_OUTPUT and `writable`."""
    declared = tmp_path / "declared"
    declared.mkdir()
    code, outcome, err = run(intents, f"""\
sandbox: {{writable: ["{declared}"]}}
steps:
  - id: build
    run: [sh, -c, 'echo built > artifact && echo kept > "$1/note" && echo "dir=$(pwd)" >> "$INTENT_OUTPUT"',
          sh, "{declared}"]
""")
    assert code == 0, err
    work = sample_home.root / "work" / outcome["request_id"]
    assert Engine(sample_home).store.outputs(outcome["request_id"]) == {"build": {"dir": str(work)}}
    assert (work / "artifact").read_text() == "built\n"
    assert (declared / "note").read_text() == "kept\n"


@pytest.mark.parametrize("attempt", ["write-outside", "read-state-store"])
def test_a_sandboxed_step_cannot_touch_what_it_did_not_declare(
        bwrap: None, intents: Path, sample_home: IntentHome, tmp_path: Path, attempt: str) -> None:
    """Writing a file outside the sandbox, or reading INTENT_HOME's state store, fails the step (exit 10)."""
    sentinel = tmp_path / "outside" / "sentinel"
    sentinel.parent.mkdir()
    sentinel.write_text("original")
    argv = {"write-outside": f"""[sh, -c, 'echo changed > "$1"', sh, "{sentinel}"]""",
            "read-state-store": f"""[cat, "{sample_home.state_db}"]"""}[attempt]
    code, outcome, err = run(intents, f"steps:\n  - id: escape\n    sandbox: {{}}\n    run: {argv}\n")
    assert code == 10 and outcome["status"] == "FAILED", err
    assert sentinel.read_text() == "original"


def test_a_declared_readable_path_is_visible_read_only(bwrap: None, intents: Path, tmp_path: Path) -> None:
    """A `readable` path can be read but not written; without it, the same path is not there."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("input\n")
    step = f"""\
steps:
  - id: read
    run: [sh, -c, 'cat "$1/in.txt" && ! echo more >> "$1/in.txt"', sh, "{data}"]
"""
    code, _, err = run(intents, f'sandbox: {{readable: ["{data}"]}}\n{step}')
    assert code == 0, err
    assert (data / "in.txt").read_text() == "input\n"
    code, _, err = run(intents, f"sandbox: {{}}\n{step}")
    assert code == 10, err


@pytest.mark.parametrize(("intent_level", "step_level", "exit_code"), [
    ("sandbox: {}", "", 10),
    ("sandbox: {network: false}", "    sandbox: {network: true}\n", 0),
    ("sandbox: {network: true}", "    sandbox: {}\n", 10),
])
def test_network_only_when_declared_and_the_step_overrides_the_intent(
        bwrap: None, intents: Path, loopback_port: int, intent_level: str, step_level: str, exit_code: int) -> None:
    """A sandboxed command reaches the host's loopback only with `network: true`; the step's sandbox wins."""
    code, _, err = run(intents, f"""\
{intent_level}
steps:
  - id: connect
{step_level}    run: [bash, -c, 'exec 3<>"/dev/tcp/127.0.0.1/$1"', bash, "{loopback_port}"]
""")
    assert code == exit_code, err


def test_a_timeout_sigterms_the_sandboxed_command_itself(bwrap: None, intents: Path, sample_home: IntentHome) -> None:
    """The command inside bwrap gets the runner's SIGTERM (and its grace), not just bwrap a kill."""
    code, outcome, err = run(intents, """\
sandbox: {}
steps:
  - id: hang
    timeout: 1
    run: [sh, -c, 'trap "echo terminated > term; exit 0" TERM; sleep 30 & wait']
""")
    assert code == 11, err
    assert (sample_home.root / "work" / outcome["request_id"] / "term").read_text() == "terminated\n"


def test_missing_bubblewrap_is_a_one_line_refusal_with_exit_10(
        intents: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where bwrap is not on the step's PATH the step fails before anything runs: one line, what to install."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, outcome, err = run(intents, "steps:\n  - id: contained\n    sandbox: {}\n    run: [true]\n")
    assert code == 10 and outcome["status"] == "FAILED", err
    assert outcome["error"] == ("step contained declares sandbox: but bubblewrap (bwrap) is not installed. "
                                "Install it (apt-get install bubblewrap), or remove sandbox: from the intent.")
    assert "Traceback" not in err


def test_a_sandbox_bwrap_cannot_build_is_a_clear_error(
        intents: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bwrap's own setup error (user namespaces disabled) is named as such, with what to do, not as exit 1."""
    fake = tmp_path / "bin" / "bwrap"  # what bwrap prints where unprivileged user namespaces are off
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace, likely because the kernel "
                    "does not allow non-privileged user namespaces.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    code, outcome, err = run(intents, "steps:\n  - id: contained\n    sandbox: {}\n    run: [true]\n")
    assert code == 10 and outcome["status"] == "FAILED", err
    error = outcome["error"]
    assert error.startswith("step contained: bubblewrap could not set up the sandbox: No permissions to create "
                            "new namespace"), error
    assert "kernel.unprivileged_userns_clone=1" in error and "\n" not in error
    assert "Traceback" not in err


@pytest.mark.parametrize(("step", "message"), [
    ('    run: [true]\n    sandbox: {writable: ["relative/dir"]}\n', "sandbox path 'relative/dir' must be absolute"),
    ('    run: [true]\n    sandbox: {readable: ["~/data"]}\n', "sandbox path '~/data' must be absolute"),
    ("    uses: gate.manual\n    sandbox: {}\n", "`sandbox` applies only to `run` commands"),
])
def test_validate_refuses_a_sandbox_it_could_not_honour(sample_home: IntentHome, tmp_path: Path, step: str,
                                                       message: str) -> None:
    """Relative sandbox paths and a sandbox on an action fail `intent validate` (exit 3) with the reason."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nsummary: x\nsteps:\n  - id: a\n{step}")
    code, out, err = invoke_cli("validate", str(bad))
    assert code == 3 and message in out, out + err
