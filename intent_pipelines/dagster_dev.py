"""DagsterDev: a real `intent up` (code server, webserver, daemon) on a free loopback port; client DagsterGraphQL."""

import contextlib
import os
import signal
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

__all__ = ["LOCATION", "REPOSITORY", "TERMINAL_STATUSES", "DagsterDev", "DagsterDevError", "DagsterGraphQL"]

def _reset_signals() -> None:
    # A parent started with `&` hands down ignored SIGINT/SIGTERM through exec; intent up would
    # then never shut down. Give the child the defaults back.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class DagsterDev:
    """`intent up` for ``home`` on a free port, as a context manager."""

    def __init__(self, home: IntentHome, *, port: int | None = None,
                 env: Mapping[str, str] | None = None, startup_timeout_s: float = 120,
                 stop_timeout_s: float = 20) -> None:
        self.home = home
        self.port = port or free_ports(1)
        self.extra_env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = home.root / "logs" / "intent-up.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = DagsterGraphQL(self.url)
        self._process: subprocess.Popen[bytes] | None = None

    def prepare_dagster_home(self) -> Path:
        """DAGSTER_HOME under INTENT_HOME with the shipped dagster.yaml (kept when already there)."""
        dagster_home = self.home.dagster_home
        dagster_home.mkdir(parents=True, exist_ok=True)
        target = dagster_home / "dagster.yaml"
        if not target.exists():
            write_dagster_yaml(target)
        return dagster_home

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("INTENT_FLEET", "INTENTS_PATH", "INTENT_STORE_URL")}
        env.update({"INTENT_HOME": str(self.home.root), "DAGSTER_HOME": str(self.home.dagster_home),
                    "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        return env

    def start(self) -> "DagsterDev":
        """Start the process and wait until the code location is loaded."""
        if self._process is not None:
            raise DagsterDevError("intent up is already running")
        self.prepare_dagster_home()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "intent_pipelines", "up", "-h", "127.0.0.1", "-p", str(self.port)]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, cwd=self.home.root, env=self._env(), stdin=subprocess.DEVNULL, stdout=log,
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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
