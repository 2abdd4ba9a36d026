"""Manual and conditional gates, `intent approve|reject|resume`, plan-bound confirmation and step idempotency."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome
from intent_pipelines.status import RequestStatus
from intent_pipelines.testing import invoke_cli, run_intent

# Every step appends one word to @WORK@/events, so the test can count what actually ran.
APPEND = '"import sys; open(sys.argv[1], \'a\').write(sys.argv[2] + \'\\\\n\')", "@WORK@/events"'

GATED = """\
name: gated
summary: a, then a manual approval, then b
policy: {lock: gated}
steps:
  - id: a
    run: [python3, -c, @APPEND@, a]
    rollback:
      run: [python3, -c, @APPEND@, undo-a]
  - id: gate
    needs: [a]
    uses: gate.manual
    with: {message: look at what a did}
  - id: b
    needs: [gate]
    run: [python3, -c, @APPEND@, b]
"""

# The same without a rollback, so a rejection ends the request FAILED with GateRejected's own code.
GATED_PLAIN = """\
name: gated-plain
summary: a, then a manual approval, then b (nothing to roll back)
steps:
  - id: a
    run: [python3, -c, @APPEND@, a]
  - id: gate
    needs: [a]
    uses: gate.manual
  - id: b
    needs: [gate]
    run: [python3, -c, @APPEND@, b]
"""

CONDITIONAL = """\
name: conditional
summary: base always; extra only when asked for
params:
  extra: {type: boolean, default: false}
steps:
  - id: base
    run: [python3, -c, @APPEND@, base]
  - id: extra
    needs: [base]
    gate: conditional
    when: "params.extra"
    run: [python3, -c, @APPEND@, extra]
"""

GUARDED = """\
name: guarded
summary: always needs confirmation; its context reads @WORK@/stamp
params:
  n: {type: integer, default: 1}
context:
  stamp: {run: [cat, "@WORK@/stamp"]}
policy: {confirm: true}
steps:
  - id: record
    run: [python3, -c, @APPEND@, "n={{ params.n }}"]
"""

# Step a does its side effect only once @WORK@/flag exists, and fails (exit 3) before that.
TWO_STEP = """\
name: two-step
summary: a (needs a flag file), then b
policy: {lock: two-step}
steps:
  - id: a
    run: [python3, -c, "import os, sys; sys.exit(3) if not os.path.exists(sys.argv[2]) else open(sys.argv[1], 'a').write('a\\\\n')",
          "@WORK@/events", "@WORK@/flag"]
  - id: b
    needs: [a]
    run: [python3, -c, @APPEND@, b]
