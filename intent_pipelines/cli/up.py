"""`intent up` (webserver, daemon and code server for INTENT_HOME) and `intent code-server` (one on its own)."""

import sys

import click

from intent_pipelines.cli.context import CliContext
from intent_pipelines.cli.output import console, print_error
from intent_pipelines.errors import UsageError
from intent_pipelines.services import (
    CODE_SERVER_START_S,
    Endpoint,
    Supervisor,
    check_port_free,
    code_server_command,
    free_loopback_port,
    python_command,
    service_env,
    wait_listening,
    write_workspace,
)

pass_ctx = click.make_pass_decorator(CliContext, ensure=True)


def _require_init(cli: CliContext) -> None:
    if not (cli.home.dagster_home / "dagster.yaml").exists():
        raise UsageError(f"{cli.home.root} is not set up (no dagster/dagster.yaml)",
                         hint="Run `intent init` first (with the same INTENT_HOME).")


def _supervise(supervisor: Supervisor, stop_hint: str) -> None:
    """Run until a signal stops everything (exit 0) or a process exits by itself (exit 1, named)."""
    console.print(stop_hint, markup=False)
    ended = supervisor.run()
    if ended is not None:
        name, code = ended
        print_error(f"{name} exited with code {code}, so everything was stopped. Its output is above.")
        sys.exit(1)


@click.command()
@click.option("-h", "--host", default="127.0.0.1", show_default=True,
              help="Address the webserver listens on. Keep it on loopback and put a proxy with "
                   "authentication in front for other hosts (docs/authentication.md).")
@click.option("-p", "--port", default=3000, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the webserver (the Dagster UI).")
@click.option("--code-server", "code_server", metavar="HOST:PORT",
              help="Use the code server `intent code-server` runs on another host instead of starting one "
                   "here; runs then execute on that host.")
@pass_ctx
def up(cli: CliContext, host: str, port: int, code_server: str | None) -> None:
    """Start the Dagster webserver, daemon and code server for INTENT_HOME; Ctrl-C or SIGTERM stops them."""
    _require_init(cli)
    check_port_free(Endpoint(host, port), "--port")
    supervisor = Supervisor(service_env(cli.home))
    if code_server is None:
        endpoint = Endpoint("127.0.0.1", free_loopback_port())
        supervisor.start("code server", code_server_command(endpoint))
    else:
        endpoint = Endpoint.parse(code_server, option="--code-server")
    try:
        wait_listening(endpoint, CODE_SERVER_START_S, supervisor)
    except BaseException:
        supervisor.stop()
        raise
    workspace = str(write_workspace(cli.home, endpoint))
    supervisor.start("dagster-daemon", python_command("dagster._daemon", "run", "-w", workspace))
    supervisor.start("dagster-webserver",
                     python_command("dagster_webserver", "-w", workspace, "-h", host, "-p", str(port)))
    _supervise(supervisor, f"Dagster UI on http://{host}:{port} (code server {endpoint}); "
                           "Ctrl-C or SIGTERM stops it.")


@click.command("code-server")
@click.option("-h", "--host", default="127.0.0.1", show_default=True,
              help="Address to listen on: the address the control host reaches this host by.")
@click.option("-p", "--port", default=4000, show_default=True, type=click.IntRange(1, 65535),
              help="gRPC port of the code server.")
@pass_ctx
def code_server(cli: CliContext, host: str, port: int) -> None:
    """Serve the intents' code location over gRPC for `intent up --code-server`; runs execute here."""
    _require_init(cli)
    endpoint = Endpoint(host, port)
    check_port_free(endpoint, "--port")
    supervisor = Supervisor(service_env(cli.home))
    supervisor.start("code server", code_server_command(endpoint))
    _supervise(supervisor, f"code server on {endpoint}; Ctrl-C or SIGTERM stops it.")
