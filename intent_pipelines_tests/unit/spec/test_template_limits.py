"""Tests of the template limits: hostile templates are refused quickly with a TemplateError, ordinary ones render."""

import time
from typing import Any

import pytest

from intent_pipelines.errors import SpecError, TemplateError
from intent_pipelines.plan import MAX_PLAN_BYTES, build_plan
from intent_pipelines.rendering import (
    LIMITS_HINT,
    MAX_INT_DIGITS,
    MAX_RENDERED_CHARS,
    MAX_TEMPLATE_OPERATIONS,
    MAX_VALUE_CHARS,
    TEMPLATE_TIME_LIMIT_S,
    evaluate,
    render,
    render_native,
    render_scope,
)
from intent_pipelines.spec.loader import parse_intent

LONG = "a" * 100_000
NS: dict[str, Any] = {
    "params": {"long": LONG, "hosts": ["web1", "web2"], "n": 7, "port": 8080, "size": 10**9},
    "context": {}, "steps": {}, "app": {}, "request": {},
}

# (template, fragment of the refusal). Each would otherwise hang, or build from a gigabyte up.
HOSTILE = [
    ("{{ 9**(9**9) }}", f"over the limit of {MAX_VALUE_CHARS:,}"),
    ("{{ 2**20000 }}", f"over the limit of {MAX_INT_DIGITS:,}"),
    ("{{ '%999999999d' % 1 }}", "the result of %"),
    ("{{ '%.999999999f' % 1.5 }}", "the result of %"),
    ("{{ '%*d' % (999999999, 1) }}", "`*` width"),
    ("{{ 'x' * 10**9 }}", "the result of *"),
    ("{{ [params.long] * 1000 }}", "the result of *"),
    ("{{ range(10**9)|join }}", "Range too big"),
    ("{{ params.long ~ params.long }}", "the result of ~"),
    ("{{ params.long + params.long }}", "the result of +"),
    ("{{ params.long.center(10**9) }}", "the result of .center()"),
    ("{{ 'a\tb'.expandtabs(10**9) }}", "the result of .expandtabs()"),
    ("{{ params.long.replace('a', params.long) }}", "the result of .replace()"),
    ("{{ params.long.join(params.hosts * 2) }}", "the result of .join()"),
    ("{{ '{:>999999999}'.format(1) }}", "the result of .format()"),
    ("{{ '{0}{0}{0}{0}'.format(params.long) }}", "the result of .format()"),
    ("{{ params.long|center(10**9) }}", "the result of |center"),
    ("{{ params.long|indent(100000) }}", "the result of |indent"),
    ("{{ params.long|replace('a', 'bb') }}", "the result of |replace"),
    ("{{ params.long[:1000]|list|join(params.long) }}", "the result of |join"),
    ("{{ '%999999999s'|format(1) }}", "the result of |format"),
    ("{{ params.long|tojson(indent=100000) }}", "the result of |tojson"),
    ("{{ params.hosts|batch(10**9, params.long)|list }}", "the result of |batch"),
    ("{{ params.hosts|slice(10**9)|list }}", "the result of |slice"),
    ("{% for a in params.long %}{% for b in params.long %}{% endfor %}{% endfor %}",
     f"more than {MAX_TEMPLATE_OPERATIONS:,} operations"),
    ("{% for a in params.long %}{{ params.long }}{% endfor %}", "the output is longer"),
    ("{% for a in params.long %}literal text{% endfor %}", "the output is longer"),
    ("{% set x %}{% for a in params.long %}{{ params.long }}{% endfor %}{% endset %}{{ x|length }}",
     "the output is longer"),
    ("{% for x in params.hosts recursive %}{{ loop(params.long) }}{% endfor %}", "nested too deeply"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "nested too deeply"),
    # 2**40 calls: no loop, no large value; the step count (or the clock) stops it.
    ("{% macro f(d) %}{% if d %}{{ f(d[1:]) }}{{ f(d[1:]) }}{% endif %}{% endmacro %}{{ f(params.long[:40]) }}",
     "the templates take more than"),
    ("{{ ''.__class__.__mro__ }}", "unsafe"),
]


@pytest.mark.parametrize(("text", "problem"), HOSTILE, ids=[t for t, _ in HOSTILE])
def test_a_hostile_template_is_a_template_error_in_bounded_time(text: str, problem: str) -> None:
    """Each is refused by a one-line TemplateError (exit 4) within the time limit and a bounded result."""
    started = time.monotonic()
    with pytest.raises(TemplateError) as refused:
        render_native(text, NS, where="steps.a.run[1]")
    assert time.monotonic() - started < TEMPLATE_TIME_LIMIT_S + 3
    assert problem in refused.value.message
    assert refused.value.message.startswith("steps.a.run[1]: cannot render ")
    assert refused.value.exit_code == 4 and "\n" not in refused.value.one_line()


