"""Tests of action inputs checked at plan time: the app.logs regex guard, and `with:` validated before any step runs."""

import re
import time

import pytest
from pydantic import ValidationError

from intent_pipelines.actions.app import LogsInput, backtracking_risk
from intent_pipelines.errors import ParamError
from intent_pipelines.lifecycle.preflight import check_action_inputs
from intent_pipelines.plan import build_plan
from intent_pipelines.spec.loader import parse_intent

# Each backtracks for minutes or more on a line of ~30 characters an outside client can write.
EXPONENTIAL = ["(a+)+$", "(a*)*$", "(x+x+)+y", "(a|a)+$", "(a|a?)+$", "(a|b|ab)*c", "(a{1,30}){1,30}$",
               "(.*a){12}", r"^(\w+\s?)*$", r"(?:[a-z]+\.)+\d"]
# Log searches people write, nested only where a repeat cannot split text many ways.
ORDINARY = ["", "ERROR", r"\bERROR\b", "ERROR|WARN", "(GET|POST) /api", r"(\d{1,3}\.){3}\d{1,3}",
            r"([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}", r"status=5\d\d", "(foo|bar)*baz", r"(?>a+)+$", r"(?:a++)+$",
            r"^\[r1\] .*timeout"]


@pytest.mark.parametrize("pattern", EXPONENTIAL)
def test_patterns_that_backtrack_exponentially_are_refused(pattern: str) -> None:
    """app.logs refuses a pattern with nested or overlapping repeats, saying how to rewrite it."""
    assert backtracking_risk(pattern)
    with pytest.raises(ValidationError, match="exponential time on a long line.*possessive"):
        LogsInput(app="a", pattern=pattern)


@pytest.mark.parametrize("pattern", ORDINARY)
def test_ordinary_patterns_pass_and_are_fast(pattern: str) -> None:
    """Patterns without that shape are accepted, and each searches a long hostile line in milliseconds."""
    assert backtracking_risk(pattern) is None
    assert LogsInput(app="a", pattern=pattern).pattern == pattern
    started = time.monotonic()
    re.search(pattern, "a" * 5_000 + "!")
    assert time.monotonic() - started < 1


CHECK_LOGS = """\
name: logs-demo
summary: s
params:
  pattern: {type: string, default: ""}
  since: {type: string, default: ""}
steps:
  - id: build
    run: [echo]
  - id: logs
    uses: app.logs
    with: {app: hello, pattern: "{{ params.pattern }}", since: "{{ params.since }}"}
  - id: later
    needs: [build]
    uses: app.logs
    with: {app: hello, pattern: "{{ steps.build.outputs.pattern }}"}
  - id: skipped
    when: "params.pattern == 'x'"
    uses: app.logs
    with: {app: hello, since: yesterday}
"""


def _check(**params: str) -> None:
    spec = parse_intent(CHECK_LOGS, "logs-demo.yaml")
    plan = build_plan(spec, intent_sha256="x", params={"pattern": "", "since": "", **params}, context={})
    check_action_inputs(spec, plan)


@pytest.mark.parametrize(("params", "field", "problem"), [
    ({"pattern": "(["}, "pattern", "is not a valid regular expression"),
    ({"pattern": "(a+)+$"}, "pattern", "repeats a repeat"),
    ({"since": "2024-99-99"}, "since", "neither a duration"),
])
def test_bad_action_inputs_are_param_errors_at_plan_time(params: dict[str, str], field: str, problem: str) -> None:
    """A param that makes an action's input invalid is refused at plan time (exit 4), naming the step and input."""
    with pytest.raises(ParamError) as refused:
        _check(**params)
    assert refused.value.message.startswith(f"steps.logs.with.{field}: app.logs: ")
    assert problem in refused.value.message and refused.value.exit_code == 4


def test_inputs_known_only_at_run_time_or_of_skipped_steps_are_not_checked() -> None:
    """Inputs reading step outputs wait for the step; a step whose `when` is false is never checked."""
    _check()  # `later` shows a placeholder pattern now; `skipped` has a bad `since` but does not run
    with pytest.raises(ParamError, match=r"steps\.skipped\.with\.since: app\.logs: since='yesterday'"):
        _check(pattern="x")
