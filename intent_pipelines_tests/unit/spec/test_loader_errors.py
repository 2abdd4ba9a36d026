"""Tests of intent file validation: every bad file is refused with file:line:field and what is wrong."""

import textwrap
from pathlib import Path

import pytest
import yaml

from intent_pipelines.errors import SpecError
from intent_pipelines.retries import RetryOn
from intent_pipelines.spec.loader import (
    BUNDLED_DIR,
    IntentCatalog,
    IntentYamlLoader,
    load_intent_file,
    parse_intent,
)

MARK = "# <-"


def intent(body: str) -> str:
    """A dedented intent text; the line the error must point at carries a ``# <-`` comment."""
    return textwrap.dedent(body).lstrip("\n")


def marked_line(text: str) -> int:
    lines = [number for number, line in enumerate(text.splitlines(), start=1) if MARK in line]
    assert len(lines) == 1, "each bad intent marks exactly one line"
    return lines[0]


# (case id, intent text, field path the error names, fragment saying what is wrong)
BAD_INTENTS = [
    ("default-outside-enum", """
        name: demo
        summary: s
        params:
          env:
            enum: [prod, staging]
            default: qa  # <-
        steps:
          - id: a
            run: [echo]
        """, "params.env.default", "'qa' is not allowed"),
    ("default-breaks-pattern", """
        name: demo
        summary: s
        params:
          app:
            pattern: "^[a-z-]+$"
            default: Hello_API  # <-
        steps:
          - id: a
            run: [echo]
        """, "params.app.default", "does not match"),
    ("default-below-min", """
        name: demo
        summary: s
        params:
          replicas:
            type: integer
            min: 1
            default: 0  # <-
        steps:
          - id: a
            run: [echo]
        """, "params.replicas.default", "below the minimum 1"),
    ("default-of-the-wrong-type", """
        name: demo
        summary: s
        params:
          replicas:
            type: integer
            default: many  # <-
        steps:
          - id: a
            run: [echo]
        """, "params.replicas.default", "is not a valid integer"),
    ("unknown-top-level-key", """
        name: demo
        summary: s
        stepz: []  # <-
        steps:
          - id: a
            run: [echo]
        """, "stepz", "unknown key 'stepz'"),
    ("unknown-step-key-typo-need", """
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
          - id: b
            need: [a]  # <-
            run: [echo]
        """, "steps[1].need", "unknown key 'need'"),
    ("duplicate-step-id", """
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
          - id: a  # <-
            run: [echo]
        """, "steps[1].id", "duplicate step id 'a' (also steps[0])"),
    ("unknown-needs", """
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
            needs:
              - bild  # <-
        """, "steps[0].needs[0]", "needs unknown step 'bild'"),
    ("self-need", """
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
            needs:
              - a  # <-
        """, "steps[0].needs[0]", "a step cannot need itself"),
    ("two-cycle", """
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
            needs: [b]  # <-
          - id: b
            run: [echo]
            needs: [a]
        """, "steps[0].needs", "steps form a cycle: a -> b -> a"),
    ("three-cycle", """
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
            needs: [c]  # <-
          - id: b
            run: [echo]
            needs: [a]
          - id: c
            run: [echo]
            needs: [b]
        """, "steps[0].needs", "steps form a cycle: a -> c -> b -> a"),
    ("undefined-param", """
        name: demo
        summary: s
        params:
          app: {type: string}
        steps:
          - id: a
            run:
              - echo
              - "{{ params.ap }}"  # <-
        """, "steps[0].run[1]", "undefined param 'ap'"),
    ("undefined-step", """
        name: demo
        summary: s
        steps:
          - id: a
            run:
              - echo
              - "{{ steps.bild.outputs.release }}"  # <-
        """, "steps[0].run[1]", "undefined step 'bild'"),
    ("step-output-not-upstream", """
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
          - id: b
            run:
              - echo
              - "{{ steps.c.outputs.sha }}"  # <-
          - id: c
            run: [echo]
        """, "steps[1].run[1]", "step 'c' is not upstream here (add it to `needs`)"),
    ("deny-reads-step-outputs", """
        name: demo
        summary: s
        policy:
          deny:
            - when: "steps.a.outputs.bad"  # <-
              reason: never
        steps:
          - id: a
            run: [echo]
        """, "policy.deny[0].when", "step 'a' is not upstream here"),
    ("undefined-context", """
        name: demo
        summary: s
        steps:
          - id: a
            run:
              - echo
              - "{{ context.git_sha }}"  # <-
        """, "steps[0].run[1]", "undefined context value 'git_sha'"),
    ("unknown-top-level-template-name", """
        name: demo
        summary: s
        steps:
          - id: a
            run:
              - echo
              - "{{ parms.app }}"  # <-
        """, "steps[0].run[1]", "unknown name 'parms'"),
    ("app-without-app-param", """
        name: demo
        summary: s
        steps:
          - id: a
            run:
              - ls
              - "{{ app.source }}"  # <-
        """, "steps[0].run[1]", "`app` is used but the intent has no `app` param"),
    ("name-uppercase", """
        name: Deploy-App  # <-
        summary: s
        steps:
          - id: a
            run: [echo]
        """, "name", "String should match pattern"),
    ("name-underscore", """
        name: deploy_app  # <-
        summary: s
        steps:
          - id: a
            run: [echo]
        """, "name", "String should match pattern"),
    ("invalid-step-id", """
        name: demo
        summary: s
        steps:
          - id: Build-It  # <-
            run: [echo]
        """, "steps[0].id", "String should match pattern '^[a-z][a-z0-9_]*$'"),
    ("string-run-without-shell", """
        name: demo
        summary: s
        steps:
          - id: a  # <-
            run: echo hello
        """, "steps[0]", "`run` is a string but `shell: true` is not set"),
    ("shell-with-argv-run", """
        name: demo
        summary: s
        steps:
          - id: a  # <-
            run: [echo, hello]
            shell: true
        """, "steps[0]", "`shell: true` needs `run` to be a single string"),
    ("both-run-and-uses", """
        name: demo
        summary: s
        steps:
          - id: a  # <-
            run: [echo]
            uses: app.stop
            with: {app: hello}
        """, "steps[0]", "give exactly one of `run` (a command) or `uses` (an action)"),
    ("neither-run-nor-uses", """
        name: demo
        summary: s
        steps:
          - id: a  # <-
            name: does nothing
        """, "steps[0]", "give exactly one of `run` (a command) or `uses` (an action)"),
    ("with-on-a-run-step", """
        name: demo
        summary: s
        steps:
          - id: a  # <-
            run: [echo]
            with: {app: hello}
        """, "steps[0]", "`with` applies only to `uses` actions"),
    ("unknown-action", """
        name: demo
        summary: s
        steps:
          - id: a
            uses: app.explode  # <-
        """, "steps[0].uses", "unknown action 'app.explode'"),
    ("unknown-with-key", """
        name: demo
        summary: s
        steps:
          - id: a
            uses: app.stop
            with:
              app: hello
              force: true  # <-
        """, "steps[0].with.force", "action app.stop has no input 'force'"),
    ("missing-required-action-input", """
        name: demo
        summary: s
        steps:
          - id: a
            uses: app.scale
            with:  # <-
              app: hello
        """, "steps[0].with", "action app.scale needs input 'replicas'"),
    ("bad-regex-pattern", """
        name: demo
        summary: s
        params:
          app:
            pattern: "[a-"  # <-
        steps:
          - id: a
            run: [echo]
        """, "params.app.pattern", "pattern is not a valid regular expression"),
    ("required-with-default", """
        name: demo
        summary: s
        params:
          app:  # <-
            required: true
            default: hello
        steps:
          - id: a
            run: [echo]
        """, "params.app", "cannot be both required and have a default"),
    ("secret-with-default", """
        name: demo
        summary: s
        params:
          token:  # <-
            secret: true
            default: hunter2
        steps:
          - id: a
            run: [echo]
        """, "params.token", "a secret param cannot have a default"),
    ("min-max-on-string", """
        name: demo
        summary: s
        params:
          app:  # <-
            type: string
            min: 1
        steps:
          - id: a
            run: [echo]
        """, "params.app", "min/max apply only to integer and number params"),
    ("pattern-on-integer", """
        name: demo
        summary: s
        params:
          replicas:  # <-
            type: integer
            pattern: "^[0-9]+$"
        steps:
          - id: a
            run: [echo]
        """, "params.replicas", "pattern applies only to string params"),
    ("unknown-param-type", """
        name: demo
        summary: s
        params:
          replicas:
            type: int  # <-
        steps:
          - id: a
            run: [echo]
        """, "params.replicas.type", "Input should be 'string', 'integer', 'number', 'boolean' or 'list'"),
    # The name check runs over the whole params mapping, so it points at `params:` and names the param.
    ("reserved-param-name", """
        name: demo
        summary: s
        params:  # <-
          dry_run: {type: boolean}
        steps:
          - id: a
            run: [echo]
        """, "params", "param name 'dry_run' is reserved"),
    ("duplicate-yaml-key", """
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
            timeout: 10
            timeout: 20  # <-
        """, "steps[0]", "duplicate key 'timeout'"),
    ("invalid-yaml-syntax", """
        name: demo
        summary: s
        steps:
          - id: a
             run: [echo]  # <-
        """, "", "not valid YAML: mapping values are not allowed"),
    ("not-a-mapping", """
        - name: demo  # <-
        - summary: s
        """, "", "an intent file must be a YAML mapping"),
    ("sh-c-argv-interpolates-template", """
        name: demo
        summary: s
        params:
          app: {}
        steps:
          - id: a
            run:
              - sh
              - -c
              - "echo {{ params.app }}"  # <-
        """, "steps[0].run[2]", "a shell script in an argv interpolates templates unquoted"),
    ("template-syntax-error", """
        name: demo
        summary: s
        params:
          app: {}
        steps:
          - id: a
            run:
              - echo
              - "{{ params.app "  # <-
        """, "steps[0].run[1]", "template syntax error"),
    ("bad-retry-on", """
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
            retry:
              attempts: 3
              on: sometimes  # <-
        """, "steps[0].retry.on", "Input should be 'transient', 'any' or 'never'"),
    ("duplicate-verify-id", """
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
        verify:
          - id: health
            run: [echo]
          - id: health  # <-
            run: [echo]
        """, "verify[1].id", "duplicate verify id 'health' (also verify[0])"),
    ("missing-summary", """
        name: demo  # <-
        steps:
          - id: a
            run: [echo]
        """, "summary", "Field required"),
]


