import json
import time
from pathlib import Path

import dagster as dg
import pytest

from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome
from intent_pipelines.status import RequestStatus
from intent_pipelines.testing import run_intent, wait_for


def write_intent(directory: Path, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    name = text.split("name:", 1)[1].split()[0]
    (directory / f"{name}.yaml").write_text(text)


@pytest.fixture
def user_intents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_home: IntentHome) -> Path:
    directory = tmp_path / "intents"
    directory.mkdir()
    monkeypatch.setenv("INTENTS_PATH", str(directory))
    return directory


def audit_kinds(engine: Engine, request_id: str) -> list[str]:
    return [r.kind for r in engine.store.audit_records(request_id=request_id)]


def test_step_outputs_flow_to_later_templates(user_intents: Path, instance: dg.DagsterInstance,
                                              engine: Engine) -> None:
    """A value a step writes to $INTENT_OUTPUT is rendered into a later step's argv."""
    out = user_intents / "seen.txt"
    write_intent(user_intents, f"""
name: outputs-demo
summary: pass a value between steps
steps:
  - id: produce
    run: "echo version=7.1 >> \\"$INTENT_OUTPUT\\""
    shell: true
  - id: consume
    needs: [produce]
    run: [python3, -c, "import sys; open('{out}', 'w').write(sys.argv[1])", "{{{{ steps.produce.outputs.version }}}}"]
""")
    result, request = run_intent("outputs-demo", {}, instance)
    assert result.success
    assert request["status"] == "SUCCEEDED"
    assert out.read_text() == "7.1"


@pytest.mark.parametrize("step_id", ["copy", "items"])
def test_a_step_named_like_a_dict_method_passes_its_outputs(user_intents: Path, instance: dg.DagsterInstance,
                                                           engine: Engine, step_id: str) -> None:
    """``steps.copy.outputs.x`` reads the step called copy (not dict.copy) when the request runs."""
    out = user_intents / "seen.txt"
    write_intent(user_intents, f"""
name: shadow-demo
summary: a step id that is also a dict method
steps:
  - id: {step_id}
    run: "echo version=7.2 >> \\"$INTENT_OUTPUT\\""
    shell: true
  - id: consume
    needs: [{step_id}]
    run: [python3, -c, "import sys; open('{out}', 'w').write(sys.argv[1])", "{{{{ steps.{step_id}.outputs.version }}}}"]
""")
    result, request = run_intent("shadow-demo", {}, instance)
    assert result.success and request["status"] == "SUCCEEDED"
    assert out.read_text() == "7.2"


def test_transient_failure_is_retried_with_growing_backoff(user_intents: Path,
                                                           instance: dg.DagsterInstance,
                                                           engine: Engine) -> None:
    """A step failing with 'Connection refused' is retried with exponential backoff until it passes."""
    counter = user_intents / "attempts"
    write_intent(user_intents, f"""
name: flaky-net
summary: fails twice with a transient error
steps:
  - id: call
    run: [python3, -c, "import sys; p='{counter}'; open(p,'a').write('x'); n=len(open(p).read()); print('curl: (7) Failed to connect: Connection refused') if n < 3 else None; sys.exit(1 if n < 3 else 0)"]
    retry: {{attempts: 4, delay: 0.3, backoff: 2, jitter: 0}}
""")
    started = time.monotonic()
    result, request = run_intent("flaky-net", {}, instance)
    elapsed = time.monotonic() - started
    assert result.success and request["status"] == "SUCCEEDED"
    assert counter.read_text() == "xxx"
    retries = [r.data() for r in engine.store.audit_records(request_id=result.run_id) if r.kind == "step.retry"]
    assert [r["wait_ms"] for r in retries] == [300, 600]
    assert all(r["class"] == "transient" for r in retries)
    assert elapsed >= 0.9, "the backoff waits were not observed"


