"""End to end: Debian's nginx with the shipped site in front of a real `intent up`; the UI and the CLI need a login.

nginx runs in the foreground with a private prefix on a free loopback port (deploy/local_nginx.py)
and is stopped, its files removed, by the fixture. The examples of docs/authentication.md marked
``doc-test: e2e`` run here too, with the nginx address for ``ui.example.net:8080`` and a
password file of the test for ``/run/secrets/intent-dagster``.
"""

import base64
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from intent_pipelines.dagster_dev import DagsterDev
from intent_pipelines.deploy.local_nginx import LocalNginx, NginxError, nginx_binary
from intent_pipelines.home import IntentHome
from intent_pipelines.testing import prepare_sample_home, stop_fleet
from intent_pipelines_tests.support.secret_scan import encodings, file_hits

INTENT_BIN = str(Path(sys.executable).parent / "intent")
DOC = Path(__file__).resolve().parents[2] / "docs" / "authentication.md"
USER = "ops"
# A colon (basic auth splits at the first), a space, quotes and shell characters in one.
PASSWORD = "pr0xy:Pass 'w0rd' $HOME%40"
PASSWORD_FORMS = sorted(encodings(PASSWORD) | {base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}, key=len)
CREDENTIAL_VARIABLES = ("INTENT_DAGSTER_USER", "INTENT_DAGSTER_PASSWORD", "INTENT_DAGSTER_PASSWORD_FILE")
DEPLOY = ("run", "deploy-app", "-p", "app=hello-api", "-p", "ref=HEAD", "--submit", "--dagster-url")