@pytest.mark.parametrize(("text", "field", "problem"), [pytest.param(intent(t), f, p, id=i)
                                                        for i, t, f, p in BAD_INTENTS])
def test_bad_intent_names_line_field_and_problem(text: str, field: str, problem: str) -> None:
    """Each invalid intent file is refused with a one-line SpecError naming its line, field and problem."""
    with pytest.raises(SpecError) as caught:
        parse_intent(text, "bad.yaml")
    error = caught.value
    line = marked_line(text)
    assert error.path == "bad.yaml"
    assert error.line == line
    assert error.field_path == field
    assert problem in error.message
    prefix = f"bad.yaml:{line}: {field}: " if field else f"bad.yaml:{line}: "
    assert error.message.startswith(prefix)
    assert error.exit_code == 3
    assert error.hint
    assert "\n" not in error.one_line()


def test_bad_intent_cases_are_distinct() -> None:
    """The table of bad intents has no two cases with the same id or the same text."""
    assert len({case[0] for case in BAD_INTENTS}) == len(BAD_INTENTS)
    assert len({case[1] for case in BAD_INTENTS}) == len(BAD_INTENTS)
    assert len(BAD_INTENTS) >= 20


def test_unknown_needs_hint_lists_known_steps() -> None:
    """An unknown `needs` entry is answered with the step ids that do exist."""
    text = intent("""
        name: demo
        summary: s
        steps:
          - id: build
            run: [echo]
          - id: deploy
            run: [echo]
            needs: [bild]
        """)
    with pytest.raises(SpecError) as caught:
        parse_intent(text)
    assert caught.value.hint == "Known steps: build, deploy."


