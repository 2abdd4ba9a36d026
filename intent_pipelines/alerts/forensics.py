"""Forensics: what was around a failure, kept under INTENT_HOME/forensics/<request>/<ts>/.

The command, its exit code and output tail, the process group (`ps`) for timeouts and stops, and a
redacted summary of the environment. Written once per failed run; nothing here is needed to act
on an alert, it is what you look at when the report is not enough.
"""

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from intent_pipelines import secrets
from intent_pipelines.alerts.failure import FailureFacts
from intent_pipelines.alerts.report import step_logs, tail
from intent_pipelines.alerts.scrub import MASK, looks_secret, scrub
from intent_pipelines.home import IntentHome
from intent_pipelines.status import Reason

OUTPUT_TAIL_LINES = 200
# Values shown in the environment summary; every other variable is listed by name only.
SHOWN_VALUES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ", "PWD", "HOSTNAME",
                          "VIRTUAL_ENV", "PYTHONPATH", "INTENT_HOME", "INTENTS_PATH", "INTENT_FLEET",
                          "DAGSTER_HOME"})
PS_COLUMNS = "pid,ppid,pgid,sid,stat,etime,args"


def environment_summary(env: Mapping[str, str]) -> dict[str, str]:
    """Every variable name; values only for a few harmless ones, and never for secret-looking names."""
    summary: dict[str, str] = {}
    for name in sorted(env):
        if looks_secret(name):
            summary[name] = MASK
        elif name in SHOWN_VALUES:
            summary[name] = scrub(env[name])
        else:
            summary[name] = "(set)"
    return summary


def process_group(pgid: int) -> str:
    """`ps` rows of the process group ``pgid`` (run without a shell); a note when ps is unavailable."""
    try:
        result = subprocess.run(["ps", "-eo", PS_COLUMNS], capture_output=True, text=True, timeout=10,
                                check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ps unavailable: {exc}\n"
    rows = result.stdout.splitlines()
    if not rows:
        return f"ps printed nothing (exit {result.returncode}): {result.stderr.strip()}\n"
    members = [row for row in rows[1:] if len(row.split()) > 2 and row.split()[2] == str(pgid)]
    body = "\n".join(scrub(row) for row in members) if members else \
        f"(no process left in group {pgid}: it was terminated)"
    return f"{rows[0]}\n{body}\n"


def write_forensics(home: IntentHome, facts: FailureFacts, *, ts: str,
                    env: Mapping[str, str] | None = None) -> Path:
    """Capture the forensics of one failure and return their directory."""
    stamp = ts.replace(":", "").replace("-", "")
    directory = home.forensics / facts.request_id / stamp
    suffix = 1
    while directory.exists():  # two failures of one request in the same second
        suffix += 1
        directory = home.forensics / facts.request_id / f"{stamp}-{suffix}"
    directory.mkdir(parents=True)
    logs = step_logs(home, facts.request_id, first=facts.step)
    failing_log = logs[0] if logs and logs[0].stem == facts.step else None
    summary = {
        "ts": ts, "request_id": facts.request_id, "run_id": facts.run_id, "intent": facts.intent,
        "phase": facts.phase, "step": facts.step, "reason": facts.reason.value, "error_class": facts.error_class,
        "exit_code": facts.exit_code, "process_exit_code": facts.process_exit_code, "command": facts.command,
        "message": facts.message, "attempt": facts.attempt, "process_group": facts.pgid,
        "step_log": str(failing_log) if failing_log else None,
        "note": "stdout and stderr are merged into the step log, so output-tail.txt holds both",
    }
    _write(directory / "failure.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _write(directory / "command.txt", (facts.command or "(no command: the failure was not in a step command)") + "\n")
    _write(directory / "output-tail.txt", tail(failing_log, OUTPUT_TAIL_LINES) if failing_log else "(no step log)\n")
    if facts.reason in (Reason.TIMEOUT, Reason.OPERATOR_STOP, Reason.STUCK, Reason.CRASH) and facts.pgid:
        # A process list shows every argv of the group: a secret passed as an argument is in it.
        _write(directory / "ps.txt", process_group(facts.pgid))
    environment = environment_summary(os.environ if env is None else env)
    _write(directory / "environment.json", json.dumps(environment, indent=2, sort_keys=True) + "\n")
    return directory


def _write(path: Path, text: str) -> None:
    path.write_text(scrub(secrets.mask(text)), encoding="utf-8")
