"""`intent replay`: a past request run again from the audit log alone (exact, fresh context, overrides, drift)."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome
from intent_pipelines.store import schema as store_schema
from intent_pipelines.testing import invoke_cli, run_intent

# A user intent whose context reads a file the test changes, and whose one step appends
# "<n> <stamp>" to a log, so every execution and the values it used can be read back.
STAMP_INTENT = """\
name: stamp
summary: Append the param and the captured stamp to a log
params:
  n: {type: integer, default: 1, min: 1, max: 5}
context:
  stamp: {run: [cat, "@STAMP@"]}
policy:
  confirm: "params.n > 3"
steps:
  - id: record
    run: [python3, -c, "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\\\n')",
          "@LOG@", "{{ params.n }}", "{{ context.stamp }}"]
"""


@dataclass(frozen=True)
class StampIntent:
    """The stamp intent's files: its definition, the context source and the execution log."""

    home: IntentHome
    intent_file: Path
    stamp: Path
    log: Path

    def executions(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def engine(self) -> Engine:
        return Engine(self.home)


@pytest.fixture
def stamp(sample_home: IntentHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StampIntent:
    """The stamp intent in an INTENTS_PATH directory, its stamp file reading "one"."""
    intents, work = tmp_path / "intents", tmp_path / "work"
    intents.mkdir()
    work.mkdir()
    stamp_file, log = work / "stamp", work / "log"
    stamp_file.write_text("one\n")
    intent_file = intents / "stamp.yaml"
    intent_file.write_text(STAMP_INTENT.replace("@STAMP@", str(stamp_file)).replace("@LOG@", str(log)))
    monkeypatch.setenv("INTENTS_PATH", str(intents))
    return StampIntent(sample_home, intent_file, stamp_file, log)


def run_json(*args: str) -> dict[str, Any]:
    """Run an `intent` command with --json that must succeed; return its outcome."""
    code, out, err = invoke_cli(*args, "--json")
    assert code == 0, err
    outcome: dict[str, Any] = json.loads(out)
    return outcome


def start_body(engine: Engine, request_id: str) -> dict[str, Any]:
    return next(r.data() for r in engine.store.audit_records(request_id=request_id) if r.kind == "request.start")


def dagster_runs() -> int:
    with dg.DagsterInstance.get() as instance:
        return len(instance.get_runs())


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_exact_replay_reuses_params_and_recorded_context(stamp: StampIntent) -> None:
    """A plain replay runs the same params with the recorded context and records replay_of and mode exact."""
    original = run_json("run", "stamp", "-p", "n=2")
    stamp.stamp.write_text("two\n")  # the recorded context wins over what a capture would say now

    replayed = run_json("replay", original["request_id"], "--reason", "again")
    assert replayed["status"] == "SUCCEEDED" and replayed["request_id"] != original["request_id"]
    assert stamp.executions() == ["2 one", "2 one"]
    body = start_body(stamp.engine(), replayed["request_id"])
    assert (body["replay_of"], body["replay_mode"]) == (original["request_id"], "exact")
    assert body["params"] == {"n": 2} and body["context"] == {"stamp": "one"}
    assert body["plan_hash"] == original["plan_hash"]
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(replayed["run_id"])
        assert run is not None and run.tags["intent/replay_of"] == original["request_id"]


def test_audit_show_links_original_and_replay_both_ways(stamp: StampIntent) -> None:
    """`intent audit show` names the replays of an original and the original (with mode) of a replay."""
    original = run_json("run", "stamp")
    replayed = run_json("replay", original["request_id"])
    code, out, _ = invoke_cli("audit", "show", original["request_id"])
    assert code == 0 and f"replayed by {replayed['request_id']}" in out
    code, out, _ = invoke_cli("audit", "show", replayed["request_id"])
    assert code == 0 and f"replay of {original['request_id']} (exact)" in out


def test_replay_dry_run_shows_the_plan_and_runs_nothing(stamp: StampIntent) -> None:
    """`intent replay --dry-run` prints the plan hash and creates no run, request or execution."""
    original = run_json("run", "stamp", "-p", "n=2")
    runs = dagster_runs()
    code, out, err = invoke_cli("replay", original["request_id"], "--dry-run")
    assert code == 0, err
    assert f"replay of {original['request_id']}: plan {original['plan_hash']}" in out
    assert "changed since the original: nothing" in out
    assert "  L0 record: " in out and "params: {'n': 2}" in out  # the steps it would run, as `intent plan`
    assert stamp.executions() == ["2 one"]
    assert dagster_runs() == runs
    assert stamp.engine().store.replays_of(original["request_id"]) == []
    stamp.stamp.write_text("two\n")
    code, out, err = invoke_cli("replay", original["request_id"][:8], "--dry-run", "--fresh-context",
                                "--override", "n=3")
    assert code == 0, err
    assert "changed since the original: context (fresh capture), params (overrides)" in out
    assert "params: {'n': 3}" in out and "context: {'stamp': 'two'}" in out
    assert dagster_runs() == runs


def test_fresh_context_recaptures_and_shows_old_and_new(stamp: StampIntent) -> None:
    """`--fresh-context` captures the context again, prints old -> new and records mode fresh_context."""
    original = run_json("run", "stamp", "-p", "n=2")
    stamp.stamp.write_text("two\n")
    code, out, err = invoke_cli("replay", original["request_id"], "--fresh-context", "--json")
    assert code == 0, err
    assert "context stamp: 'one' -> 'two'" in err
    replayed = json.loads(out)
    assert stamp.executions() == ["2 one", "2 two"]
    body = start_body(stamp.engine(), replayed["request_id"])
    assert body["replay_mode"] == "fresh_context" and body["context"] == {"stamp": "two"}


def test_override_is_validated_shown_and_recorded(stamp: StampIntent) -> None:
    """A bad `--override` is refused by the param schema (exit 4, nothing run); a good one runs as mode overrides."""
    original = run_json("run", "stamp", "-p", "n=2")
    runs = dagster_runs()
    code, _, err = invoke_cli("replay", original["request_id"], "--override", "n=9")
    assert code == 4, err
    assert len(error_lines(err)) == 1 and "above the maximum" in error_lines(err)[0]
    assert dagster_runs() == runs and stamp.executions() == ["2 one"]

    code, out, err = invoke_cli("replay", original["request_id"], "--override", "n=3", "--json")
    assert code == 0, err
    assert "override n: 2 -> '3'" in err
    replayed = json.loads(out)
    assert stamp.executions() == ["2 one", "3 one"]
    body = start_body(stamp.engine(), replayed["request_id"])
    assert body["replay_mode"] == "overrides" and body["params"] == {"n": 3}


def test_drift_is_shown_and_refused_without_accept_drift(stamp: StampIntent) -> None:
    """After the intent file changed, a replay prints the diff and is refused (exit 2) unless --accept-drift."""
    original = run_json("run", "stamp", "-p", "n=2")
    stamp.intent_file.write_text(stamp.intent_file.read_text().replace(
        "summary: Append the param", "summary: Append twice the param"))
    runs = dagster_runs()

    code, out, err = invoke_cli("replay", original["request_id"])
    assert code == 2, err
    assert "-summary: Append the param and the captured stamp to a log" in err
    assert "+summary: Append twice the param and the captured stamp to a log" in err
    [line] = error_lines(err)
    assert "intent stamp changed since request" in line and "--accept-drift" in line
    assert dagster_runs() == runs and stamp.executions() == ["2 one"]

    code, out, err = invoke_cli("replay", original["request_id"], "--dry-run")
    assert code == 0, err
    assert "+summary: Append twice" in err and "(intent changed: see the diff)" in out
    assert dagster_runs() == runs

    replayed = run_json("replay", original["request_id"], "--accept-drift")
    assert replayed["status"] == "SUCCEEDED" and stamp.executions() == ["2 one", "2 one"]
    body = start_body(stamp.engine(), replayed["request_id"])
    assert body["intent_sha256"] != start_body(stamp.engine(), original["request_id"])["intent_sha256"]
    assert body["replay_mode"] == "drift"


def test_replay_works_after_dagster_home_is_deleted(stamp: StampIntent) -> None:
    """With the whole Dagster home (run history included) deleted, a replay rebuilds the request from the audit log."""
    original = run_json("run", "stamp", "-p", "n=2")
    shutil.rmtree(stamp.home.dagster_home)

    replayed = run_json("replay", original["request_id"])
    assert replayed["status"] == "SUCCEEDED"
    assert stamp.executions() == ["2 one", "2 one"]
    assert (stamp.home.dagster_home / "dagster.yaml").exists()
    with dg.DagsterInstance.get() as instance:
        assert [r.run_id for r in instance.get_runs()] == [replayed["run_id"]]


def test_unknown_request_is_refused_in_one_line(stamp: StampIntent) -> None:
    """Replaying a request id the audit log does not know exits 2 with one line on stderr."""
    code, _, err = invoke_cli("replay", "no-such-request")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: request no-such-request is not in the audit log. Check the id: it is the run id "
        "`intent run` prints and the UI shows."]


def test_tampered_chain_refuses_the_replay(stamp: StampIntent) -> None:
    """A flipped byte in the original's audit records makes the replay refuse with exit 20 and run nothing."""
    original = run_json("run", "stamp", "-p", "n=2")
    store = stamp.engine().store
    start = next(r for r in store.audit_records(request_id=original["request_id"]) if r.kind == "request.start")
    table = store_schema.audit_events
    with store.engine.begin() as conn:
        body = bytes(conn.execute(table.select().where(table.c.seq == start.seq)).one().body)
        forged = body.replace(b'"n":2', b'"n":4')
        assert forged != body
        conn.execute(table.update().where(table.c.seq == start.seq).values(body=forged))
    runs = dagster_runs()

    code, _, err = invoke_cli("replay", original["request_id"])
    assert code == 20, err
    [line] = err.strip().splitlines()
    assert f"the audit chain is broken at seq {start.seq}" in line and "intent audit verify" in line
    assert dagster_runs() == runs and stamp.executions() == ["2 one"]


def test_replay_of_a_confirmed_request_needs_confirmation_again(stamp: StampIntent) -> None:
    """A request that needed --confirm replays only with --confirm (plain or bound to its plan hash)."""
    original = run_json("run", "stamp", "-p", "n=4", "--confirm")
    code, _, err = invoke_cli("replay", original["request_id"])
    assert code == 6, err
    assert len(err.strip().splitlines()) == 1 and "needs confirmation" in err
    assert stamp.executions() == ["4 one"]

    run_json("replay", original["request_id"], "--confirm")
    run_json("replay", original["request_id"], f"--confirm={original['plan_hash'][:12]}")
    assert stamp.executions() == ["4 one"] * 3


def test_replay_of_a_voluntarily_confirmed_request_asks_with_the_confirmation_exit_code(
        stamp: StampIntent) -> None:
    """A request confirmed although its policy did not ask still needs --confirm on replay, refused with exit 6."""
    original = run_json("run", "stamp", "-p", "n=2", "--confirm")
    code, _, err = invoke_cli("replay", original["request_id"])
    assert code == 6, err
    [line] = err.strip().splitlines()
    assert "needed confirmation, so its replay does too" in line and "--confirm=" in line
    assert stamp.executions() == ["2 one"]


def test_launchpad_replay_of_records_the_link_and_tags_the_run(stamp: StampIntent,
                                                               instance: dg.DagsterInstance) -> None:
    """A launchpad run with replay_of reuses the recorded context, records the link and gets the replay_of tag."""
    original = run_json("run", "stamp", "-p", "n=2")
    stamp.stamp.write_text("two\n")
    result, request = run_intent("stamp", {"n": 2, "replay_of": original["request_id"]}, instance)
    assert result.success and request["status"] == "SUCCEEDED"
    assert stamp.executions() == ["2 one", "2 one"]
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["intent/replay_of"] == original["request_id"]
    body = start_body(stamp.engine(), result.run_id)
    assert (body["replay_of"], body["replay_mode"]) == (original["request_id"], "exact")
    assert stamp.engine().store.replays_of(original["request_id"]) == [result.run_id]


@pytest.mark.parametrize("name", ["replay_of", "fresh_context"])
def test_replay_launchpad_fields_are_reserved_param_names(stamp: StampIntent, name: str) -> None:
    """A param named like a replay launchpad field is refused (exit 3) instead of being shadowed by it."""
    stamp.intent_file.write_text(stamp.intent_file.read_text().replace("  n: {", f"  {name}: {{type: string}}\n  n: {{"))
    code, out, _ = invoke_cli("validate", str(stamp.intent_file))
    assert code == 3
    assert f"param name {name!r} is reserved for the launchpad" in out


def test_a_request_refused_before_it_started_cannot_be_replayed_and_says_what_to_do(stamp: StampIntent) -> None:
    """Replaying a request refused in preflight (bad param) exits 2 with one line naming `intent run`."""
    code, out, err = invoke_cli("run", "stamp", "-p", "n=9", "--json")
    assert code != 0, out
    refused = json.loads(out)
    assert refused["status"] == "REFUSED"
    code, out, err = invoke_cli("replay", refused["request_id"])
    assert code == 2 and "Traceback" not in err
    assert error_lines(err) == [f"error: request {refused['request_id']} was refused before it started, so it "
                                "has no params to replay. Start a new request: `intent run stamp -p NAME=VALUE ...`."]
