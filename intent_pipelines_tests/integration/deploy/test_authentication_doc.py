"""docs/authentication.md: every shell example is checked, the in-process ones here, exactly as shown.

A fenced shell block carries a marker on the line before its fence: ``<!-- doc-test -->`` runs
here, each ``$ intent ...`` line in process, with the password ``doc-test-password`` typed at
every prompt and a temporary file standing for ``/etc/nginx/intent.htpasswd`` (in the commands
and in the output alike); the output shown must be the real output, line for line. ``<!-- doc-test: e2e -->``
blocks need nginx and a webserver: e2e/test_proxy_auth_dagster_dev.py runs them.
"""

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from intent_pipelines.cli.main import main
from intent_pipelines.proxy import password_matches
from intent_pipelines.testing import forget_loaded_jobs

DOC = Path(__file__).resolve().parents[3] / "docs" / "authentication.md"
TYPED_PASSWORD = "doc-test-password"
DOC_USERS_FILE = "/etc/nginx/intent.htpasswd"
_BLOCK = re.compile(r"(?:<!--\s*(?P<marker>[^>]*?)\s*-->\n)?```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.M | re.S)
_EXIT = re.compile(r"\s+#\s*exit (\d+)$")


def blocks(kind: str) -> list[str]:
    """The bodies of the doc's shell blocks whose marker is ``kind``."""
    return [m.group("body") for m in _BLOCK.finditer(DOC.read_text(encoding="utf-8"))
            if m.group("lang") in ("console", "bash", "sh", "shell") and m.group("marker") == kind]


def test_every_shell_example_is_checked() -> None:
    """Each shell block is marked doc-test (run here) or doc-test: e2e (run against nginx and a webserver)."""
    text = DOC.read_text(encoding="utf-8")
    shell = [m for m in _BLOCK.finditer(text) if m.group("lang") in ("console", "bash", "sh", "shell")]
    assert shell and all(m.group("marker") in ("doc-test", "doc-test: e2e") for m in shell), \
        [m.group("body")[:60] for m in shell if m.group("marker") not in ("doc-test", "doc-test: e2e")]
    assert len(blocks("doc-test")) == 2 and len(blocks("doc-test: e2e")) == 2


@pytest.mark.parametrize("body", blocks("doc-test"), ids=lambda body: body.split("\n", 1)[0][:40])
def test_in_process_example_prints_what_the_doc_shows(body: str, tmp_path: Path) -> None:
    """Each command exits as shown and prints exactly the lines shown under it."""
    body = body.replace(DOC_USERS_FILE, str(tmp_path / "intent.htpasswd"))
    commands: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            commands[-1][1].append(line.rstrip())
    for command, shown in commands:
        expected_exit = int(m.group(1)) if (m := _EXIT.search(command)) else 0
        argv = shlex.split(_EXIT.sub("", command))
        assert argv[0] == "intent", command
        forget_loaded_jobs()
        result = CliRunner().invoke(main, argv[1:], input=f"{TYPED_PASSWORD}\n" * 2)
        assert result.exit_code == expected_exit, result.output
        assert [line.rstrip() for line in result.output.splitlines()] == shown


def test_add_user_example_leaves_a_working_users_file(tmp_path: Path) -> None:
    """After the doc's add-user example the file holds ops with the typed password, nothing in the clear."""
    [body] = [b for b in blocks("doc-test") if b.startswith("$ intent proxy add-user")]
    command = body.splitlines()[0][2:].replace(DOC_USERS_FILE, str(tmp_path / "intent.htpasswd"))
    result = CliRunner().invoke(main, shlex.split(command)[1:], input=f"{TYPED_PASSWORD}\n" * 2)
    assert result.exit_code == 0, result.output
    [line] = (tmp_path / "intent.htpasswd").read_text().splitlines()
    user, hashed = line.split(":", 1)
    assert user == "ops" and password_matches(TYPED_PASSWORD, hashed) and TYPED_PASSWORD not in line
