"""Test helpers that ship with the package: free ports, a throwaway INTENT_HOME with the sample fleet."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg

from intent_pipelines.dagster_defs.jobs import job_for, make_intent_job
from intent_pipelines.engine import Engine
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.fleet import load_fleet, save_fleet
from intent_pipelines.home import IntentHome
from intent_pipelines.platforms.local import LocalPlatform
from intent_pipelines.sample_fleet import install_sample_fleet
from intent_pipelines.spec.loader import IntentCatalog


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive loopback ports that are free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def prepare_sample_home(root: Path, *, replicas: int = 4) -> IntentHome:
    """An INTENT_HOME at ``root`` with hello-api on free ports (room for ``replicas``)."""
    home = IntentHome(root).ensure()
    fleet_file = install_sample_fleet(home)
    fleet = load_fleet(fleet_file)
    fleet.apps["hello-api"] = fleet.apps["hello-api"].model_copy(update={"port": free_ports(replicas)})
    save_fleet(fleet_file, fleet)
    return home


def stop_fleet(home: IntentHome) -> None:
    """Stop every local app process started under ``home`` (tests must leave nothing running)."""
    fleet_file = home.fleet_file
    ctx = ActionContext(request_id="cleanup", step_id="stop", home=home,
                        log_path=home.root / "logs" / "cleanup.log")
    platform = LocalPlatform(home, fleet_file, ctx)
    for app in load_fleet(fleet_file).apps.values():
        if app.platform == "local":
            platform.stop(app)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


@contextmanager
def http_answering(status: int) -> Iterator[int]:
    """A loopback HTTP server answering every GET with ``status``, stopped on exit; yields its port."""

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(status)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class PostgresServer:
    """A throwaway PostgreSQL on a loopback port that a test can stop and start again (same data, same port).

    PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
    RuntimeError when the binaries are not installed.
    """

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")
        self._pg_ctl = pg_ctl
        self._as_user: list[str] = []
        # Its own directory under /tmp: pytest's tmp dirs are private to root and unreadable to `postgres`.
        self.workdir = Path(tempfile.mkdtemp(prefix="intent-pg-"))
        self.data, sockets = self.workdir / "pgdata", self.workdir / "pgsock"
        sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in (self.workdir, sockets):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_ports(1)
        self._options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {sockets} -c fsync=on"
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        self._quiet([*self._as_user, initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                    check=True)

    @staticmethod
    def _quiet(argv: list[str], *, check: bool) -> None:
        subprocess.run(argv, check=check, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._quiet([*self._as_user, self._pg_ctl, "-D", str(self.data), "-o", self._options, "-l",
                     str(self.workdir / "pg.log"), "-w", "-t", "60", "start"], check=True)

    def stop(self, *, check: bool = True) -> None:
        """Stop the server: fast shutdown, every session disconnected."""
        self._quiet([*self._as_user, self._pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"], check=check)

    def remove(self) -> None:
        """Stop it if it runs and delete its data."""
        self.stop(check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL on a loopback port and yield its SQLAlchemy URL (see PostgresServer)."""
    server = PostgresServer()
    try:
        server.start()
        yield server.url
    finally:
        server.remove()


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url``; dropped (with its sessions) after."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:16]}"
    # pool_pre_ping: a server restarted meanwhile (a chaos test) leaves dead pooled connections behind.
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        yield str(sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def run_intent(name: str, config: dict[str, Any], instance: dg.DagsterInstance,
               ) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
    """Run an intent's job in process; return the result and the request row the engine recorded."""
    job = make_intent_job(IntentCatalog.discover().get(name))
    result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
    request = Engine(IntentHome.from_env()).store.request(result.run_id)
    if request is None:
        raise AssertionError(f"run {result.run_id} of {name} left no request record (preflight never ran)")
    return result, request


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def group_gone(pgid: int) -> bool:
    """Whether no process of the process group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def forget_loaded_jobs() -> None:
    """Drop the jobs this process built, as a new `intent` process would (tests rewrite intent files)."""
    from dagster._core.definitions.reconstruct import ReconstructableJob

    job_for.cache_clear()
    ReconstructableJob.get_definition.cache_clear()
    ReconstructableJob.get_repository_definition.cache_clear()


def invoke_cli(*args: str) -> tuple[int, str, str]:
    """Run the `intent` command in process, like a fresh process would: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from intent_pipelines.cli.main import main

    forget_loaded_jobs()
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr
