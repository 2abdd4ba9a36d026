"""`intent proxy`: the nginx site that puts the Dagster UI behind a login, and the users it lets in."""

import ipaddress
import sys
from pathlib import Path

import click

from intent_pipelines import secrets
from intent_pipelines.cli.output import console, err_console
from intent_pipelines.proxy import (
    DEFAULT_HTPASSWD,
    DEFAULT_LISTEN,
    DEFAULT_UPSTREAM,
    ProxySite,
    add_user,
    check_password,
    check_user,
    render_site,
)


@click.group()
def proxy() -> None:
    """Put the Dagster UI behind nginx with HTTP basic auth (docs/authentication.md)."""


@proxy.command("config")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="[HOST:]PORT",
              help="Where nginx listens: the address users reach.")
@click.option("--upstream", default=DEFAULT_UPSTREAM, show_default=True, metavar="HOST:PORT",
              help="The Dagster webserver, listening on loopback only.")
@click.option("--htpasswd", default=DEFAULT_HTPASSWD, show_default=True, metavar="PATH",
              help="The users file nginx checks (fill it with `intent proxy add-user`).")
@click.option("--server-name", default="_", show_default=True, metavar="NAME", help="nginx server_name.")
@click.option("--tls-cert", default="", metavar="PATH", help="Serve HTTPS with this certificate (with --tls-key).")
@click.option("--tls-key", default="", metavar="PATH", help="The certificate's private key.")
def config(listen: str, upstream: str, htpasswd: str, server_name: str, tls_cert: str, tls_key: str) -> None:
    """Print the nginx site (for /etc/nginx/sites-available/) that asks for a login before the UI."""
    site = ProxySite(listen=listen, upstream=upstream, htpasswd=htpasswd, server_name=server_name,
                     tls_cert=tls_cert, tls_key=tls_key)
    if not site.upstream_is_loopback:
        err_console.print(f"note: the webserver at {site.upstream} is not on loopback; whatever reaches it there "
                          "skips the login: start it with -h 127.0.0.1, or firewall it", markup=False)
    if not site.tls_cert and not _is_loopback(listen):
        err_console.print("note: without --tls-cert/--tls-key, passwords cross the network readable; add TLS "
                          "unless every client is on a network you trust", markup=False)
    click.echo(render_site(site), nl=False)


def _is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return bool(host) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@proxy.command("add-user")
@click.argument("user")
@click.option("--htpasswd", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_HTPASSWD,
              show_default=True, help="The users file (created when missing).")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input instead of asking twice.")
def add_user_command(user: str, htpasswd: Path, password_stdin: bool) -> None:
    """Add USER to the htpasswd file, or change their password (salted SHA-512 crypt; never on argv)."""
    check_user(user)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(f"Password for {user}", hide_input=True, confirmation_prompt=True,
                                prompt_suffix=": ", show_default=False)
    secrets.register(password)
    check_password(password)
    new = add_user(htpasswd, user, password)
    done = f"added {user} to" if new else f"changed the password of {user} in"
    console.print(f"{done} {htpasswd}", markup=False)
