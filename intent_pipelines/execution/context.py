"""What a step's command or action is given while it runs: where to log, its secrets, its stop signal."""

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from intent_pipelines import secrets
from intent_pipelines.home import IntentHome
from intent_pipelines.spec.models import SandboxSpec


@dataclass
class ActionContext:
    """Everything an action may touch while it runs one step of one request."""

    request_id: str
    step_id: str
    home: IntentHome
    log_path: Path
    dry_run: bool = False
    timeout_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # Names of variables the intent opts in from the operator's environment (`inherit_env:`).
    inherit: tuple[str, ...] = ()
    # Commands run under bubblewrap when the step (or its intent) declares `sandbox:`.
    sandbox: SandboxSpec | None = None
    # Called with each line of output so the Dagster op can stream it; tests pass a list.append.
    emit: Callable[[str], None] = lambda line: None
    # Values of secret params: masked in every log line, audit record and error message.
    secrets: tuple[str, ...] = ()
    # Set by the heartbeat when an operator or the watchdog stops the request.
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_grace_s: float = 10.0
    # Called with the process group id of each command the step starts (for stop and the watchdog).
    on_process: Callable[[int], None] = lambda pgid: None
    last_line: str = ""

    def __post_init__(self) -> None:
        secrets.register(*self.secrets)

    def redact(self, text: str) -> str:
        """``text`` with every form of every known secret replaced by ***."""
        return secrets.mask(text)

    def log(self, line: str) -> None:
        """Append one line to the step log and stream it (secrets masked)."""
        line = self.redact(line)
        self.last_line = line
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")
        self.emit(line)