"""


@dataclass(frozen=True)
class Work:
    """INTENT_HOME plus the directory the test intents write their events and read their inputs in."""

    home: IntentHome
    dir: Path

    def events(self) -> list[str]:
        path = self.dir / "events"
        return path.read_text().splitlines() if path.exists() else []

    def engine(self) -> Engine:
        return Engine(self.home)

    def audit(self, request_id: str, kind: str) -> list[dict[str, Any]]:
        return [r.data() for r in self.engine().store.audit_records(request_id=request_id) if r.kind == kind]


@pytest.fixture
def work(sample_home: IntentHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Work:
    """The test intents in an INTENTS_PATH directory and their work directory (stamp reads "one")."""
    intents, directory = tmp_path / "intents", tmp_path / "work"
    intents.mkdir()
    directory.mkdir()
    (directory / "stamp").write_text("one\n")
    for name, text in (("gated", GATED), ("gated-plain", GATED_PLAIN), ("conditional", CONDITIONAL),
                       ("guarded", GUARDED), ("two-step", TWO_STEP)):
        (intents / f"{name}.yaml").write_text(text.replace("@APPEND@", APPEND).replace("@WORK@", str(directory)))
    monkeypatch.setenv("INTENTS_PATH", str(intents))
    monkeypatch.delenv("INTENT_ENABLE_EXTRA", raising=False)
    return Work(sample_home, directory)


def outcome_of(*args: str, code: int = 0) -> dict[str, Any]:
    """Run an `intent` command with --json, check its exit code and return the outcome."""
    got, out, err = invoke_cli(*args, "--json")
    assert got == code, err
    outcome: dict[str, Any] = json.loads(out)
    return outcome


def dagster_runs() -> int:
    with dg.DagsterInstance.get() as instance:
        return len(instance.get_runs())


def error_line(err: str) -> str:
    """The one `error:` line of a refusal (other stderr lines are the diff or step output)."""
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    return line


# --- manual gates ------------------------------------------------------------------------------

def test_manual_gate_waits_for_approval_then_resume_completes_the_same_request(work: Work) -> None:
    """`intent run` stops at a manual gate (exit 16, lock free); approve + resume finish the request without re-running a."""
    waiting = outcome_of("run", "gated", code=16)
    request_id = waiting["request_id"]
    assert waiting["status"] == "NEEDS_APPROVAL" and "step gate waits for approval" in waiting["error"]
    assert work.events() == ["a"]
    store = work.engine().store
    assert store.lock_holder("gated") is None
    assert [e["step"] for e in work.audit(request_id, "gate.approval_required")] == ["gate"]

    code, out, err = invoke_cli("approve", request_id, "--step", "gate", "--reason", "ok")
    assert code == 0, err
    assert f"gate gate of request {request_id} approved by" in out
    [approved] = work.audit(request_id, "gate.approved")
    assert approved["step"] == "gate" and approved["reason"] == "ok" and approved["who"]
    code, _, err = invoke_cli("audit", "verify")
    assert code == 0, err

    done = outcome_of("resume", request_id)
    assert (done["request_id"], done["status"], done["exit_code"]) == (request_id, "SUCCEEDED", 0)
    assert work.events() == ["a", "b"]
    assert {s["step"]: s["status"] for s in done["steps"]} == {"a": "SUCCEEDED", "gate": "SUCCEEDED",
                                                              "b": "SUCCEEDED"}
    assert [p["approved_by"] for p in work.audit(request_id, "gate.passed")] == [approved["who"]]
    assert store.lock_holder("gated") is None
    with dg.DagsterInstance.get() as instance:
        rerun = instance.get_run_by_id(store.request(request_id)["run_id"])
        assert rerun is not None and rerun.root_run_id == request_id


def test_rejected_gate_rolls_back_completed_steps_and_cannot_be_resumed(work: Work) -> None:
    """After `intent reject`, resume fails the request for good: a's rollback runs and a second resume is refused."""
    request_id = outcome_of("run", "gated", code=16)["request_id"]
    code, _, err = invoke_cli("reject", request_id, "--step", "gate", "--reason", "not today")
    assert code == 0, err
    assert work.audit(request_id, "gate.rejected")[0]["reason"] == "not today"

    ended = outcome_of("resume", request_id, code=12)
    assert ended["status"] == "ROLLED_BACK" and "rejected" in ended["error"] and "not today" in ended["error"]
    assert work.events() == ["a", "undo-a"]
    code, _, err = invoke_cli("resume", request_id)
    assert code == 2 and "was rolled back" in error_line(err) and "intent replay" in error_line(err)
    assert work.events() == ["a", "undo-a"]


def test_rejected_gate_without_rollbacks_ends_rejected_for_good(work: Work) -> None:
    """A rejected gate with nothing to roll back ends the request REJECTED (exit 17); it can be neither resumed nor approved."""
    request_id = outcome_of("run", "gated-plain", code=16)["request_id"]
    code, _, err = invoke_cli("reject", request_id, "--step", "gate", "--reason", "no")
    assert code == 0, err
    ended = outcome_of("resume", request_id, code=17)
    assert ended["status"] == "REJECTED" and "gate gate was rejected" in ended["error"]
    code, _, err = invoke_cli("resume", request_id)
    assert code == 2 and "is REJECTED" in error_line(err)
    code, _, err = invoke_cli("approve", request_id, "--step", "gate", "--reason", "changed my mind")
    assert code == 2 and "was already rejected" in error_line(err)
    assert work.events() == ["a"]
    assert work.audit(request_id, "gate.approved") == []


@pytest.mark.parametrize(("args", "message"), [
    (["approve", "@REQ@", "--step", "nope", "--reason", "ok"], "gated has no manual gate 'nope'. Its manual gates: gate."),
    (["approve", "@REQ@", "--step", "a", "--reason", "ok"], "gated has no manual gate 'a'"),
    (["reject", "@REQ@", "--step", "gate", "--reason", " "], "--reason is required"),
    (["approve", "no-such-request", "--step", "gate", "--reason", "ok"], "no request no-such-request"),
    (["resume", "no-such-request"], "no request no-such-request"),
])
def test_bad_decisions_are_refused_in_one_line(work: Work, args: list[str], message: str) -> None:
    """Approving an unknown step, request or without a reason exits 2 with one line and records nothing."""
    request_id = outcome_of("run", "gated", code=16)["request_id"]
    code, _, err = invoke_cli(*[request_id if a == "@REQ@" else a for a in args])
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert work.audit(request_id, "gate.approved") == work.audit(request_id, "gate.rejected") == []


def test_resume_refuses_a_request_that_succeeded(work: Work) -> None:
    """Only failed, stopped or waiting requests can be resumed; a succeeded one is refused with exit 2."""
    request_id = outcome_of("run", "conditional")["request_id"]
    code, _, err = invoke_cli("resume", request_id)
    assert code == 2 and f"request {request_id} is SUCCEEDED" in error_line(err)


