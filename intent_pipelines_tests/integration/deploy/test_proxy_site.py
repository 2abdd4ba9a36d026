"""The shipped nginx site: what Dagster needs through a proxy, accepted by a real nginx, which lets in only a login."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from intent_pipelines.deploy.local_nginx import LocalNginx, NginxError, nginx_binary
from intent_pipelines.errors import UsageError
from intent_pipelines.proxy import ProxySite, render_site
from intent_pipelines.testing import http_answering, invoke_cli


@pytest.fixture
def nginx() -> str:
    """Debian's nginx binary; a skip where it is missing, a failure in CI (make test installs it)."""
    try:
        return nginx_binary()
    except NginxError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"nginx is required in CI: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def answering() -> Iterator[int]:
    """A loopback HTTP server answering 200 to every GET, standing in for the webserver."""
    with http_answering(200) as port:
        yield port


def test_site_passes_websockets_and_keeps_subscriptions_open() -> None:
    """The default site guards 127.0.0.1:3000 with the users file and has the upgrade, timeout and body lines."""
    text = render_site(ProxySite())
    for line in ("listen 0.0.0.0:8080;", "auth_basic_user_file /etc/nginx/intent.htpasswd;",
                 "proxy_pass http://127.0.0.1:3000;", "proxy_http_version 1.1;",
                 "proxy_set_header Upgrade $http_upgrade;", "proxy_set_header Connection $intent_connection_upgrade;",
                 "proxy_read_timeout 1h;", "client_max_body_size 64m;", 'proxy_set_header Authorization "";',
                 "map $http_upgrade $intent_connection_upgrade {"):
        assert line in text, line
    assert " ssl" not in text and "ssl_certificate" not in text and "No TLS" in text


def test_tls_options_make_an_https_listener() -> None:
    """With a certificate and key the listener is `ssl` and names both files; the no-TLS warning is gone."""
    text = render_site(ProxySite(listen="443", tls_cert="/etc/ssl/ui.pem", tls_key="/etc/ssl/ui.key"))
    assert "listen 443 ssl;" in text and "ssl_certificate /etc/ssl/ui.pem;" in text
    assert "ssl_certificate_key /etc/ssl/ui.key;" in text and "No TLS" not in text


@pytest.mark.parametrize(("fields", "message"), [
    ({"listen": "eighty"}, "--listen 'eighty' is not HOST:PORT"),
    ({"listen": "0.0.0.0:70000"}, "is not HOST:PORT"),
    ({"upstream": "3000"}, "--upstream '3000' is not HOST:PORT"),
    ({"upstream": "http://127.0.0.1:3000"}, "has a scheme"),
    ({"htpasswd": "relative/users"}, "--htpasswd 'relative/users' is not an absolute path"),
    ({"htpasswd": "/etc/x; include /etc/shadow"}, "is not an absolute path nginx can take"),
    ({"server_name": "a b"}, "is not a host name"),
    ({"tls_cert": "/etc/ssl/ui.pem"}, "--tls-cert and --tls-key go together"),
])
def test_values_that_would_break_or_inject_config_are_refused(fields: dict[str, str], message: str) -> None:
    """Each malformed option is one UsageError naming it, before any text is rendered."""
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        ProxySite(**fields)


def test_ipv6_and_named_addresses_are_taken() -> None:
    """[::]:8080 listens on IPv6; a loopback or named upstream is kept as written."""
    site = ProxySite(listen="[::]:8080", upstream="[::1]:3000")
    assert site.upstream_is_loopback and "listen [::]:8080;" in render_site(site)
    assert not ProxySite(upstream="dagster.internal:3000").upstream_is_loopback
    assert ProxySite(upstream="localhost:3000").upstream_is_loopback


def test_cli_prints_the_rendered_site_and_notes_on_stderr() -> None:
    """`intent proxy config` prints exactly render_site's text; the two warnings go to stderr only."""
    code, stdout, stderr = invoke_cli("proxy", "config", "--upstream", "10.0.0.5:3000", "--listen", "8443")
    assert code == 0
    assert stdout == render_site(ProxySite(listen="8443", upstream="10.0.0.5:3000"))
    assert "note: the webserver at 10.0.0.5:3000 is not on loopback" in stderr
    assert "note: without --tls-cert/--tls-key" in stderr and stderr.count("\n") == 2


def test_cli_bad_option_exits_2_in_one_line() -> None:
    """A bad --listen is exit 2 with one stderr line and nothing on stdout."""
    code, stdout, stderr = invoke_cli("proxy", "config", "--listen", "0.0.0.0:99999")
    assert (code, stdout) == (2, "") and stderr.count("\n") == 1 and "Traceback" not in stderr


def test_nginx_accepts_the_site(nginx: str) -> None:
    """`nginx -t` takes the rendered site inside an http block (the way Debian includes sites-enabled)."""
    server = LocalNginx("127.0.0.1:3000", {"ops": "pw"})
    try:
        server.check()
    finally:
        server.stop()
    assert not server.work.exists()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_nginx_accepts_the_tls_site_and_serves_https(nginx: str, answering: int, tmp_path: Path) -> None:
    """With a self-signed certificate nginx takes the TLS site and asks for the login over HTTPS."""
    cert, key = tmp_path / "ui.pem", tmp_path / "ui.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with LocalNginx(f"127.0.0.1:{answering}", {"ops": "pw"}, tls_cert=str(cert), tls_key=str(key)) as server:
        assert server.url.startswith("https://")
        assert requests.get(server.url, verify=str(cert), timeout=5).status_code == 401
        assert requests.get(server.url, auth=("ops", "pw"), verify=str(cert), timeout=5).status_code == 200


def test_real_nginx_lets_in_the_right_password_only(nginx: str, answering: int) -> None:
    """nginx checks the $6$ lines add_user wrote: the right password passes, a wrong one, none or another user's not."""
    password = "colon:in it & 'quotes' $(x)"
    with LocalNginx(f"127.0.0.1:{answering}", {"ops": password, "dev": "other"}) as server:
        assert server.running
        def status(auth: tuple[str, str] | None) -> int:
            return requests.get(server.url, auth=auth, timeout=5).status_code

        assert status(None) == 401
        assert status(("ops", password)) == 200 and status(("dev", "other")) == 200
        assert status(("ops", "other")) == 401 and status(("ops", password[:-1])) == 401
        assert status(("nobody", password)) == 401
        refused = requests.get(server.url, timeout=5)
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="Dagster"'
    assert not server.running and not server.work.exists()