def test_undefined_param_hint_lists_declared_params() -> None:
    """A template naming an undeclared param is answered with the params that are declared."""
    text = intent("""
        name: demo
        summary: s
        params:
          app: {}
          ref: {}
        steps:
          - id: a
            run: [echo, "{{ params.branch }}"]
        """)
    with pytest.raises(SpecError) as caught:
        parse_intent(text)
    assert caught.value.hint == "Declared params: app, ref."


def test_rollback_may_read_its_own_steps_outputs() -> None:
    """A rollback reads the outputs of the step it undoes without that step being in `needs`."""
    spec = parse_intent(intent("""
        name: demo
        summary: s
        steps:
          - id: switch
            run: [echo]
            rollback:
              run: [echo, "{{ steps.switch.outputs.previous }}"]
        """))
    assert spec.steps[0].rollback is not None


def test_verify_may_read_any_steps_outputs() -> None:
    """Verify checks run after every step, so they may read any step's outputs."""
    spec = parse_intent(intent("""
        name: demo
        summary: s
        steps:
          - id: a
            run: [echo]
          - id: b
            run: [echo]
        verify:
          - id: check
            run: [test, "{{ steps.a.outputs.x }}", "=", "{{ steps.b.outputs.y }}"]
        """))
    assert [c.id for c in spec.verify] == ["check"]


