"""Tests of the execution plan: DAG levels, critical path, plan hash, policy, secrets, placeholders."""

import hashlib
import json
import textwrap
from typing import Any

import pytest

from intent_pipelines.errors import PolicyDenied
from intent_pipelines.plan import ExecutionPlan, build_plan, critical_path, dag_levels
from intent_pipelines.spec.loader import BUNDLED_DIR, parse_intent
from intent_pipelines.spec.params import redact, resolve_params

DIAMOND = textwrap.dedent("""
    name: diamond
    summary: a fans out to b and c, which join in d
    params:
      app: {type: string, required: true}
      env: {type: string, default: dev, enum: [dev, staging, prod]}
      slow: {type: string, default: b, enum: [b, c]}
    policy:
      confirm: "params.env == 'prod'"
      lock: "app:{{ params.app }}"
      deny:
        - when: "params.env == 'prod' and params.app == 'scratch'"
          reason: scratch apps never go to prod
    steps:
      - id: a
        run: [echo, "{{ params.app }}"]
        timeout: 10
      - id: b
        needs: [a]
        run: [sleep, "1"]
        timeout: 100
      - id: c
        needs: [a]
        run: [sleep, "1"]
        timeout: 50
      - id: d
        needs: [b, c]
        run: [echo, done]
    """)


def plan_for(text: str, params: dict[str, Any], *, sha: str = "0" * 64, environ: dict[str, str] | None = None,
             app: dict[str, Any] | None = None) -> ExecutionPlan:
    """Parse, resolve and redact params, then build the plan, the way the engine does."""
    spec = parse_intent(text, "inline.yaml")
    values = redact(spec, resolve_params(spec, params, environ=environ or {}))
    return build_plan(spec, intent_sha256=sha, params=values, context={}, app=app)


def test_diamond_levels() -> None:
    """Steps with no needs are level 0 and a join sits one level below its deepest need."""
    plan = plan_for(DIAMOND, {"app": "hello"})
    assert plan.levels == (("a",), ("b", "c"), ("d",))
    assert {s.id: s.level for s in plan.steps} == {"a": 0, "b": 1, "c": 1, "d": 2}
    assert plan.step("d").needs == ("b", "c")


def test_critical_path_follows_the_heaviest_timeouts() -> None:
    """The critical path goes through the branch whose timeouts add up to the most."""
    plan = plan_for(DIAMOND, {"app": "hello"})
    assert plan.critical_path == ("a", "b", "d")
    swapped = DIAMOND.replace("timeout: 100", "timeout: 5")
    assert plan_for(swapped, {"app": "hello"}).critical_path == ("a", "c", "d")


def test_dag_levels_and_critical_path_on_plain_graphs() -> None:
    """dag_levels and critical_path work on any needs mapping; unset weights count as given."""
    needs = {"fetch": [], "lint": ["fetch"], "test": ["fetch"], "build": ["lint", "test"], "docs": []}
    assert dag_levels(needs) == {"fetch": 0, "lint": 1, "test": 1, "build": 2, "docs": 0}
    assert critical_path(needs, {"fetch": 1, "lint": 1, "test": 9, "build": 1, "docs": 2}) == [
        "fetch", "test", "build"]
    assert critical_path(needs, {"fetch": 1, "lint": 1, "test": 1, "build": 1, "docs": 50}) == ["docs"]
    assert critical_path({}, {}) == []


def test_plan_hash_is_stable_across_builds() -> None:
    """Two plans built from the same inputs have the same 64-hex hash."""
    first = plan_for(DIAMOND, {"app": "hello"})
    second = plan_for(DIAMOND, {"app": "hello"})
    assert first is not second
    assert first.plan_hash == second.plan_hash
    assert len(first.plan_hash) == 64 and int(first.plan_hash, 16) >= 0


@pytest.mark.parametrize("change", [
    {"params": {"app": "other"}},
    {"params": {"app": "hello", "env": "staging"}},
    {"sha": "1" * 64},
])
def test_plan_hash_changes_with_the_inputs(change: dict[str, Any]) -> None:
    """A different param value or intent file gives a different plan hash."""
    base = plan_for(DIAMOND, {"app": "hello"})
    changed = plan_for(DIAMOND, change.get("params", {"app": "hello"}), sha=change.get("sha", "0" * 64))
    assert changed.plan_hash != base.plan_hash


SECRET_INTENT = textwrap.dedent("""
    name: secret-user
    summary: passes a token to a shell step
    params:
      app: {type: string, required: true}
      token: {type: string, secret: true, required: true}
    steps:
      - id: push
        run: "deploy --app {{ params.app }} --token {{ params.token }}"
        shell: true
        env:
          TOKEN: "{{ params.token }}"
    """)


def test_secrets_never_reach_the_plan_or_its_hash() -> None:
    """A secret appears in the plan (params, argv, env, hash input) only as ***."""
    secret = "s3cr3t-Value-9"
    plan = plan_for(SECRET_INTENT, {"app": "hello"}, environ={"INTENT_SECRET_TOKEN": secret})
    data = plan.to_dict()
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    assert secret not in canonical
    assert plan.plan_hash == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    redacted = data["params"]["token"]
    assert redacted == "***"
    assert redacted in plan.step("push").call.argv[-1]
    assert plan.step("push").call.env == {"TOKEN": redacted}


