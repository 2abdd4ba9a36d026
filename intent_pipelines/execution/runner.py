"""Run one command without a shell: its own process group, a timeout, SIGTERM, grace, SIGKILL."""

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from intent_pipelines.errors import FailureDetail, StepFailed, StepStopped, StepTimeout
from intent_pipelines.execution import sandbox
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.execution.environment import step_environment
from intent_pipelines.retries import FailureClass, classify

TAIL_LINES = 40
DEFAULT_GRACE_S = 5.0

# The guard beside every command: it waits on a pipe only the runner can write to. "Done" ends it;
# end-of-file without a word means the runner died (SIGKILL, OOM), and then the command's whole
# process group is terminated, so no step goes on changing a target that nobody follows any more.
# Its arguments are a process group id and a number of seconds, never user text.
_GUARD_SCRIPT = 'read -r _ || { kill -TERM "-$1" 2>/dev/null; sleep "$2"; kill -KILL "-$1" 2>/dev/null; }'


@dataclass(frozen=True)
class CommandResult:
    """A finished command: exit code and the tail of its output."""

    argv: tuple[str, ...]
    exit_code: int
    tail: str
    duration_s: float
    output: str = ""  # the full output, only when run with ``capture=True``


def _terminate_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the whole process group, wait ``grace_s``, then SIGKILL whatever is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class _Guard:
    """Kills a command's process group if the runner dies before the command ends."""

    def __init__(self, pgid: int, grace_s: float) -> None:
        read_end, self._write_end = os.pipe()
        try:
            # Its own session: killing the runner's process group (Ctrl-C, a supervisor) must not kill the guard.
            self._proc = subprocess.Popen(["/bin/sh", "-c", _GUARD_SCRIPT, "intent-guard", str(pgid), f"{grace_s:g}"],
                                          stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)
        finally:
            os.close(read_end)

    def release(self) -> None:
        """The command has ended and been reaped by the runner: the guard leaves its group alone."""
        with contextlib.suppress(OSError):
            os.write(self._write_end, b"done\n")
        os.close(self._write_end)
        self._proc.wait()


def run_command(
    ctx: ActionContext,
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    inherit: Sequence[str] = (),
    timeout_s: float | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    check: bool = True,
    capture: bool = False,
) -> CommandResult:
    """Run ``argv`` and stream its merged output into the step log.

    With ``capture`` the output is data to parse (JSON, a sha, log lines): it is returned whole in
    ``result.output`` instead of being copied line by line into the step log.

    Raises StepTimeout past ``timeout_s`` (process group killed) and, with ``check``, StepFailed
    on a non-zero exit, classified transient or deterministic from its output.
    """
    command = ctx.redact(" ".join(argv))
    # Least privilege: the allowlisted base, the names the intent (ctx) or caller opts in, then ``env``.
    full_env = step_environment(env, inherit=(*ctx.inherit, *inherit))
    ctx.log(f"$ {command}")
    launched = list(argv)
    if ctx.sandbox is not None:
        # bwrap enters the working directory itself, inside the sandbox.
        launched, cwd = sandbox.wrap(ctx, ctx.sandbox, argv, cwd=cwd, search_path=full_env.get("PATH")), None
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            launched,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so a timeout kills children too
        )
    except FileNotFoundError:
        raise StepFailed(
            f"command not found: {argv[0]}",
            detail=FailureDetail(command=command, exit_code=127, log_path=str(ctx.log_path)),
            hint="Install it or fix the step's `run` argv.",
        ) from None
    except PermissionError:
        raise StepFailed(
            f"command not executable: {argv[0]}",
            detail=FailureDetail(command=command, exit_code=126, log_path=str(ctx.log_path)),
            hint="Check the file's permissions.",
        ) from None

    guard = _Guard(proc.pid, grace_s)
    try:
        ctx.on_process(proc.pid)
        return _follow(ctx, proc, argv, command, started, timeout_s=timeout_s, grace_s=grace_s, check=check,
                       capture=capture)
    except BaseException:
        # Interrupted (Dagster terminating the run, Ctrl-C): never leave the command running.
        if proc.poll() is None:
            _terminate_group(proc, grace_s)
        raise
    finally:
        guard.release()


def _follow(ctx: ActionContext, proc: "subprocess.Popen[bytes]", argv: Sequence[str], command: str, started: float,
            *, timeout_s: float | None, grace_s: float, check: bool, capture: bool) -> CommandResult:
    """Stream the command's output until it exits, times out or is stopped."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    captured: list[str] = []
    sink = captured.append if capture else ctx.log
    deadline = started + timeout_s if timeout_s else None
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buffer = b""
    timed_out = stopped = False
    eof = False
    while not eof:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if wait == 0.0:
            timed_out = True
            break
        if ctx.cancel.is_set():
            stopped = True
            break
        exited = proc.poll() is not None
        # Once the command has exited, only drain what is already buffered: a detached
        # grandchild may hold the pipe open forever.
        ready = sel.select(timeout=0 if exited else min(wait, 1.0) if wait is not None else 1.0)
        if not ready and exited:
            break
        for _key, _ in ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                eof = True
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                tail.append(ctx.redact(line))
                sink(line)
    sel.close()
    if buffer:
        line = buffer.decode("utf-8", "replace")
        tail.append(ctx.redact(line))
        sink(line)
    if stopped:
        _terminate_group(proc, ctx.cancel_grace_s)
        proc.stdout.close()
        raise StepStopped(
            f"stopped by request: {command}",
            detail=FailureDetail(command=command, exit_code=proc.returncode, stderr_tail="\n".join(tail),
                                 log_path=str(ctx.log_path)),
            hint="See `intent explain` for what was done before the stop.",
        )
    if timed_out:
        _terminate_group(proc, grace_s)
        proc.stdout.close()
        raise StepTimeout(
            f"timed out after {timeout_s:g}s: {command}",
            detail=FailureDetail(
                command=command,
                exit_code=proc.returncode,
                stderr_tail="\n".join(tail),
                log_path=str(ctx.log_path),
            ),
            hint="Raise the step's `timeout` or find out why it hangs (see the step log).",
        )
    # Output closed: the main process is exiting; reap it (children in its group may linger).
    exit_code = proc.wait()
    proc.stdout.close()
    result = CommandResult(
        tuple(argv), exit_code, "\n".join(tail), time.monotonic() - started, "\n".join(captured)
    )
    ctx.log(f"exit {exit_code} after {result.duration_s:.2f}s")
    # A sandbox that could not be set up is an error even with ``check=False``: the command never started.
    if ctx.sandbox is not None and (failure := sandbox.setup_failure(ctx, command, exit_code, result.tail)):
        raise failure
    if check and exit_code != 0:
        raise StepFailed(
            f"exit {exit_code}: {command}",
            transient=classify(result.tail, exit_code=exit_code) is FailureClass.TRANSIENT,
            detail=FailureDetail(
                command=command,
                exit_code=exit_code,
                stderr_tail=result.tail,
                log_path=str(ctx.log_path),
            ),
            hint=f"See {ctx.log_path}.",
        )
    return result