@dataclass(frozen=True)
class Proxied:
    """The webserver, nginx in front of it, the INTENT_HOME, the CLI's environment without a login."""

    dev: DagsterDev
    nginx: LocalNginx
    home: IntentHome
    env: dict[str, str]
    password_file: Path

    def intent(self, *args: str, **credentials: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([INTENT_BIN, *args], env={**self.env, **credentials}, capture_output=True,
                              text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    """`intent up` on loopback and nginx asking for ops's login in front of it; both stopped afterwards."""
    try:
        nginx_binary()
    except NginxError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"nginx is required in CI: {exc}")
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("proxy-e2e")
    home = prepare_sample_home(root / "home")
    password_file = root / "secrets" / "intent-dagster"
    password_file.parent.mkdir()
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items()
           if k not in ("INTENT_FLEET", "INTENT_STORE_URL", "INTENTS_PATH", "INTENT_DAGSTER_URL", *CREDENTIAL_VARIABLES)}
    env.update({"INTENT_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home)})
    nginx: LocalNginx | None = None
    try:
        with DagsterDev(home) as dev:
            nginx = LocalNginx(f"127.0.0.1:{dev.port}", {USER: PASSWORD})
            with nginx:
                yield Proxied(dev, nginx, home, env, password_file)
    finally:
        stop_fleet(home)
    assert nginx is not None and not nginx.running and not nginx.work.exists()


def leaks(root: Path) -> dict[str, list[str]]:
    """Every file under ``root`` (bytes as text, Parquet decoded) that holds a form of the password."""
    return file_hits(root, PASSWORD_FORMS)


def assert_no_password_anywhere(proxied: Proxied, *outputs: str) -> None:
    for output in outputs:
        assert [form for form in PASSWORD_FORMS if form in output] == []
    assert leaks(proxied.home.root) == {}
    if not proxied.home.dagster_home.is_relative_to(proxied.home.root):
        assert leaks(proxied.home.dagster_home) == {}


def test_without_a_login_the_ui_and_graphql_get_401(proxied: Proxied) -> None:
    """GET / and POST /graphql without credentials, or with a wrong password, are 401 from nginx, not Dagster."""
    url = proxied.nginx.url
    for response in (requests.get(url, timeout=10),
                     requests.post(f"{url}/graphql", json={"query": "{ version }"}, timeout=10),
                     requests.get(url, auth=(USER, PASSWORD + "x"), timeout=10)):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Dagster"'
        assert "nginx" in response.text


def test_with_the_login_the_ui_and_graphql_answer(proxied: Proxied) -> None:
    """The right login gets Dagster's UI page and a GraphQL answer through the proxy."""
    url, auth = proxied.nginx.url, (USER, PASSWORD)
    page = requests.get(url, auth=auth, timeout=10)
    assert page.status_code == 200 and "Dagster" in page.text
    info = requests.get(f"{url}/server_info", auth=auth, timeout=10)
    assert info.status_code == 200 and info.json()["dagster_version"]
    answer = requests.post(f"{url}/graphql", json={"query": "{ version }"}, auth=auth, timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["version"]


def test_graphql_subscriptions_work_over_the_websocket(proxied: Proxied) -> None:
    """The UI's websocket upgrade passes the proxy with the login (ack, then subscription data) and not without."""
    ws_url = proxied.nginx.url.replace("http://", "ws://") + "/graphql"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, subprotocols=["graphql-ws"], open_timeout=10).close()  # type: ignore[list-item]
    assert refused.value.response.status_code == 401
    header = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with connect(ws_url, subprotocols=["graphql-ws"], additional_headers={"Authorization": header},  # type: ignore[list-item]
                 open_timeout=10) as socket:
        assert socket.subprotocol == "graphql-ws"
        socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(socket.recv(timeout=10))["type"] == "connection_ack"
        query = ('subscription { pipelineRunLogs(runId: "no-such-run") { __typename '
                 "... on PipelineRunLogsSubscriptionFailure { missingRunId } } }")
        socket.send(json.dumps({"id": "1", "type": "start", "payload": {"query": query, "variables": {}}}))
        data = json.loads(socket.recv(timeout=10))
    assert data["type"] == "data" and data["id"] == "1"
    assert data["payload"]["data"]["pipelineRunLogs"] == {"__typename": "PipelineRunLogsSubscriptionFailure",
                                                          "missingRunId": "no-such-run"}


def test_submit_with_the_login_in_the_environment_reaches_success(proxied: Proxied) -> None:
    """`intent run --submit` through nginx with the env credentials runs deploy-app to SUCCESS; the password is nowhere."""
    done = proxied.intent(*DEPLOY, proxied.nginx.url, INTENT_DAGSTER_USER=USER, INTENT_DAGSTER_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = re.search(r"submitted run (\S+) to " + re.escape(proxied.nginx.url), done.stdout).group(1)  # type: ignore[union-attr]
    assert f"request {run_id}: SUCCEEDED" in done.stdout
    assert proxied.dev.client.run_status(run_id) == "SUCCESS"
    assert_no_password_anywhere(proxied, done.stdout, done.stderr)


@pytest.mark.parametrize("credentials", [{}, {"INTENT_DAGSTER_USER": USER, "INTENT_DAGSTER_PASSWORD": "wrong"}],
                         ids=["none", "wrong-password"])
def test_submit_without_the_right_login_exits_2_in_one_line(proxied: Proxied, credentials: dict[str, str]) -> None:
    """No login or a wrong one: exit 2, one stderr line saying which variables to set or check, nothing submitted."""
    done = proxied.intent(*DEPLOY, proxied.nginx.url, **credentials)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "(HTTP 401)" in done.stderr and "INTENT_DAGSTER_USER" in done.stderr
    assert ("refused the login of user 'ops'" in done.stderr) == bool(credentials)
    assert "submitted run" not in done.stdout


def test_a_login_in_the_url_is_refused_without_showing_it(proxied: Proxied) -> None:
    """--dagster-url http://ops:PASSWORD@... exits 2 in one line telling to use the variables; the password is not echoed."""
    url = proxied.nginx.url.replace("http://", f"http://{USER}:{requests.utils.quote(PASSWORD, safe='')}@")
    done = proxied.intent(*DEPLOY, url)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"--dagster-url {proxied.nginx.url} carries a login" in done.stderr
    assert "INTENT_DAGSTER_PASSWORD" in done.stderr
    assert_no_password_anywhere(proxied, done.stdout, done.stderr)


def doc_blocks() -> list[str]:
    """The docs/authentication.md console blocks marked ``doc-test: e2e``, in order."""
    pattern = re.compile(r"<!--\s*doc-test: e2e\s*-->\n```console\n(.*?)^```$", re.M | re.S)
    return pattern.findall(DOC.read_text(encoding="utf-8"))


def test_the_docs_examples_run_as_shown(proxied: Proxied) -> None:
    """Each command of the doc's e2e examples exits as shown, printing each line shown (``...``: anything)."""
    blocks = doc_blocks()
    assert len(blocks) == 2
    env = dict(proxied.env)
    for block in blocks:
        block = block.replace("ui.example.net:8080", proxied.nginx.url.removeprefix("http://")).replace(
            "/run/secrets/intent-dagster", str(proxied.password_file))
        commands: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line.rstrip())
        for command, shown in commands:
            expected = re.search(r"\s#\s*exit (\d+)$", command)
            argv = shlex.split(command.partition(" #")[0])
            if argv[0] == "export":
                env.update(a.split("=", 1) for a in argv[1:])  # type: ignore[misc]
                continue
            if argv[0] == "unset":
                for name in argv[1:]:
                    env.pop(name, None)
                continue
            assert argv[0] == "intent", command
            done = subprocess.run([INTENT_BIN, *argv[1:]], env=env, capture_output=True, text=True, timeout=180,
                                  check=False)
            assert done.returncode == (int(expected.group(1)) if expected else 0), done.stdout + done.stderr
            real = [line.rstrip() for line in (done.stdout + done.stderr).splitlines()]
            for line in shown:
                pattern = ".*".join(re.escape(part) for part in line.split("..."))
                assert any(re.fullmatch(pattern, got) for got in real), f"{line!r} not in {real}"
            assert_no_password_anywhere(proxied, done.stdout, done.stderr)