def test_template_set_and_loop_variables_are_not_unknown_names() -> None:
    """Names bound inside a template (for, set) are not reported as unknown namespaces."""
    spec = parse_intent(intent("""
        name: demo
        summary: s
        params:
          hosts: {type: list}
        steps:
          - id: a
            run:
              - echo
              - "{% set sep = ',' %}{% for h in params.hosts %}{{ h }}{{ sep }}{% endfor %}"
        """))
    assert spec.steps[0].id == "a"


BUNDLED = sorted(BUNDLED_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_intent_parses(path: Path) -> None:
    """Every intent shipped with the package is valid and named after its file."""
    loaded = load_intent_file(path)
    assert loaded.spec.name == path.stem
    assert len(loaded.sha256) == 64


def test_bundled_catalog_loads_without_problems() -> None:
    """Discovering only the bundled directory finds every bundled intent and reports no problems."""
    problems: list[SpecError] = []
    catalog = IntentCatalog.discover([BUNDLED_DIR], problems=problems)
    assert problems == []
    assert sorted(catalog.intents) == [p.stem for p in BUNDLED]
    assert catalog.get("deploy").spec.name == "deploy-app"


def test_on_key_stays_a_string_with_yaml_1_2_booleans() -> None:
    """`on:`, `yes` and `no` stay strings (YAML 1.2), so `retry: {on: ...}` and enums of them work."""
    text = intent("""
        name: demo
        summary: s
        params:
          answer: {enum: [yes, no, on, off]}
        steps:
          - id: a
            run: [echo]
            retry: {attempts: 2, on: never}
        """)
    raw = yaml.load(text, Loader=IntentYamlLoader)  # noqa: S506 - a SafeLoader subclass
    assert list(raw["steps"][0]["retry"]) == ["attempts", "on"]
    spec = parse_intent(text)
    assert spec.steps[0].retry.on is RetryOn.NEVER
    assert spec.params["answer"].enum == ["yes", "no", "on", "off"]
    assert yaml.load("flag: true\nother: False\n", Loader=IntentYamlLoader) == {"flag": True, "other": False}