def test_deterministic_failure_is_not_retried(user_intents: Path, instance: dg.DagsterInstance,
                                              engine: Engine) -> None:
    """A deterministic failure fails the request at once even when retries are configured."""
    counter = user_intents / "attempts"
    write_intent(user_intents, f"""
name: broken-script
summary: fails deterministically
steps:
  - id: call
    run: [python3, -c, "import sys; open('{counter}','a').write('x'); print('SyntaxError: invalid syntax'); sys.exit(2)"]
    retry: {{attempts: 3, delay: 0.1}}
""")
    result, request = run_intent("broken-script", {}, instance)
    assert not result.success
    assert counter.read_text() == "x"
    assert request["status"] == "FAILED"
    assert request["exit_code"] == 10
    kinds = audit_kinds(engine, result.run_id)
    assert "step.retry" not in kinds and kinds[-1] == "request.complete"
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    metadata = failure.step_failure_data.user_failure_data.metadata
    assert metadata["process_exit_code"].value == 2
    assert "SyntaxError" in metadata["stderr_tail"].value


def test_timeout_kills_the_step_and_fails_the_request(user_intents: Path, instance: dg.DagsterInstance,
                                                      engine: Engine) -> None:
    """A step past its timeout is killed (process group) and the request fails as a timeout."""
    write_intent(user_intents, """
name: hangs
summary: sleeps past its timeout
steps:
  - id: wait
    run: [sleep, "30"]
    timeout: 1
""")
    started = time.monotonic()
    result, request = run_intent("hangs", {}, instance)
    assert not result.success
    assert time.monotonic() - started < 15
    assert request["status"] == "FAILED"
    assert request["exit_code"] == 11
    assert "timed out after 1s" in request["error"]


def test_rollback_runs_in_reverse_completion_order(user_intents: Path, instance: dg.DagsterInstance,
                                                   engine: Engine) -> None:
    """When a step fails for good, completed steps are undone last-completed first."""
    undo = user_intents / "undo.log"
    step = """
  - id: {sid}
    {needs}
    run: [true]
    rollback:
      run: [python3, -c, "open('{undo}','a').write('{sid}\\\\n')"]"""
    steps = "".join(step.format(sid=s, needs=f"needs: [{n}]" if n else "", undo=undo)
                    for s, n in (("one", ""), ("two", "one"), ("three", "two")))
    write_intent(user_intents, f"""
name: undo-demo
summary: three steps then a failure
steps:{steps}
  - id: boom
    needs: [three]
    run: [false]
""")
    result, request = run_intent("undo-demo", {}, instance)
    assert not result.success
    assert undo.read_text().split() == ["three", "two", "one"]
    assert request["status"] == "ROLLED_BACK" and request["exit_code"] == 12
    kinds = audit_kinds(engine, result.run_id)
    assert kinds.count("rollback.complete") == 3


def test_failed_rollback_ends_rollback_failed(user_intents: Path, instance: dg.DagsterInstance,
                                              engine: Engine) -> None:
    """A rollback that fails itself leaves the request ROLLBACK_FAILED (exit 13)."""
    write_intent(user_intents, """
name: bad-undo
summary: the rollback fails too
steps:
  - id: change
    run: [true]
    rollback: {run: [false]}
  - id: boom
    needs: [change]
    run: [false]
""")
    result, request = run_intent("bad-undo", {}, instance)
    assert request["status"] == "ROLLBACK_FAILED" and request["exit_code"] == 13


def test_lock_held_by_live_request_fails_fast_naming_holder(user_intents: Path,
                                                            instance: dg.DagsterInstance,
                                                            engine: Engine) -> None:
    """A second request for a held lock fails in preflight, names the holder and runs no step."""
    marker = user_intents / "ran"
    write_intent(user_intents, f"""
name: locked
summary: takes a lock
params:
  target: {{type: string, default: a}}
policy:
  lock: "thing:{{{{ params.target }}}}"
steps:
  - id: work
    run: [touch, "{marker}"]
""")
    engine.store.acquire_lock("thing:a", request_id="other-request", run_id="other-run", ttl_s=300)
    result, request = run_intent("locked", {}, instance)
    assert not result.success
    assert request["status"] == "REFUSED" and request["exit_code"] == 7
    assert "held by request other-request" in request["error"]
    assert not marker.exists()
    engine.store.release_lock("thing:a", request_id="other-request")
    result, request = run_intent("locked", {}, instance)
    assert result.success and marker.exists()
    assert engine.store.lock_holder("thing:a") is None, "the lock must be released at the end"


