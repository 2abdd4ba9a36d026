"""LocalNginx: the shipped nginx site run by a real nginx in the foreground, on a free loopback port.

For the tests (and for trying the login without touching /etc/nginx): a private prefix under
/tmp holds the main config, which includes the site exactly as `intent proxy config` renders it,
the htpasswd file (written by proxy.add_user), logs, pid and temp directories; all of it is
removed on stop. As root, nginx's workers run as Debian's www-data, which must read the users
file: the prefix is handed to that user, as testing.postgres_server does for `postgres`.
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from intent_pipelines.proxy import ProxySite, add_user, render_site
from intent_pipelines.testing import free_ports

WORKER_USER = "www-data"

_MAIN_CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
{user}
events {{ worker_connections 128; }}

http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {work}/site.conf;
}}
"""


class NginxError(RuntimeError):
    """nginx is missing, refused the config or did not come up; the message has its error log."""


def nginx_binary() -> str:
    """The nginx executable (Debian's lives in /usr/sbin, which a user's PATH may lack)."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                            if os.access(p, os.X_OK)), None)
    if found is None:
        raise NginxError("nginx not found (Debian: apt-get install nginx)")
    return found


class LocalNginx:
    """nginx with the site for ``upstream`` and ``users``, as a context manager; ``url`` is where it listens."""

    def __init__(self, upstream: str, users: Mapping[str, str], *, tls_cert: str = "", tls_key: str = "",
                 startup_timeout_s: float = 15, stop_timeout_s: float = 10) -> None:
        self.binary = nginx_binary()
        self.port = free_ports(1)
        self.work = Path(tempfile.mkdtemp(prefix="intent-nginx-"))
        self.htpasswd = self.work / "htpasswd"
        self.site = ProxySite(listen=f"127.0.0.1:{self.port}", upstream=upstream, htpasswd=str(self.htpasswd),
                              tls_cert=tls_cert, tls_key=tls_key)
        self.url = f"{'https' if tls_cert else 'http'}://127.0.0.1:{self.port}"
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        for user, password in users.items():
            add_user(self.htpasswd, user, password)
        (self.work / "site.conf").write_text(render_site(self.site), encoding="utf-8")
        as_root = os.geteuid() == 0
        (self.work / "nginx.conf").write_text(
            _MAIN_CONFIG.format(work=self.work, user=f"user {WORKER_USER};" if as_root else ""), encoding="utf-8")
        if as_root:
            worker = pwd.getpwnam(WORKER_USER)
            for path in (self.work, *self.work.iterdir()):
                os.chown(path, worker.pw_uid, worker.pw_gid)

    def _command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.work}/", "-c", str(self.work / "nginx.conf"),
                "-e", str(self.work / "error.log"), *extra]

    def check(self) -> None:
        """`nginx -t` on the config; NginxError with nginx's words when it is refused."""
        done = subprocess.run(self._command("-t"), capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL, timeout=30)
        if done.returncode != 0:
            raise NginxError(f"nginx -t refused the config:\n{done.stderr}{self.error_log()}")

    def start(self) -> "LocalNginx":
        """Start nginx in the foreground and wait until it accepts connections."""
        if self._process is not None:
            raise NginxError("nginx is already running")
        with (self.work / "stdout.log").open("ab") as log:
            self._process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise NginxError(f"nginx exited with {self._process.returncode}:\n{self.error_log()}")
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise NginxError(f"nginx not listening on {self.port} after {self.startup_timeout_s:.0f}s:\n"
                         f"{self.error_log()}")

    def error_log(self) -> str:
        """The error log of nginx (and anything it printed) so far."""
        text = ""
        for name in ("error.log", "stdout.log"):
            with contextlib.suppress(OSError):
                text += (self.work / name).read_text(errors="replace")
        return text

    @property
    def running(self) -> bool:
        """Whether the nginx master process is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop nginx (SIGQUIT lets workers finish, then SIGKILL its group) and remove the prefix."""
        process, self._process = self._process, None
        try:
            if process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGQUIT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=self.stop_timeout_s)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> "LocalNginx":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
