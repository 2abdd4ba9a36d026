"""Tests of param values: coercion from CLI strings, schema checks, secrets from the env, redaction."""

import textwrap
from typing import Any

import pytest

from intent_pipelines.errors import ParamError, UsageError
from intent_pipelines.spec.loader import parse_intent
from intent_pipelines.spec.models import IntentSpec
from intent_pipelines.spec.params import REDACTED, parse_assignments, redact, resolve_params

SPEC_TEXT = textwrap.dedent("""
    name: demo
    summary: every kind of param
    params:
      app: {type: string, required: true, pattern: "^[a-z][a-z0-9-]*$"}
      env: {type: string, default: dev, enum: [dev, staging, prod]}
      replicas: {type: integer, default: 1, min: 1, max: 10}
      ratio: {type: number, min: 0, max: 1}
      force: {type: boolean, default: false}
      hosts: {type: list}
      note: {type: string}
      token: {type: string, secret: true}
      db_password: {type: string, secret: true, required: true, env: DEPLOY_DB_PASSWORD}
    steps:
      - id: a
        run: [echo]
    """)

ENV = {"DEPLOY_DB_PASSWORD": "pg-pass-1"}


@pytest.fixture(scope="module")
def spec() -> IntentSpec:
    return parse_intent(SPEC_TEXT, "demo.yaml")


def resolve(spec: IntentSpec, environ: dict[str, str] | None = None, **given: Any) -> dict[str, Any]:
    return resolve_params(spec, {"app": "hello", **given}, environ=ENV if environ is None else environ)


@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("app", "hello-api", "hello-api"),
    ("note", "two words; and $(symbols)", "two words; and $(symbols)"),
    ("note", "", ""),
    ("replicas", "7", 7),
    ("replicas", " 3 ", 3),
    ("ratio", "0.25", 0.25),
    ("ratio", "1", 1.0),
    ("force", "true", True),
    ("force", "YES", True),
    ("force", "1", True),
    ("force", "on", True),
    ("force", "false", False),
    ("force", "No", False),
    ("force", "0", False),
    ("force", "off", False),
    ("hosts", "a, b ,c", ["a", "b", "c"]),
    ("hosts", "single", ["single"]),
    ("hosts", '["x", 1, "y z"]', ["x", "1", "y z"]),
])
def test_cli_strings_are_coerced_to_the_param_type(
    spec: IntentSpec, name: str, raw: str, expected: Any
) -> None:
    """A value given as a CLI string arrives as the declared type (int, float, bool, list, str)."""
    value = resolve(spec, **{name: raw})[name]
    assert value == expected
    assert type(value) is type(expected)


def test_defaults_fill_missing_params_and_optional_ones_are_none(spec: IntentSpec) -> None:
    """Params not given take their default; optional params without one are None."""
    values = resolve(spec)
    assert values == {"app": "hello", "env": "dev", "replicas": 1, "ratio": None, "force": False,
                      "hosts": None, "note": None, "token": None, "db_password": "pg-pass-1"}


def test_empty_string_for_a_typed_param_means_its_default(spec: IntentSpec) -> None:
    """`-p replicas=` on a non-string param falls back to the default instead of failing."""
    assert resolve(spec, replicas="")["replicas"] == 1


@pytest.mark.parametrize(("name", "raw", "problem", "expected_hint"), [
    ("replicas", "4.5", "'4.5' is not a valid integer", "replicas is an integer"),
    ("replicas", "many", "'many' is not a valid integer", ">= 1, <= 10"),
    ("ratio", "half", "'half' is not a valid number", "ratio is a number"),
    ("ratio", "nan", "'nan' is not a valid number", "<= 1"),
    ("force", "maybe", "'maybe' is not a valid boolean", "force is a boolean"),
    ("hosts", "[1, 2", "'[1, 2' is not a valid list", "hosts is a list"),
    ("hosts", "[a, b]", "'[a, b]' is not a valid list", "hosts is a list"),
    ("env", "qa", "'qa' is not allowed", "one of dev, staging, prod"),
    ("app", "Hello_API", "'Hello_API' does not match ^[a-z][a-z0-9-]*$", "matching ^[a-z][a-z0-9-]*$"),
    ("replicas", "0", "0 is below the minimum 1", ">= 1"),
    ("replicas", "11", "11 is above the maximum 10", "<= 10"),
    ("ratio", "1.5", "1.5 is above the maximum 1", "<= 1"),
    ("ratio", "-0.1", "-0.1 is below the minimum 0", ">= 0"),
])
def test_values_outside_the_schema_are_one_line_param_errors(
    spec: IntentSpec, name: str, raw: str, problem: str, expected_hint: str
) -> None:
    """A wrong type, enum, pattern or range is a ParamError (exit 4) on one line naming the param."""
    with pytest.raises(ParamError) as caught:
        resolve(spec, **{name: raw})
    error = caught.value
    assert error.exit_code == 4
    assert error.message == f"param {name!r}: {problem}"
    assert expected_hint in error.hint
    assert "\n" not in error.one_line()