def test_secret_params_never_reach_audit_or_store(user_intents: Path, instance: dg.DagsterInstance,
                                                  engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret param is read from the environment, used by the step, and redacted everywhere."""
    out = user_intents / "token-used"
    monkeypatch.setenv("INTENT_SECRET_TOKEN", "s3cr3t-value")
    write_intent(user_intents, f"""
name: with-secret
summary: uses a secret
params:
  token: {{type: string, secret: true, required: true}}
steps:
  - id: use
    run: [python3, -c, "import sys; open('{out}','w').write(sys.argv[1])", "{{{{ params.token }}}}"]
""")
    result, request = run_intent("with-secret", {}, instance)
    assert result.success
    assert out.read_text() == "s3cr3t-value"
    assert "s3cr3t-value" not in json.dumps(request, default=str)
    for record in engine.store.audit_records(request_id=result.run_id):
        assert b"s3cr3t-value" not in record.body
    assert request["params"]["token"] == "***"  # no digest: a hash of a short secret is a brute-force oracle
    step_log = IntentHome.from_env().step_log(result.run_id, "use").read_text()
    assert "s3cr3t-value" not in step_log and "***" in step_log


def test_reexecution_from_failure_continues_the_same_request(user_intents: Path, tmp_path: Path,
                                                             instance: dg.DagsterInstance,
                                                             engine: Engine) -> None:
    """Re-executing a failed run from failure completes the same request without re-running done steps."""
    flag, count = user_intents / "flag", user_intents / "count"
    write_intent(user_intents, f"""
name: resumable
summary: second step fails until a flag exists
policy:
  lock: resumable
steps:
  - id: first
    run: [python3, -c, "open('{count}','a').write('x')"]
  - id: second
    needs: [first]
    run: [python3, -c, "import os,sys; sys.exit(0 if os.path.exists('{flag}') else 3)"]
""")
    job = dg.build_reconstructable_job("intent_pipelines.dagster_defs.jobs", "job_for",
                                       reconstructable_args=("resumable",))
    first = dg.execute_job(job, instance=instance, run_config={})
    assert not first.success
    assert engine.store.request(first.run_id)["status"] == "FAILED"
    assert engine.store.lock_holder("resumable") is None, "a failed request releases its lock"
    flag.touch()
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    second = dg.execute_job(job, instance=instance, reexecution_options=options)
    assert second.success
    request = engine.store.request(first.run_id)
    assert request["status"] == "SUCCEEDED" and request["run_id"] == second.run_id
    assert count.read_text() == "x", "the finished step ran again"
    kinds = audit_kinds(engine, first.run_id)
    assert "request.resume" in kinds and kinds[-1] == "request.complete"


def test_a_lost_lease_stops_the_step_without_rollback(user_intents: Path, instance: dg.DagsterInstance,
                                                      engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the lease cannot be renewed (someone took the lock), the step is stopped: FAILED, lease_lost, no undo."""
    import threading

    monkeypatch.setenv("INTENT_LOCK_TTL_S", "4")  # renew every second
    undo = user_intents / "undone"
    write_intent(user_intents, f"""
name: long-hold
summary: holds a lock while it sleeps
policy: {{lock: long-hold}}
steps:
  - id: first
    run: [true]
    rollback: {{run: [touch, "{undo}"]}}
  - id: hold
    needs: [first]
    run: [sleep, "60"]
""")

    def steal() -> None:
        store = engine.store
        holder = wait_for(lambda: store.lock_holder("long-hold") if any(
            s["step_id"] == "hold" and s["status"] == "RUNNING" for r in store.requests_by_status(
                RequestStatus.RUNNING) for s in store.steps(r["request_id"])) else None, timeout=30,
            what="the hold step to run")
        store.release_lock("long-hold", request_id=holder.request_id)
        store.acquire_lock("long-hold", request_id="intruder", run_id="intruder", ttl_s=60)

    thief = threading.Thread(target=steal)
    thief.start()
    started = time.monotonic()
    result, request = run_intent("long-hold", {}, instance)
    thief.join(timeout=30)
    assert time.monotonic() - started < 30
    assert (request["status"], request["reason_code"], request["exit_code"]) == ("FAILED", "lease_lost", 19)
    assert not undo.exists(), "nothing may be rolled back without the lock"
    kinds = audit_kinds(engine, result.run_id)
    assert "lock.lost" in kinds and "rollback.start" not in kinds and "run.cancelled" not in kinds
    assert engine.store.lock_holder("long-hold").request_id == "intruder"