def test_limit_refusals_say_to_compute_less() -> None:
    """Going over a limit points at the documented limits; a misspelt name keeps the old hint."""
    with pytest.raises(TemplateError) as over:
        render("{{ 'x' * 10**9 }}", NS)
    assert over.value.hint == LIMITS_HINT
    with pytest.raises(TemplateError) as undefined:
        render("{{ params.nope }}", NS)
    assert "params, context and steps" in undefined.value.hint


def test_a_long_template_is_quoted_short_in_its_error() -> None:
    """The error quotes at most the start of a long template, so it stays a readable line."""
    with pytest.raises(TemplateError) as refused:
        render("{{ 'x' * 10**9 }}" + "y" * 10_000, NS)
    assert len(refused.value.message) < 400 and "(10,017 characters)" in refused.value.message


@pytest.mark.parametrize(("text", "expected"), [
    ("{% for h in params.hosts %}{{ h }}:{{ params.port }} {% endfor %}", "web1:8080 web2:8080 "),
    ("{{ params.hosts|map('upper')|join(',') }}", "WEB1,WEB2"),
    ("{{ '%05d' % params.n }}-{{ '{:>6}'.format(params.n) }}-{{ 'ab'|center(6) }}", "00007-     7-  ab  "),
    ("{{ params.n * 3 }} {{ 2**64 }} {{ 'ab' * 3 }} {{ params.size|filesizeformat }}",
     "21 18446744073709551616 ababab 1.0 GB"),
    ("{{ params.long|length }} {{ (params.long ~ 'b')[-2:] }} {{ params.long|replace('a', '')|length }}",
     "100000 ab 0"),
    ("{{ 'a,b'.replace(',', ', ') }} {{ ', '.join(params.hosts) }} {{ params.hosts|tojson }}",
     'a, b web1, web2 ["web1", "web2"]'),
])
def test_ordinary_templates_render_as_before(text: str, expected: str) -> None:
    """Loops, filters, formatting and arithmetic within the limits give the same text as plain Jinja."""
    assert render(text, NS) == expected


def test_values_and_conditions_keep_their_types() -> None:
    """A lone expression keeps its native type and a condition is a bool, under the same limits."""
    assert render_native("{{ params.hosts * 2 }}", NS) == ["web1", "web2"] * 2
    assert evaluate("params.n ** 2 > 40 and 'web1' in params.hosts", NS) is True
    with pytest.raises(TemplateError, match="the result of \\*\\*"):
        evaluate("9 ** (9 ** 9) > 1", NS)


def test_renders_in_one_scope_share_one_budget() -> None:
    """Inside render_scope the output of every render counts toward MAX_RENDERED_CHARS; alone each starts afresh."""
    chunk = "{{ params.long }}"
    for _ in range(2 * MAX_RENDERED_CHARS // len(LONG)):
        render(chunk, NS)
    with render_scope(), pytest.raises(TemplateError, match="in all"):
        for _ in range(2 * MAX_RENDERED_CHARS // len(LONG)):
            render(chunk, NS)


def _spec(steps: str, params: str = "") -> Any:
    return parse_intent(f"name: demo\nsummary: s\n{params}steps:\n{steps}")


def test_a_plan_over_its_limit_is_refused() -> None:
    """Many steps each rendering the most a value may be, or one huge param, make a plan over its limit."""
    spec = _spec("".join(f"  - {{id: s{i}, run: [echo, '{{{{ params.long }}}}']}}\n" for i in range(20)),
                 "params: {long: {type: string}}\n")
    with pytest.raises(TemplateError, match="render to more than"):
        build_plan(spec, intent_sha256="x", params={"long": LONG}, context={})
    spec = _spec("  - {id: a, run: [echo]}\n", "params: {huge: {type: list}}\n")
    with pytest.raises(TemplateError, match=f"over the limit of {MAX_PLAN_BYTES:,}"):
        build_plan(spec, intent_sha256="x", params={"huge": [LONG] * 20}, context={})
    plan = build_plan(spec, intent_sha256="x", params={"huge": ["a"]}, context={})
    assert len(plan.canonical_json()) < 2_000


@pytest.mark.parametrize("template", ["{{ ''.__class__ }}", "{{ params.app._secret }}", "{{ params['__dict__'] }}",
                                      "{{ params.app.__init__.__globals__ }}"])
def test_private_attributes_are_refused_when_the_file_is_loaded(template: str) -> None:
    """A template reaching for ``_name`` attributes (sandbox escapes) fails validation at its line, exit 3."""
    with pytest.raises(SpecError, match="template reads the private attribute") as refused:
        _spec(f"  - id: a\n    run:\n      - echo\n      - {template!r}\n", "params: {app: {type: string}}\n")
    assert refused.value.line == 8 and refused.value.field_path == "steps[0].run[1]"
