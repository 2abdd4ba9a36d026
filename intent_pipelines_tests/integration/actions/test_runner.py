"""Tests of run_command with real processes: streaming, failures, timeouts that kill the whole group."""

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from intent_pipelines.errors import StepFailed, StepTimeout
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.execution.runner import TAIL_LINES, run_command
from intent_pipelines.home import IntentHome


@pytest.fixture
def emitted() -> list[str]:
    return []


@pytest.fixture
def ctx(tmp_path: Path, emitted: list[str]) -> ActionContext:
    return ActionContext(request_id="r1", step_id="step", home=IntentHome(tmp_path / "home"),
                         log_path=tmp_path / "logs" / "step.log", emit=emitted.append)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie nobody reaped (no init in a container) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pids: list[int], within_s: float = 5.0) -> list[int]:
    """The pids still alive after waiting up to ``within_s`` for them to go."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture
def reap_later() -> Iterator[list[int]]:
    """Pids this test started outside the runner's reach; killed afterwards whatever happens."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_output_is_streamed_to_the_log_and_the_emit_callback(ctx: ActionContext, emitted: list[str]) -> None:
    """Each output line (stdout and stderr, last one unterminated too) reaches the step log and emit."""
    script = "echo one; echo two >&2; printf 'three'"
    result = run_command(ctx, ["sh", "-c", script])
    assert result.exit_code == 0
    assert result.tail == "one\ntwo\nthree"
    assert emitted[0] == f"$ sh -c {script}"
    assert emitted[1:4] == ["one", "two", "three"]
    assert emitted[4].startswith("exit 0 after ")
    assert ctx.log_path.read_text().splitlines() == emitted


def test_capture_returns_output_instead_of_logging_it(ctx: ActionContext, emitted: list[str]) -> None:
    """With capture=True the output is returned whole and kept out of the step log."""
    result = run_command(ctx, ["sh", "-c", "echo '{\"sha\": \"abc\"}'; echo second"], capture=True)
    assert result.output == '{"sha": "abc"}\nsecond'
    assert len(emitted) == 2 and emitted[1].startswith("exit 0 after ")
    assert "second" not in ctx.log_path.read_text().splitlines()


def test_env_and_cwd_reach_the_command(ctx: ActionContext, tmp_path: Path) -> None:
    """Extra env vars are added to the inherited environment and cwd is honoured."""
    result = run_command(ctx, ["sh", "-c", 'echo "$GREETING $PATH_IS_SET"; pwd'], cwd=tmp_path,
                         env={"GREETING": "hi", "PATH_IS_SET": "yes" if os.environ.get("PATH") else "no"})
    assert result.tail.splitlines() == ["hi yes", str(tmp_path)]


def test_non_zero_exit_raises_step_failed_with_code_and_tail(ctx: ActionContext) -> None:
    """A failing command raises StepFailed carrying its exit code, command and output tail."""
    script = "echo migrating; echo 'cat: /etc/app.conf: No such file or directory' >&2; exit 3"
    with pytest.raises(StepFailed) as caught:
        run_command(ctx, ["sh", "-c", script])
    error = caught.value
    assert type(error) is StepFailed
    assert error.exit_code == 10
    assert error.message == f"exit 3: sh -c {script}"
    assert error.detail.exit_code == 3
    assert error.detail.stderr_tail == "migrating\ncat: /etc/app.conf: No such file or directory"
    assert error.detail.log_path == str(ctx.log_path)
    assert error.transient is False
    assert "exit 3 after" in ctx.log_path.read_text()


def test_tail_keeps_only_the_last_lines(ctx: ActionContext) -> None:
    """The failure tail holds the last TAIL_LINES lines, so the cause is near the end."""
    with pytest.raises(StepFailed) as caught:
        run_command(ctx, ["sh", "-c", "i=1; while [ $i -le 100 ]; do echo line$i; i=$((i+1)); done; exit 1"])
    lines = caught.value.detail.stderr_tail.splitlines()
    assert lines == [f"line{i}" for i in range(101 - TAIL_LINES, 101)]


