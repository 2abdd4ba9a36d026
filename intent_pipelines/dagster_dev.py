"""DagsterDev: a real `intent up` (code server, webserver, daemon) on a free loopback port; client DagsterGraphQL.

CodeServer runs `intent code-server` on its own, for the two-process layout of deploy/systemd
(`intent up --code-server`): webserver and daemon can then restart while runs go on in the code server.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import requests

from intent_pipelines.bundled import write_dagster_yaml
from intent_pipelines.dagster_graphql_client import (
    LOCATION,
    REPOSITORY,
    TERMINAL_STATUSES,
    DagsterGraphQL,
    DagsterGraphQLError,
)
from intent_pipelines.home import IntentHome
from intent_pipelines.testing import free_ports

# The harness's errors are the client's (`intent up` not coming up is reported the same way).
DagsterDevError = DagsterGraphQLError

__all__ = ["LOCATION", "REPOSITORY", "TERMINAL_STATUSES", "CodeServer", "DagsterDev", "DagsterDevError",
           "DagsterGraphQL"]


def _reset_signals() -> None:
    # A parent started with `&` hands down ignored SIGINT/SIGTERM through exec; intent up would
    # then never shut down. Give the child the defaults back.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def prepare_dagster_home(home: IntentHome) -> Path:
    """DAGSTER_HOME under INTENT_HOME with the shipped dagster.yaml (kept when already there)."""
    dagster_home = home.dagster_home
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    if not target.exists():
        write_dagster_yaml(target)
    return dagster_home


def service_env(home: IntentHome, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a service for ``home``: ours without the test's intent settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("INTENT_FLEET", "INTENTS_PATH", "INTENT_STORE_URL")}
    env.update({"INTENT_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home),
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class DagsterDev:
    """`intent up` for ``home`` on a free port, as a context manager.

    With ``code_server`` (HOST:PORT of a running `intent code-server`) it starts only the webserver
    and daemon, which can then be restarted (``stop()``, ``start()``) while runs go on there.
    """

    def __init__(self, home: IntentHome, *, port: int | None = None,
                 env: Mapping[str, str] | None = None, startup_timeout_s: float = 120,
                 stop_timeout_s: float = 20, code_server: str | None = None) -> None:
        self.home = home
        self.port = port or free_ports(1)
        self.extra_env = dict(env or {})
        self.code_server = code_server
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = home.root / "logs" / "intent-up.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = DagsterGraphQL(self.url)
        self._process: subprocess.Popen[bytes] | None = None

    def prepare_dagster_home(self) -> Path:
        """DAGSTER_HOME under INTENT_HOME with the shipped dagster.yaml (kept when already there)."""
        return prepare_dagster_home(self.home)

    @property
    def pid(self) -> int:
        """The pid of the `intent up` process (the leader of its process group)."""
        if self._process is None:
            raise DagsterDevError("intent up is not running")
        return self._process.pid

    def wait(self, timeout: float) -> int:
        """Wait until `intent up` exits by itself (a service of it died) and return its exit code."""
        if self._process is None:
            raise DagsterDevError("intent up is not running")
        return self._process.wait(timeout=timeout)

    def start(self) -> "DagsterDev":
        """Start the process and wait until the code location is loaded."""
        if self._process is not None:
            raise DagsterDevError("intent up is already running")
        self.prepare_dagster_home()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "intent_pipelines", "up", "-h", "127.0.0.1", "-p", str(self.port)]
        if self.code_server:
            command += ["--code-server", self.code_server]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, cwd=self.home.root, env=service_env(self.home, self.extra_env), stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_reset_signals)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise DagsterDevError(f"intent up exited with {self._process.returncode}\n"
                                      f"{self.log_tail()}")
            try:
                status, error = self.client.location_status()
            except (requests.RequestException, DagsterDevError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if error:
                    raise DagsterDevError(f"code location {LOCATION} failed to load: {error}")
                if status == "LOADED":
                    return
                last = f"location {LOCATION} is {status or 'absent'}"
            time.sleep(0.5)
        raise DagsterDevError(f"intent up not ready after {self.startup_timeout_s:.0f}s ({last})\n"
                              f"{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the intent up log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the whole process group, wait, then SIGKILL whatever is left of it."""
        process, self._process = self._process, None
        if process is None:
            return
        pgid = process.pid  # start_new_session made it the group leader
        _signal_group(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=self.stop_timeout_s)
        # The webserver, daemon, code server and run workers share the group; reap stragglers.
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(pgid, signal.SIGKILL)
        process.wait()

    def __enter__(self) -> "DagsterDev":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class CodeServer:
    """`intent code-server` for ``home`` on a free loopback port, as a context manager; runs execute in it."""

    def __init__(self, home: IntentHome, *, env: Mapping[str, str] | None = None,
                 startup_timeout_s: float = 120, stop_timeout_s: float = 20) -> None:
        self.home = home
        self.port = free_ports(1)
        self.address = f"127.0.0.1:{self.port}"
        self.extra_env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = home.root / "logs" / "code-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> "CodeServer":
        """Start it and wait until its port accepts connections (`intent up` waits for the code location)."""
        prepare_dagster_home(self.home)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "intent_pipelines", "code-server", "-h", "127.0.0.1", "-p", str(self.port)]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, cwd=self.home.root, env=service_env(self.home, self.extra_env), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_reset_signals)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise DagsterDevError(f"intent code-server exited with {code}\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.3)
        self.stop()
        raise DagsterDevError(f"intent code-server not listening after {self.startup_timeout_s:.0f}s")

    def stop(self) -> None:
        """SIGTERM its process group (the code server waits for its runs), then SIGKILL what is left."""
        process, self._process = self._process, None
        if process is None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=self.stop_timeout_s)
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()

    def __enter__(self) -> "CodeServer":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