def test_the_plan_hash_does_not_depend_on_the_secret() -> None:
    """The plan hash is the same whatever the secret is: nothing derived from it can be brute-forced."""
    def hash_for(secret: str) -> str:
        return plan_for(SECRET_INTENT, {"app": "hello"}, environ={"INTENT_SECRET_TOKEN": secret}).plan_hash

    assert hash_for("one") == hash_for("two")


def test_deny_rule_refuses_before_anything_is_planned() -> None:
    """A matching deny rule raises PolicyDenied (exit 5) carrying the rule's reason."""
    with pytest.raises(PolicyDenied) as caught:
        plan_for(DIAMOND, {"app": "scratch", "env": "prod"})
    assert caught.value.exit_code == 5
    assert caught.value.message == "diamond refused by policy: scratch apps never go to prod"
    assert plan_for(DIAMOND, {"app": "scratch", "env": "dev"}).intent == "diamond"


@pytest.mark.parametrize(("env", "required"), [("prod", True), ("staging", False), ("dev", False)])
def test_confirm_expression_is_evaluated_against_params(env: str, required: bool) -> None:
    """`policy.confirm` is an expression: only the params it matches require --confirm."""
    assert plan_for(DIAMOND, {"app": "hello", "env": env}).confirm_required is required


def test_lock_target_is_rendered() -> None:
    """The lock template is rendered with the request's params."""
    assert plan_for(DIAMOND, {"app": "hello"}).lock == "app:hello"


CONDITIONAL = textwrap.dedent("""
    name: conditional
    summary: steps that may be skipped
    params:
      migrate: {type: boolean, default: true}
    steps:
      - id: build
        uses: app.build
        with: {app: hello}
      - id: migrate
        needs: [build]
        when: "params.migrate"
        run: [echo, migrate]
      - id: announce
        needs: [build]
        when: "steps.build.outputs.changed"
        run: [echo, "{{ steps.build.outputs.release }}"]
      - id: switch
        needs: [build]
        uses: app.switch
        with: {app: hello, release: "{{ steps.build.outputs.release }}"}
        rollback:
          uses: app.rollback
          with: {app: hello, release: "{{ steps.build.outputs.previous }}"}
    """)


def test_when_false_is_recorded_in_the_plan() -> None:
    """A `when` that is false at plan time is recorded as False; one that holds as True."""
    assert plan_for(CONDITIONAL, {"migrate": "false"}).step("migrate").when is False
    assert plan_for(CONDITIONAL, {"migrate": "true"}).step("migrate").when is True
    assert plan_for(CONDITIONAL, {}).step("build").when is True


def test_when_reading_step_outputs_is_decided_at_run_time() -> None:
    """A `when` reading step outputs cannot be decided at plan time and is recorded as None."""
    assert plan_for(CONDITIONAL, {}).step("announce").when is None


def test_step_output_templates_show_placeholders_at_plan_time() -> None:
    """Templates reading step outputs render as <steps.x.outputs.y> and mark the step deferred."""
    plan = plan_for(CONDITIONAL, {})
    switch = plan.step("switch")
    assert switch.call.inputs == {"app": "hello", "release": "<steps.build.outputs.release>"}
    assert switch.deferred is True
    assert switch.rollback is not None
    assert switch.rollback.inputs["release"] == "<steps.build.outputs.previous>"
    assert plan.step("announce").call.argv == ("echo", "<steps.build.outputs.release>")
    assert plan.step("migrate").deferred is False
    assert plan.step("build").deferred is False


def test_shell_steps_run_through_sh_with_quoted_values() -> None:
    """A `shell: true` step plans as /bin/sh -c with every interpolated value shell-quoted."""
    text = textwrap.dedent("""
        name: shell-step
        summary: s
        params:
          app: {type: string, required: true}
        steps:
          - id: push
            run: "deploy --app {{ params.app }}"
            shell: true
        """)
    call = plan_for(text, {"app": "x; rm -rf /"}).step("push").call
    assert call.kind == "shell"
    assert call.argv == ("/bin/sh", "-c", "deploy --app 'x; rm -rf /'")


def test_plan_dict_is_plain_json() -> None:
    """to_dict() is plain data: it round-trips through JSON, retry settings included."""
    plan = plan_for(DIAMOND, {"app": "hello"})
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["levels"] == [["a"], ["b", "c"], ["d"]]
    assert data["steps"][0]["call"]["argv"] == ["echo", "hello"]
    assert data["steps"][0]["retry"] == {"attempts": 1, "delay": 1.0, "backoff": 2.0, "jitter": 0.1,
                                         "on": "transient"}


def test_bundled_deploy_plan_defers_release_and_denies_prod_head() -> None:
    """The bundled deploy-app intent plans with a release placeholder and refuses prod at HEAD."""
    text = (BUNDLED_DIR / "deploy-app.yaml").read_text(encoding="utf-8")
    plan = plan_for(text, {"app": "hello-api", "ref": "v1.2.0", "env": "prod"},
                    app={"source": "/srv/hello", "database": ""})
    assert plan.confirm_required is True
    assert plan.step("switch").call.inputs["release"] == "<steps.build.outputs.release>"
    assert plan.step("migrate").when is False
    assert plan.levels == (("build",), ("switch",), ("migrate",), ("restart",))
    with pytest.raises(PolicyDenied):
        plan_for(text, {"app": "hello-api", "env": "prod"}, app={"source": "/srv/hello", "database": ""})