def test_check_false_returns_the_exit_code(ctx: ActionContext) -> None:
    """With check=False a non-zero exit is returned, not raised."""
    assert run_command(ctx, ["sh", "-c", "exit 4"], check=False).exit_code == 4


def test_transient_output_marks_the_failure_transient(ctx: ActionContext) -> None:
    """A failure whose output says the other side is temporarily unavailable is retryable."""
    script = "echo 'curl: (7) Failed to connect to 127.0.0.1 port 1: Connection refused' >&2; exit 7"
    with pytest.raises(StepFailed) as caught:
        run_command(ctx, ["sh", "-c", script])
    assert caught.value.transient is True
    assert caught.value.detail.exit_code == 7


def test_timeout_kills_the_whole_process_group(ctx: ActionContext, tmp_path: Path) -> None:
    """Past its timeout the command's whole group (shell and both sleeps) is killed: StepTimeout, exit 11."""
    first, second, shell = tmp_path / "first.pid", tmp_path / "second.pid", tmp_path / "sh.pid"
    script = (f"echo $$ > {shell}; sleep 60 & echo $! > {first}; sleep 60 & echo $! > {second}; "
              "echo started; wait")
    seen_alive: list[bool] = []

    def emit(line: str) -> None:
        if line == "started":
            pids = [int(p.read_text()) for p in (first, second, shell)]
            seen_alive.append(all(alive(p) for p in pids))

    ctx.emit = emit
    started = time.monotonic()
    with pytest.raises(StepTimeout) as caught:
        run_command(ctx, ["sh", "-c", script], timeout_s=1, grace_s=1)
    elapsed = time.monotonic() - started

    pids = [int(p.read_text()) for p in (first, second, shell)]
    assert seen_alive == [True], "the sleeps were running before the timeout"
    assert wait_dead(pids) == []
    assert 1 <= elapsed < 5
    error = caught.value
    assert error.exit_code == 11
    assert isinstance(error, StepFailed)
    assert error.message == f"timed out after 1s: sh -c {script}"
    assert error.detail.exit_code == -signal.SIGTERM
    assert error.detail.stderr_tail == "started"


def test_timeout_escalates_to_sigkill_after_the_grace(ctx: ActionContext, tmp_path: Path) -> None:
    """A command that ignores SIGTERM is SIGKILLed once the grace period is over."""
    pid_file = tmp_path / "sh.pid"
    script = f"trap '' TERM; echo $$ > {pid_file}; echo ready; while :; do sleep 0.1; done"
    started = time.monotonic()
    with pytest.raises(StepTimeout) as caught:
        run_command(ctx, ["sh", "-c", script], timeout_s=0.5, grace_s=0.5)
    assert caught.value.detail.exit_code == -signal.SIGKILL
    assert wait_dead([int(pid_file.read_text())]) == []
    assert time.monotonic() - started < 5


def test_command_not_found_is_step_failed_127(ctx: ActionContext) -> None:
    """A missing executable is a deterministic StepFailed with exit code 127 and an install hint."""
    with pytest.raises(StepFailed) as caught:
        run_command(ctx, ["intent-no-such-command", "--version"])
    error = caught.value
    assert error.message == "command not found: intent-no-such-command"
    assert error.detail.exit_code == 127
    assert error.transient is False
    assert error.hint.startswith("Install it")


def test_detached_grandchild_holding_stdout_does_not_hang_the_runner(
    ctx: ActionContext, tmp_path: Path, reap_later: list[int]
) -> None:
    """When the command exits but a background child keeps stdout open, the runner returns promptly."""
    pid_file = tmp_path / "grandchild.pid"
    started = time.monotonic()
    try:
        result = run_command(ctx, ["sh", "-c", f"sleep 30 & echo $! > {pid_file}; echo done"], timeout_s=20)
    finally:
        if pid_file.exists():
            reap_later.append(int(pid_file.read_text()))
    elapsed = time.monotonic() - started
    assert result.exit_code == 0
    assert result.tail == "done"
    assert elapsed < 5
    assert alive(reap_later[0]), "the grandchild still held the pipe when the runner returned"
