"""The long-running Dagster processes of an install (code server, webserver, daemon), supervised together."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import yaml

from intent_pipelines.dagster_graphql_client import LOCATION
from intent_pipelines.errors import UsageError
from intent_pipelines.home import IntentHome

DEFINITIONS_MODULE = "intent_pipelines.definitions"
# How long `intent up` waits for its code server to listen before it gives up.
CODE_SERVER_START_S = 120.0
# How long each process gets to exit after SIGTERM before it is killed; Dagster's webserver and
# daemon take a few seconds to finish their threads.
STOP_GRACE_S = 20.0


@dataclass(frozen=True)
class Endpoint:
    """A host and TCP port, parsed from ``HOST:PORT``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, option: str) -> "Endpoint":
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"{option} {text!r} is not HOST:PORT", hint=f"For example {option} 10.0.0.5:4000.")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def python_command(*args: str) -> list[str]:
    """A Dagster command run by this interpreter, so every process uses the same environment."""
    return [sys.executable, "-m", *args]


def code_server_command(endpoint: Endpoint) -> list[str]:
    """`dagster code-server start` serving the intents' code location; run workers start where it runs."""
    return python_command("dagster", "code-server", "start", "-m", DEFINITIONS_MODULE, "-a", "defs",
                          "--location-name", LOCATION, "-h", endpoint.host, "-p", str(endpoint.port),
                          "--use-python-environment-entry-point")


def write_workspace(home: IntentHome, code_server: Endpoint) -> Path:
    """INTENT_HOME/workspace.yaml: the code location is the gRPC code server at ``code_server``."""
    target = home.root / "workspace.yaml"
    entry = {"grpc_server": {"host": code_server.host, "port": code_server.port, "location_name": LOCATION}}
    target.write_text("# Written by `intent up`: the code location is served by a code server.\n"
                      + yaml.safe_dump({"load_from": [entry]}, sort_keys=False))
    return target


def free_loopback_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def check_port_free(endpoint: Endpoint, option: str) -> None:
    """Refuse a listen address that is already taken, before anything starts."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((endpoint.host, endpoint.port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {endpoint}: {exc.strerror}",
                         hint=f"Pass a free {option}, or stop what listens there.") from None


def wait_listening(endpoint: Endpoint, timeout_s: float, alive: "Supervisor") -> None:
    """Return once ``endpoint`` accepts connections; UsageError when it does not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive.exited() is not None:
            return  # the supervisor reports the exit
        try:
            with socket.create_connection((endpoint.host, endpoint.port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise UsageError(f"the code server at {endpoint} does not answer after {timeout_s:.0f}s",
                     hint="Start it with `intent code-server` on that host, or check the address and firewall.")


@dataclass
class Supervisor:
    """Child processes that live and stop together: SIGTERM or SIGINT stops all, as does any child's exit."""

    env: dict[str, str]
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    stop_requested: bool = False

    def start(self, name: str, command: list[str]) -> None:
        self.children.append((name, subprocess.Popen(command, env=self.env, stdin=subprocess.DEVNULL)))

    def exited(self) -> tuple[str, int] | None:
        """The first child that has exited, with its exit code."""
        for name, process in self.children:
            if process.poll() is not None:
                return name, process.returncode
        return None

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True

    def run(self) -> tuple[str, int] | None:
        """Wait until a stop is asked for (None) or a child exits (its name and code); then stop the rest."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._request_stop)
        try:
            ended = None
            while not self.stop_requested and ended is None:
                ended = self.exited()
                time.sleep(0.3)
            return ended
        finally:
            self.stop()

    def stop(self) -> None:
        """SIGTERM every child that still runs (last started first), then SIGKILL what outlives the grace."""
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for _, process in reversed(self.children):
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def service_env(home: IntentHome) -> dict[str, str]:
    """The environment of the Dagster processes: this one, with INTENT_HOME and DAGSTER_HOME absolute."""
    return {**os.environ, "INTENT_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home),
            "PYTHONUNBUFFERED": "1"}
