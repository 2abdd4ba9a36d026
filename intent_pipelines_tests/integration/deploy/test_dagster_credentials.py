"""The CLI's login at the proxy: credentials from the environment only, masked, refused in URLs; a 401 says what to set."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from intent_pipelines import secrets
from intent_pipelines.cli import submit
from intent_pipelines.dagster_graphql_client import (
    BasicAuth,
    DagsterGraphQL,
    DagsterGraphQLError,
    DagsterUnauthorized,
    login_in_url,
    without_login,
)
from intent_pipelines.deploy.local_nginx import LocalNginx, NginxError, nginx_binary
from intent_pipelines.errors import UsageError
from intent_pipelines.testing import http_answering

PASSWORD = "short:pw"  # shorter than the name-based guess masks, so only explicit registration does


@pytest.fixture
def proxy() -> Iterator[LocalNginx]:
    """A real nginx asking for ops's login in front of a loopback server that answers every GET."""
    try:
        nginx_binary()
    except NginxError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"nginx is required in CI: {exc}")
        pytest.skip(str(exc))
    with http_answering(200) as port, LocalNginx(f"127.0.0.1:{port}", {"ops": PASSWORD}) as server:
        yield server


def test_no_variables_means_no_login() -> None:
    """Without any of the three variables the client sends no credentials."""
    assert BasicAuth.from_env({}) is None


def test_user_and_password_are_read_and_registered_for_masking() -> None:
    """The password (and user:password, what the header encodes) is masked from then on, however short."""
    auth = BasicAuth.from_env({"INTENT_DAGSTER_USER": "ops", "INTENT_DAGSTER_PASSWORD": PASSWORD})
    assert auth == BasicAuth("ops", PASSWORD)
    assert PASSWORD not in repr(auth)
    assert secrets.mask(f"pw={PASSWORD}") == "pw=***"
    assert {PASSWORD, f"ops:{PASSWORD}"} <= secrets.known()


def test_password_file_is_read_without_its_line_ending(tmp_path: Path) -> None:
    """INTENT_DAGSTER_PASSWORD_FILE names a file with the password; its trailing newline is not part of it."""
    file = tmp_path / "password"
    file.write_text(PASSWORD + "\n")
    auth = BasicAuth.from_env({"INTENT_DAGSTER_USER": "ops", "INTENT_DAGSTER_PASSWORD_FILE": str(file)})
    assert auth == BasicAuth("ops", PASSWORD) and PASSWORD in secrets.known()


@pytest.mark.parametrize(("env", "message"), [
    ({"INTENT_DAGSTER_USER": "ops"}, "INTENT_DAGSTER_USER is set but no password"),
    ({"INTENT_DAGSTER_PASSWORD": PASSWORD}, "a Dagster password is set but INTENT_DAGSTER_USER is not"),
    ({"INTENT_DAGSTER_USER": "ops", "INTENT_DAGSTER_PASSWORD": "x", "INTENT_DAGSTER_PASSWORD_FILE": "/f"},
     "both INTENT_DAGSTER_PASSWORD and INTENT_DAGSTER_PASSWORD_FILE are set"),
    ({"INTENT_DAGSTER_USER": "ops", "INTENT_DAGSTER_PASSWORD_FILE": "/no/such/file"},
     "INTENT_DAGSTER_PASSWORD_FILE=/no/such/file cannot be read"),
    ({"INTENT_DAGSTER_USER": "a:b", "INTENT_DAGSTER_PASSWORD": PASSWORD}, "INTENT_DAGSTER_USER holds a colon"),
])
def test_half_or_conflicting_settings_are_one_usage_error(env: dict[str, str], message: str) -> None:
    """Each inconsistent setting is a UsageError (exit 2) naming the variable to fix."""
    with pytest.raises(UsageError, match=message) as caught:
        BasicAuth.from_env(env)
    assert caught.value.exit_code == 2 and PASSWORD not in caught.value.one_line()


def test_logins_in_urls_are_found_and_cut_out_of_messages() -> None:
    """user:password@ and user@ are logins; the shown URL drops them and the password is masked from then on."""
    assert login_in_url("http://ops:pw@host:8080") and login_in_url("https://ops@host")
    assert not login_in_url("http://127.0.0.1:3000") and not login_in_url("http://host/path@x")
    assert without_login("http://ops:Secret99@host:8080/x") == "http://host:8080/x"
    assert secrets.mask("Secret99") == "***"


def test_client_refuses_a_url_with_a_login() -> None:
    """DagsterGraphQL takes credentials only through auth=, never from a URL."""
    with pytest.raises(DagsterGraphQLError, match="carries a login") as caught:
        DagsterGraphQL("http://ops:pw@127.0.0.1:3000")
    assert "pw" not in str(caught.value)


def test_dagster_url_with_a_login_is_refused_naming_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """--dagster-url or INTENT_DAGSTER_URL with a login: one UsageError saying to use the variables, no password."""
    with pytest.raises(UsageError) as from_option:
        submit.dagster_url(f"http://ops:{PASSWORD}@ui.example.net:8080")
    line = from_option.value.one_line()
    assert line.startswith("--dagster-url http://ui.example.net:8080 carries a login")
    assert "INTENT_DAGSTER_USER and INTENT_DAGSTER_PASSWORD" in line and PASSWORD not in line
    monkeypatch.setenv("INTENT_DAGSTER_URL", "http://ops:envSecret1@ui.example.net:8080")
    with pytest.raises(UsageError, match="^INTENT_DAGSTER_URL http://ui.example.net:8080 carries a login"):
        submit.dagster_url(None)


def test_a_401_is_its_own_error(proxy: LocalNginx) -> None:
    """Through the proxy without credentials a query raises DagsterUnauthorized, not a generic HTTP error."""
    with pytest.raises(DagsterUnauthorized, match="answered 401"):
        DagsterGraphQL(proxy.url).query("{ version }")


def test_with_credentials_the_client_gets_past_the_login(proxy: LocalNginx) -> None:
    """The right login reaches the server behind (which answers POST with 501: not a 401)."""
    client = DagsterGraphQL(proxy.url, auth=BasicAuth("ops", PASSWORD))
    with pytest.raises(requests.HTTPError, match="501"):
        client.query("{ version }")


def test_submit_says_which_variables_to_set_or_check(proxy: LocalNginx, monkeypatch: pytest.MonkeyPatch) -> None:
    """No login: set the variables; a wrong one: the user is named and the variables are to be checked."""
    for name in ("INTENT_DAGSTER_USER", "INTENT_DAGSTER_PASSWORD", "INTENT_DAGSTER_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError) as missing:
        submit._client(proxy.url)
    assert missing.value.one_line() == (
        f"the Dagster webserver at {proxy.url} asks for a login (HTTP 401). Set INTENT_DAGSTER_USER and "
        "INTENT_DAGSTER_PASSWORD (or INTENT_DAGSTER_PASSWORD_FILE, a file holding only the password) in the "
        "environment.")
    monkeypatch.setenv("INTENT_DAGSTER_USER", "ops")
    monkeypatch.setenv("INTENT_DAGSTER_PASSWORD", "wrong")
    with pytest.raises(UsageError) as wrong:
        submit._client(proxy.url)
    assert wrong.value.one_line() == (
        f"the Dagster webserver at {proxy.url} refused the login of user 'ops' (HTTP 401). Check "
        "INTENT_DAGSTER_USER and INTENT_DAGSTER_PASSWORD (or the file it is read from).")