def test_dry_run_passes_a_manual_gate_without_approval(work: Work) -> None:
    """A dry run only previews the gate ("would after a manual approval") and ends DRY_RUN."""
    code, out, err = invoke_cli("run", "gated", "--dry-run")
    assert code == 0, err
    assert "would after a manual approval wait for a manual approval" in out + err
    assert work.events() == []


# --- conditional gates -------------------------------------------------------------------------

def test_conditional_gate_runs_only_when_its_when_holds_or_it_is_enabled(work: Work,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A conditional step is skipped unless `when` holds or INTENT_ENABLE_<STEP> is set."""
    skipped = outcome_of("run", "conditional")
    assert {s["step"]: s["status"] for s in skipped["steps"]} == {"base": "SUCCEEDED", "extra": "SKIPPED"}
    assert work.events() == ["base"]

    outcome_of("run", "conditional", "-p", "extra=true")
    assert work.events() == ["base", "base", "extra"]

    monkeypatch.setenv("INTENT_ENABLE_EXTRA", "0")
    outcome_of("run", "conditional")
    assert work.events() == ["base", "base", "extra", "base"]
    monkeypatch.setenv("INTENT_ENABLE_EXTRA", "1")
    enabled = outcome_of("run", "conditional")
    assert {s["step"]: s["status"] for s in enabled["steps"]} == {"base": "SUCCEEDED", "extra": "SUCCEEDED"}
    assert work.events() == ["base", "base", "extra", "base", "base", "extra"]


# --- confirmation bound to the plan ------------------------------------------------------------

def test_plan_and_dry_run_print_the_plan_hash(work: Work) -> None:
    """`intent plan` and `intent run --dry-run` print the same plan hash, and the dry run says how to confirm it."""
    code, out, err = invoke_cli("plan", "guarded", "--json")
    assert code == 0, err
    plan_hash = json.loads(out)["plan_hash"]
    code, out, _ = invoke_cli("plan", "guarded")
    assert code == 0 and f"hash {plan_hash}" in out
    code, out, err = invoke_cli("run", "guarded", "--dry-run")
    assert code == 0, err
    assert f"plan {plan_hash}" in out and f"--confirm={plan_hash[:12]}" in out
    assert work.events() == []


def test_confirm_bound_to_a_plan_hash_refuses_a_changed_plan_with_its_diff(work: Work) -> None:
    """`--confirm=HASH` runs the unchanged plan; a changed param or context is refused (exit 6) with the plan diff."""
    code, out, _ = invoke_cli("plan", "guarded", "--json")
    assert code == 0
    plan_hash = json.loads(out)["plan_hash"]

    code, _, err = invoke_cli("run", "guarded")
    assert code == 6 and "guarded needs confirmation" in error_line(err) and plan_hash[:12] in error_line(err)
    assert outcome_of("run", "guarded", f"--confirm={plan_hash[:12]}")["status"] == "SUCCEEDED"
    assert outcome_of("run", "guarded", f"--confirm={plan_hash}")["status"] == "SUCCEEDED"
    assert work.events() == ["n=1", "n=1"]
    runs = dagster_runs()

    code, _, err = invoke_cli("run", "guarded", "-p", "n=2", f"--confirm={plan_hash[:12]}")
    assert code == 6
    assert "--- confirmed plan" in err and "+++ plan now" in err
    assert '-    "n": 1' in err and '+    "n": 2' in err
    assert f"plan changed since it was confirmed: confirmed {plan_hash[:12]}" in error_line(err)

    (work.dir / "stamp").write_text("two\n")
    code, _, err = invoke_cli("run", "guarded", f"--confirm={plan_hash[:12]}")
    assert code == 6
    assert '-    "stamp": "one"' in err and '+    "stamp": "two"' in err
    assert "plan changed since it was confirmed" in error_line(err)
    assert dagster_runs() == runs and work.events() == ["n=1", "n=1"]

    assert outcome_of("run", "guarded", "-p", "n=2", "--confirm")["status"] == "SUCCEEDED"
    code, _, err = invoke_cli("run", "guarded", "--confirm=not-a-hash")
    assert code == 2 and "neither true nor a plan hash" in error_line(err)
    assert work.events() == ["n=1", "n=1", "n=2"]


def test_launchpad_confirm_takes_true_or_the_plan_hash(work: Work, instance: dg.DagsterInstance) -> None:
    """The launchpad's confirm accepts true or the plan hash; a missing or stale confirmation fails preflight with exit 6."""
    code, out, _ = invoke_cli("plan", "guarded", "--json")
    assert code == 0
    plan_hash = json.loads(out)["plan_hash"]

    for confirm in (True, plan_hash, plan_hash[:12]):
        result, request = run_intent("guarded", {"confirm": confirm}, instance)
        assert result.success and request["status"] == "SUCCEEDED", request["error"]
    for config in ({}, {"confirm": plan_hash, "n": 2}):
        result, request = run_intent("guarded", config, instance)
        assert not result.success
        assert (request["status"], request["exit_code"]) == ("REFUSED", 6)
    assert work.events() == ["n=1"] * 3


# --- idempotency -------------------------------------------------------------------------------

def test_step_done_before_a_crash_is_not_executed_again_on_resume(work: Work) -> None:
    """A step whose success the store recorded (but Dagster did not) is skipped by the re-execution: its effect stays single."""
    failed = outcome_of("run", "two-step", code=10)
    request_id = failed["request_id"]
    assert failed["status"] == "FAILED" and work.events() == []

    # The crash: step a ran (its side effect happened and the engine recorded SUCCEEDED), then the
    # run died before Dagster recorded the op's success, so Dagster still has step a as failed.
    (work.dir / "flag").touch()
    engine = work.engine()
    engine.run_step(request_id, "a", run_id=request_id)
    assert work.events() == ["a"]
    engine.store.update_request(request_id, status=RequestStatus.FAILED)
    assert engine.store.release_lock("two-step", request_id=request_id)
    with dg.DagsterInstance.get() as instance:
        stats = {s.step_key: s.status for s in instance.get_run_step_stats(request_id)}
        assert stats["a"] is not None and stats["a"].value == "FAILURE"

    done = outcome_of("resume", request_id)
    assert done["status"] == "SUCCEEDED"
    assert work.events() == ["a", "b"]
    starts = [e["step"] for e in work.audit(request_id, "step.start")]
    assert starts.count("a") == 2 and starts.count("b") == 1  # the failed attempt and the crashed one
    assert engine.store.lock_holder("two-step") is None


# --- ids as `intent status` shows them -----------------------------------------------------------

def test_status_lists_a_waiting_request_with_the_command_to_act(work: Work) -> None:
    """`intent status` (without --all) shows a NEEDS_APPROVAL request, its gate and the approve command."""
    request_id = outcome_of("run", "gated", code=16)["request_id"]
    code, out, err = invoke_cli("status")
    assert code == 0, err
    assert request_id[:8] in out and "NEEDS_APPROVAL" in out
    assert f"intent approve {request_id} --step gate --reason" in " ".join(out.split())
    [shown] = outcome_of("status")
    assert (shown["request_id"], shown["status"], shown["gate"]) == (request_id, "NEEDS_APPROVAL", "gate")
    assert f"intent approve {request_id} --step gate" in shown["next_action"]


def test_the_short_ids_status_prints_work_in_every_command(work: Work) -> None:
    """The 8-character id of `intent status --all` is accepted by explain, audit show, replay, approve and resume."""
    request_id = outcome_of("run", "gated", code=16)["request_id"]
    short = request_id[:8]
    code, out, _ = invoke_cli("status", "--all")
    assert code == 0 and short in out
    for args in (("explain", short), ("audit", "show", short), ("replay", short, "--dry-run"),
                 ("audit", "verify", "--request", short)):
        code, out, err = invoke_cli(*args)
        assert code == 0, f"{args}: {err}"
    code, out, _ = invoke_cli("explain", short)
    assert f"request {request_id} " in out
    code, _, err = invoke_cli("approve", short, "--step", "gate", "--reason", "ok")
    assert code == 0, err
    done = outcome_of("resume", short)
    assert (done["request_id"], done["status"]) == (request_id, "SUCCEEDED")


def test_an_ambiguous_prefix_lists_the_candidates_and_changes_nothing(work: Work) -> None:
    """A prefix of two requests is refused (usage error) naming both; nothing is approved or stopped."""
    store = work.engine().store
    first = outcome_of("run", "gated", code=16)["request_id"]
    second = outcome_of("run", "gated-plain", code=16)["request_id"]
    # Real ids rarely share a prefix, so rename two rows' ids to share one, keeping everything else.
    import sqlalchemy as sa

    from intent_pipelines.store import schema
    with store.engine.begin() as conn:
        for old, new in ((first, "abcd1111" + first[8:]), (second, "abcd2222" + second[8:])):
            conn.execute(sa.update(schema.requests).where(schema.requests.c.request_id == old)
                         .values(request_id=new, run_id=new))
    before = len(list(store.audit_records()))
    code, _, err = invoke_cli("approve", "abcd", "--step", "gate", "--reason", "ok")
    line = error_line(err)
    assert code == 2 and "is the start of 2 requests" in line
    assert "abcd1111" in line and "abcd2222" in line and "Type more of the id" in line
    assert len(list(store.audit_records())) == before
    code, _, err = invoke_cli("explain", "abcd1")
    assert code == 0, err
