"""Runbook reports: INTENT_HOME/reports/<request>.md says what failed, why, and the exact next command."""

import os
from collections import deque
from pathlib import Path
from typing import assert_never

from intent_pipelines import secrets
from intent_pipelines.alerts.failure import FailureFacts
from intent_pipelines.alerts.scrub import scrub
from intent_pipelines.home import IntentHome
from intent_pipelines.status import Reason, RequestStatus

TAIL_LINES = 200


def report_path(home: IntentHome, request_id: str) -> Path:
    """Where the report of ``request_id`` lives (the latest failure of the request wins)."""
    return home.reports / f"{request_id}.md"


def step_logs(home: IntentHome, request_id: str, first: str = "") -> list[Path]:
    """The request's step logs, the failing step's first, then the most recently written."""
    directory = home.step_log(request_id, "x").parent
    if not directory.is_dir():
        return []
    logs = sorted(directory.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    return sorted(logs, key=lambda p: p.stem != first)


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file, secrets masked."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return scrub("".join(deque(fh, maxlen=lines)))
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"


def next_actions(facts: FailureFacts) -> list[str]:
    """What to do next, each line naming the exact command to run."""
    rid = facts.request_id
    if facts.rolled_back:
        resume = [f"The completed steps were rolled back, so the request cannot be resumed: once the cause "
                  f"is fixed, run it again with `intent replay {rid}`."]
        if facts.request_status == RequestStatus.ROLLBACK_FAILED.value:
            resume.insert(0, "A rollback failed too: inspect the app now (`intent explain "
                             f"{rid}` lists what was undone and what was not).")
    else:
        resume = [f"Once the cause is fixed, continue where it stopped: re-execute the run from failure in the "
                  f"Dagster UI (run {facts.run_id}), or `intent resume {rid}`; completed steps are not re-run."]
    reason = facts.reason
    match reason:
        case Reason.BAD_INPUT:
            return ["Nothing ran. Fix the input named in the message: the params "
                    f"(`intent plan {facts.intent} -p NAME=VALUE` checks them without running), the app in "
                    f"fleet.yaml, or the intent file (`intent validate`).",
                    f"Then start a new request: `intent run {facts.intent} -p NAME=VALUE ...` (a request "
                    "refused before it started has no recorded params to replay)."]
        case Reason.POLICY:
            return ["Nothing ran. A policy rule refused the request.",
                    "Change the params or the intent's policy if the change is really wanted."]
        case Reason.CONFIRMATION:
            return ["Nothing ran. The intent's policy asks for an explicit confirmation.",
                    f"Review the plan (`intent run {facts.intent} ... --dry-run`), then confirm exactly that plan "
                    f"with `intent run {facts.intent} ... --confirm=PLANHASH` (in the launchpad: `confirm: true` "
                    "or the hash)."]
        case Reason.LOCK_BUSY:
            lock = facts.lock_key or "LOCK"
            holder = f" (held by request {facts.lock_holder})" if facts.lock_holder else ""
            return [f"Nothing ran. Another request holds `{lock}`{holder}: see `intent status` and wait for it.",
                    f"If its holder is dead, `intent unlock {lock}` releases it.",
                    f"Then run this request again with `intent replay {rid}`."]
        case Reason.QUARANTINED:
            return ["Nothing ran. The intent is quarantined for this target after repeated failures.",
                    "Fix the cause, then release the quarantine and run it again."]
        case Reason.APPROVAL:
            step = facts.gate_step or facts.step or "STEP"
            return [f"Approve the gate: `intent approve {rid} --step {step} --reason \"...\"` "
                    f"(or `intent reject ...`).",
                    f"Then re-execute the run from failure in the UI, or `intent resume {rid}`."]
        case Reason.REJECTED:
            return ["The manual gate was rejected; this request ended for good.",
                    f"When the change is wanted again, start a new request: `intent replay {rid}`."]
        case Reason.STEP_FAILED | Reason.VERIFY_FAILED:
            return [f"`{facts.step}` failed deterministically: retrying the same input will not help. "
                    "Read the step log below and fix the cause (the app, its config, or the intent file).",
                    *resume]
        case Reason.RETRIES_EXHAUSTED:
            return [f"The step `{facts.step}` kept failing transiently until its retries ran out: check the "
                    "dependency named in the message (network, service, database) is back.", *resume]
        case Reason.TIMEOUT:
            return [f"The step `{facts.step}` ran past its timeout and its process group was killed. See the "
                    "forensics (process list, output tail) for where it hung; raise the step's `timeout` in the "
                    "intent file if it is just slow.", *resume]
        case Reason.LEASE_LOST:
            return [f"The lock `{facts.lock_key}` was lost while `{facts.step}` ran, so the step was stopped "
                    "rather than go on without it. Check `intent status` for who holds it now.", *resume]
        case Reason.CRASH | Reason.INTERNAL_ERROR:
            return ["The process running the request died, or an internal error ended it. "
                    f"Check the run's logs in the Dagster UI (run {facts.run_id}) and `intent explain {rid}`; "
                    "an internal error is a bug worth reporting.", *resume]
        case Reason.OPERATOR_STOP | Reason.STUCK:
            return ["The request was stopped (`intent stop`, UI terminate, or the watchdog); nothing "
                    f"is left running. To continue it: `intent resume {rid}` (or re-execute from failure in the "
                    f"UI); to start over: `intent replay {rid}`."]
        case Reason.NONE:
            return ["Nothing to do."]
        case _:
            assert_never(reason)


def render_report(home: IntentHome, facts: FailureFacts, *, ts: str, signature: str,
                  forensics: Path | None) -> str:
    """The Markdown runbook report of one failure."""
    exit_code = "-" if facts.exit_code is None else str(facts.exit_code)
    if facts.process_exit_code is not None:
        exit_code += f" (command exited {facts.process_exit_code})"
    lines = [
        f"# {facts.intent or 'intent'} request {facts.request_id}: {facts.request_status or 'FAILED'}",
        "",
        f"- **When:** {ts}",
        f"- **Reason:** {facts.reason.value} ({facts.reason.label})",
        f"- **Failed in phase:** {facts.phase}" + (f", step `{facts.step}`" if facts.step else "")
        + (f", attempt {facts.attempt}" if facts.attempt else ""),
        f"- **Exit code:** {exit_code}",
        f"- **Error:** {facts.error_class or '-'}: {facts.message}",
        f"- **Status:** request {facts.request_status or '(not recorded)'}, Dagster run {facts.run_status}",
        f"- **Run:** {facts.run_id}" + (" (a re-execution)" if facts.run_id != facts.request_id else ""),
        f"- **Signature:** `{signature}` (`intent failures` groups repeats)",
    ]
    if facts.command:
        lines.append(f"- **Command:** `{facts.command}`")
    if facts.lock_key:
        lines.append(f"- **Lock:** `{facts.lock_key}`")
    if forensics is not None:
        lines.append(f"- **Forensics:** {forensics}")
    lines += ["", "## Next action", ""]
    lines += [f"{n}. {text}" for n, text in enumerate(next_actions(facts), start=1)]
    lines += ["", f"Audit trail: `intent audit show {facts.request_id}`; explanation: "
                  f"`intent explain {facts.request_id}`.", ""]
    if facts.steps:
        lines += ["## Steps", "", "| step | status | attempt |", "|---|---|---|"]
        lines += [f"| {s['step_id']} | {s['status']} | {s['attempt']} |" for s in facts.steps]
        lines.append("")
    logs = step_logs(home, facts.request_id, first=facts.step)
    lines += ["## Logs", ""]
    if not logs:
        lines += ["No step logs were written for this request.", ""]
    for log in logs:
        lines += [f"### {log.stem}", "", f"`{log}` (last {TAIL_LINES} lines)", "", "```text",
                  tail(log).rstrip("\n"), "```", ""]
    return "\n".join(lines)


def write_report(home: IntentHome, facts: FailureFacts, *, ts: str, signature: str,
                 forensics: Path | None) -> Path:
    """Write (atomically replace) the request's report and return its path."""
    path = report_path(home, facts.request_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".md.{os.getpid()}.tmp")
    tmp.write_text(secrets.mask(render_report(home, facts, ts=ts, signature=signature, forensics=forensics)),
                   encoding="utf-8")
    os.replace(tmp, path)
    return path
