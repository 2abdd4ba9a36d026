"""The local platform: releases as directories under INTENT_HOME, replicas as detached processes."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy.engine import make_url

from intent_pipelines.errors import FailureDetail, StepFailed
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.execution.environment import step_environment
from intent_pipelines.execution.runner import run_command
from intent_pipelines.fleet import App
from intent_pipelines.home import IntentHome
from intent_pipelines.platforms.base import HealthResult, Release, ReplicaStatus, parse_since

RELEASE_MARKER = ".intent-release.json"
KEEP_RELEASES = 5
STOP_GRACE_S = 5.0
# A process that dies within this long after start is reported as a failed start, with its log.
START_SETTLE_S = 0.4
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
)

# Popen objects of the replicas this process started. Keeping them lets ``poll()`` reap an exited
# child (a zombie would still look alive to ``getpgid``) and stops Popen.__del__ from warning
# about a process that is meant to outlive it.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def app_dir(home: IntentHome, app: App) -> Path:
    """INTENT_HOME/fleet/<app>: releases, the current pointer, logs, pids and data."""
    return home.fleet_dir / app.name


def database_url(home: IntentHome, app: App, *, create: bool = False) -> str:
    """Return the database URL; relative SQLite paths go to fleet/<app>/data to outlive releases.

    ``create`` makes that data directory; previews leave it alone so a dry run changes nothing.
    """
    if not app.database:
        return ""
    url = make_url(app.database)
    path = url.database or ""
    if url.get_backend_name() != "sqlite" or path in ("", ":memory:") or Path(path).is_absolute():
        return app.database
    data = app_dir(home, app) / "data"
    if create:
        data.mkdir(parents=True, exist_ok=True)
    return url.set(database=str(data / path)).render_as_string(hide_password=False)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process group leader (our replicas start their own group)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        # A recycled pid belongs to some other process, which is almost never its own group leader.
        if os.getpgid(pid) != pid:
            return False
    except ProcessLookupError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited but is not reaped yet (some container inits reap slowly)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False  # no /proc (macOS): a zombie then only lingers until its parent reaps it
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def code_dir(home: IntentHome, fleet_file: Path, app: App) -> Path:
    """Return where the app runs from: its current release, else its source directory."""
    current = app_dir(home, app) / "current"
    return current.resolve() if current.exists() else app.source_path(fleet_file)


def _signal_and_wait(pid: int, sig: signal.Signals, wait_s: float) -> bool:
    """Send ``sig`` to the process group ``pid``; whether it is gone within ``wait_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + wait_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _port_in_use(port: int) -> bool:
    """Whether something already accepts connections on the loopback ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


class LocalPlatform:
    """Runs apps on this host; every state change is a file under INTENT_HOME/fleet/<app>."""

    def __init__(self, home: IntentHome, fleet_file: Path, ctx: ActionContext) -> None:
        self.home = home
        self.fleet_file = fleet_file
        self.ctx = ctx

    # -- releases ---------------------------------------------------------------------------

    def releases(self, app: App) -> list[str]:
        """Complete releases, oldest first (ids start with their UTC build time)."""
        root = app_dir(self.home, app) / "releases"
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / RELEASE_MARKER).exists())

    def build(self, app: App, ref: str) -> Release:
        """Export ``ref`` of the source repository into a new release directory and build it."""
        source = app.source_path(self.fleet_file)
        resolved = run_command(
            self.ctx,
            ["git", "-C", str(source), "rev-parse", "--verify", f"{ref}^{{commit}}"],
            check=False,
            capture=True,
        )
        if resolved.exit_code != 0:
            raise StepFailed(
                f"cannot resolve ref {ref!r} in {source}",
                detail=FailureDetail(command=" ".join(resolved.argv), stderr_tail=resolved.tail),
                hint="Check that `source` in fleet.yaml is a git repository and the ref exists.",
            )
        sha = resolved.output.strip()
        release_id = f"{datetime.now(UTC):%Y%m%d%H%M%S}-{sha[:7]}"
        target = app_dir(self.home, app) / "releases" / release_id
        if (target / RELEASE_MARKER).exists():
            return Release(release_id, ref, str(target))  # same commit built this very second
        target.mkdir(parents=True, exist_ok=True)
        try:
            self._export(source, sha, target)
            if app.build:
                run_command(self.ctx, app.build, cwd=target, env=app.env, inherit=app.inherit_env,
                            timeout_s=self.ctx.timeout_s)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        # Written last: a directory without it is a build that died half-way and is never used.
        marker = {"ref": ref, "sha": sha, "built_at": datetime.now(UTC).isoformat()}
        (target / RELEASE_MARKER).write_text(json.dumps(marker), encoding="utf-8")
        self.ctx.log(f"built release {release_id} of {app.name} from {ref} ({sha[:12]})")
        self._prune(app)
        return Release(release_id, ref, str(target))

    def _export(self, source: Path, sha: str, target: Path) -> None:
        """``git archive`` the commit to a tar file and unpack it with the safe "data" filter."""
        archive = target.with_name(target.name + ".tar")
        try:
            run_command(
                self.ctx,
                ["git", "-C", str(source), "archive", "--format=tar", "-o", str(archive), sha],
            )
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
        finally:
            archive.unlink(missing_ok=True)

    def _prune(self, app: App) -> None:
        """Delete old releases beyond KEEP_RELEASES, never the current or previous one."""
        keep = {self.current_release(app), self._pointer(app, "previous")}
        old = [r for r in self.releases(app)[:-KEEP_RELEASES] if r not in keep]
        for release in old:
            shutil.rmtree(app_dir(self.home, app) / "releases" / release, ignore_errors=True)

    def _pointer(self, app: App, name: str) -> str:
        """Return the release a symlink (``current`` or ``previous``) points at; "" if unset."""
        link = app_dir(self.home, app) / name
        return Path(os.readlink(link)).name if link.is_symlink() else ""

    def _point(self, app: App, name: str, release: str) -> None:
        """Repoint a symlink atomically: a reader sees the old or the new target, never none."""
        base = app_dir(self.home, app)
        tmp = base / f".{name}-{uuid.uuid4().hex}"
        os.symlink(Path("releases") / release, tmp)
        os.replace(tmp, base / name)

    def current_release(self, app: App) -> str:
        """Return the release ``current`` points at."""
        return self._pointer(app, "current")

    def previous_release(self, app: App) -> str:
        """Return the release that was current before the last switch."""
        return self._pointer(app, "previous")

    def switch(self, app: App, release: str) -> str:
        """Point ``current`` at ``release``; running replicas keep the old one until restarted."""
        known = self.releases(app)
        if release not in known:
            raise StepFailed(
                f"app {app.name} has no release {release!r} (known: {', '.join(known) or 'none'})",
                hint="Build one with app.build or pick an id from the list.",
            )
        previous = self.current_release(app)
        if previous and previous != release:
            self._point(app, "previous", previous)
        self._point(app, "current", release)
        self.ctx.log(f"{app.name}: current release {previous or '(none)'} -> {release}")
        return previous

    def rollback(self, app: App, release: str = "") -> str:
        """Switch to ``release`` or the previous one, then restart whatever was running."""
        target = release or self.previous_release(app)
        if not target:
            raise StepFailed(
                f"app {app.name} has no previous release to roll back to",
                hint=f"Pass release=<id>; known: {', '.join(self.releases(app)) or 'none'}.",
            )
        self.switch(app, target)
        if self._states(app):
            self.restart(app)
        return target

    # -- processes --------------------------------------------------------------------------

    def _run_dir(self, app: App) -> Path:
        return app_dir(self.home, app) / "run"

    def _states(self, app: App) -> dict[str, dict[str, object]]:
        """Return the recorded state of each replica by name (r1, r2, ...), alive or not."""
        run = self._run_dir(app)
        if not run.is_dir():
            return {}
        states = {}
        for path in sorted(run.glob("r*.json"), key=lambda p: int(p.stem[1:])):
            try:
                states[path.stem] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # written by a crashed start; its replica is not running
        return states

    def status(self, app: App) -> list[ReplicaStatus]:
        """Every recorded replica, with liveness checked against its pid."""
        result = []
        for name, state in self._states(app).items():
            pid = int(str(state["pid"]))
            result.append(
                ReplicaStatus(
                    name=name,
                    alive=_alive(pid),
                    pid=pid,
                    port=int(str(state["port"])),
                    release=str(state.get("release", "")),
                )
            )
        return result

    def start(self, app: App, replicas: int) -> list[ReplicaStatus]:
        """Start replicas r1..rN on ports app.port.. that are not running yet."""
        if not app.start:
            raise StepFailed(
                f"app {app.name} has no `start` command",
                hint="Add `start: [argv...]` to fleet.yaml.",
            )
        alive = {s.name for s in self.status(app) if s.alive}
        started = [
            self._spawn(app, f"r{i}", app.port + i - 1)
            for i in range(1, replicas + 1)
            if f"r{i}" not in alive
        ]
        time.sleep(START_SETTLE_S if started else 0)
        for name, proc in started:
            if proc.poll() is not None:
                self._forget(app, name)
                log = app_dir(self.home, app) / "logs" / f"{name}.log"
                lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
                tail = "\n".join(lines[-20:])
                raise StepFailed(
                    f"{app.name} replica {name} exited with {proc.returncode} right after start",
                    detail=FailureDetail(command=" ".join(app.start), stderr_tail=tail,
                                         log_path=str(log)),
                    hint=f"See {log}.",
                )
        return self.status(app)

    def _spawn(self, app: App, name: str, port: int) -> tuple[str, subprocess.Popen[bytes]]:
        """Start one detached replica: own session, no stdin, output to its own log file."""
        if _port_in_use(port):
            raise StepFailed(
                f"port {port} for {app.name} replica {name} is already in use",
                hint="Stop whatever listens there or change `port` in fleet.yaml.",
            )
        cwd = code_dir(self.home, self.fleet_file, app)
        release = self.current_release(app) or "source"
        env = step_environment({**app.env, "PORT": str(port), "APP_RELEASE": release,
                                "APP_DATABASE": database_url(self.home, app, create=True)}, inherit=app.inherit_env)
        argv = [arg.replace("{port}", str(port)) for arg in app.start]
        logs = app_dir(self.home, app) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._run_dir(app).mkdir(parents=True, exist_ok=True)
        # The replica must never share the caller's stdout/stderr: a pipe held by a detached
        # process would keep a CI job or a test runner waiting forever.
        with (logs / f"{name}.log").open("ab") as log:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StepFailed(
                    f"cannot start {app.name}: {exc}", hint="Fix `start` in fleet.yaml."
                ) from None
        _CHILDREN[proc.pid] = proc
        state = {
            "replica": name,
            "pid": proc.pid,
            "port": port,
            "release": release,
            "started_at": datetime.now(UTC).isoformat(),
        }
        (self._run_dir(app) / f"{name}.pid").write_text(f"{proc.pid}\n", encoding="utf-8")
        (self._run_dir(app) / f"{name}.json").write_text(json.dumps(state), encoding="utf-8")
        self.ctx.log(f"started {app.name} {name} pid {proc.pid} port {port} release {release}")
        return name, proc

    def _forget(self, app: App, name: str) -> None:
        for suffix in (".pid", ".json"):
            (self._run_dir(app) / f"{name}{suffix}").unlink(missing_ok=True)

    def _stop_replica(self, app: App, replica: ReplicaStatus) -> None:
        """SIGTERM the replica's process group, wait the grace period, then SIGKILL."""
        if replica.alive and replica.pid:
            if not _signal_and_wait(replica.pid, signal.SIGTERM, STOP_GRACE_S):
                _signal_and_wait(replica.pid, signal.SIGKILL, STOP_GRACE_S)
                self.ctx.log(f"{app.name} {replica.name} ignored SIGTERM; killed")
            self.ctx.log(f"stopped {app.name} {replica.name} pid {replica.pid}")
        else:
            self.ctx.log(f"{app.name} {replica.name} was not running; removed its stale pid file")
        self._forget(app, replica.name)

    def stop(self, app: App) -> None:
        """Stop every replica, including ones whose pid files are stale."""
        for replica in self.status(app):
            self._stop_replica(app, replica)

    def restart(self, app: App) -> list[ReplicaStatus]:
        """Stop all replicas and start the same number again on the current release."""
        count = len(self._states(app)) or 1
        self.stop(app)
        return self.start(app, count)

    def scale(self, app: App, replicas: int) -> list[ReplicaStatus]:
        """Start missing replicas up to ``replicas`` and stop the ones above it."""
        self.start(app, replicas)
        for replica in self.status(app):
            if int(replica.name[1:]) > replicas:
                self._stop_replica(app, replica)
        return self.status(app)

    # -- observation ------------------------------------------------------------------------

    def logs(self, app: App, *, since: str = "", pattern: str = "", lines: int = 100) -> list[str]:
        """Return matching lines of every replica's log, prefixed with the replica name."""
        cutoff = parse_since(since)
        regex = re.compile(pattern) if pattern else None
        matched: list[tuple[datetime, str]] = []
        for path in sorted((app_dir(self.home, app) / "logs").glob("r*.log")):
            mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            if cutoff and mtime < cutoff:
                continue
            for when, line in _timed_lines(path, mtime):
                if (cutoff is None or when >= cutoff) and (regex is None or regex.search(line)):
                    matched.append((when, f"[{path.stem}] {line}"))
        matched.sort(key=lambda item: item[0])  # stable: a replica's lines keep their order
        return [line for _, line in matched[-lines:]] if lines > 0 else []

    def health(
        self, app: App, *, path: str | None = None, expect_status: int = 200, timeout_s: float = 20
    ) -> list[HealthResult]:
        """GET the health path of every live replica, retrying until ``timeout_s`` for start-up."""
        deadline = time.monotonic() + timeout_s
        results = []
        for replica in self.status(app):
            if not replica.alive:
                results.append(HealthResult(replica.name, ok=False, error="process is not running"))
                continue
            url = f"http://127.0.0.1:{replica.port}{path or app.health_path}"
            while True:
                result = _probe(replica.name, url, expect_status)
                if result.ok or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
            results.append(result)
        return results

    def version(self, app: App) -> str:
        """Return what the version endpoint of the first live replica says."""
        for replica in self.status(app):
            if not replica.alive:
                continue
            try:
                response = requests.get(
                    f"http://127.0.0.1:{replica.port}{app.version_path}", timeout=3
                )
            except requests.RequestException:
                return ""
            try:
                body = response.json()
            except ValueError:
                return response.text.strip()[:200]
            return str(body.get("version", "")) if isinstance(body, dict) else str(body)[:200]
        return ""


def _probe(replica: str, url: str, expect_status: int) -> HealthResult:
    try:
        response = requests.get(url, timeout=3)
    except requests.RequestException as exc:
        return HealthResult(replica, ok=False, error=f"{url}: {type(exc).__name__}")
    ok = response.status_code == expect_status
    error = "" if ok else f"{url}: HTTP {response.status_code} {response.text.strip()[:120]}"
    return HealthResult(replica, ok=ok, status=response.status_code, error=error)


def _timed_lines(path: Path, fallback: datetime) -> Iterator[tuple[datetime, str]]:
    """Each line with the time it carries, else the last time seen (the file's mtime before any)."""
    when = None
    with path.open(encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            match = _TIMESTAMP.search(raw[:64])
            if match:
                try:
                    stamp = datetime.fromisoformat(match.group(0))
                    when = stamp if stamp.tzinfo else stamp.astimezone()
                except ValueError:
                    pass
            yield when or fallback, raw.rstrip("\n")