def test_unknown_param_is_refused_with_the_known_ones(spec: IntentSpec) -> None:
    """A param the intent does not declare is a ParamError listing the declared params."""
    with pytest.raises(ParamError) as caught:
        resolve(spec, replica="2")
    assert caught.value.message == "demo has no param 'replica'"
    assert caught.value.hint.startswith("Its params: app, env, replicas,")


def test_missing_required_param_says_how_to_give_it(spec: IntentSpec) -> None:
    """A required param that is not given is a ParamError telling the operator to pass -p name=..."""
    with pytest.raises(ParamError) as caught:
        resolve_params(spec, {}, environ=ENV)
    assert caught.value.message == "demo needs param 'app'"
    assert "-p app=..." in caught.value.hint


def test_secret_is_read_from_its_default_env_var(spec: IntentSpec) -> None:
    """A secret param without `env:` is read from INTENT_SECRET_<NAME>."""
    values = resolve(spec, environ={**ENV, "INTENT_SECRET_TOKEN": "tok-123"})
    assert values["token"] == "tok-123"


def test_secret_is_read_from_its_declared_env_var(spec: IntentSpec) -> None:
    """A secret param with `env:` is read from that variable and nowhere else."""
    values = resolve(spec, environ={"DEPLOY_DB_PASSWORD": "other", "INTENT_SECRET_DB_PASSWORD": "ignored"})
    assert values["db_password"] == "other"


def test_secret_on_the_command_line_is_refused_without_echoing_it(spec: IntentSpec) -> None:
    """Passing a secret as -p is a ParamError naming the env var, and the value is not repeated."""
    with pytest.raises(ParamError) as caught:
        resolve(spec, token="leaked-value")
    assert caught.value.message == "param 'token' is secret and cannot be passed on the command line"
    assert "INTENT_SECRET_TOKEN" in caught.value.hint
    assert "leaked-value" not in caught.value.one_line()


def test_missing_required_secret_names_its_env_var(spec: IntentSpec) -> None:
    """A required secret absent from the environment is a ParamError naming the variable to set."""
    with pytest.raises(ParamError) as caught:
        resolve(spec, environ={})
    assert caught.value.message == "demo needs param 'db_password'"
    assert "the environment variable DEPLOY_DB_PASSWORD" in caught.value.hint


def test_redaction_replaces_secrets_by_a_mask_with_no_digest(spec: IntentSpec) -> None:
    """Secrets become exactly *** (nothing derived from the value is kept); other params stay as they are."""
    values = resolve(spec, environ={**ENV, "INTENT_SECRET_TOKEN": "tok-123"})
    shown = redact(spec, values)
    assert shown["token"] == shown["db_password"] == REDACTED
    assert shown == redact(spec, {**values, "token": "tok-456"})
    assert {k: v for k, v in shown.items() if k not in ("token", "db_password")} == {
        k: v for k, v in values.items() if k not in ("token", "db_password")
    }


def test_redaction_leaves_an_unset_secret_as_none(spec: IntentSpec) -> None:
    """An optional secret that was not set stays None rather than masking the word 'None'."""
    assert redact(spec, resolve(spec))["token"] is None


@pytest.mark.parametrize(("pairs", "expected"), [
    (["app=hello", "replicas=2"], {"app": "hello", "replicas": "2"}),
    (["query=a=b=c"], {"query": "a=b=c"}),
    (["note="], {"note": ""}),
    ([" app =hello"], {"app": "hello"}),
    (["app=one", "app=two"], {"app": "two"}),
])
def test_assignments_parse_into_a_dict(pairs: list[str], expected: dict[str, str]) -> None:
    """`-p k=v` pairs split on the first '=', keep the value verbatim, and the last one wins."""
    assert parse_assignments(pairs) == expected


@pytest.mark.parametrize("pair", ["app", "=hello", "  =x", ""])
def test_malformed_assignment_is_a_usage_error(pair: str) -> None:
    """A pair without '=' or without a name is a UsageError (exit 2) telling how to write it."""
    with pytest.raises(UsageError) as caught:
        parse_assignments(["ok=1", pair])
    assert caught.value.exit_code == 2
    assert caught.value.message == f"param {pair!r} is not key=value"
    assert caught.value.hint == "Write it as -p name=value."
