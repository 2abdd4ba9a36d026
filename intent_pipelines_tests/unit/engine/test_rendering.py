"""Tests of template rendering: strict names, the sandbox, shell quoting, native types, references."""

import subprocess
from typing import Any

import pytest
from jinja2 import TemplateSyntaxError

from intent_pipelines.errors import TemplateError
from intent_pipelines.rendering import evaluate, is_template, references, render, render_native

NS: dict[str, Any] = {
    "params": {"app": "hello-api", "replicas": 3, "force": True, "hosts": ["a", "b"], "env": "prod"},
    "context": {"git_sha": "abc123"},
    "steps": {"build": {"outputs": {"release": "r-42"}}},
    "app": {"source": "/srv/hello"},
    "request": {"dry_run": False},
}


def test_plain_strings_are_returned_untouched() -> None:
    """Text without Jinja syntax is not rendered at all, so braces-free strings never fail."""
    assert not is_template("echo }} {")
    assert render("echo }} {", {}) == "echo }} {"


def test_render_fills_names_from_the_namespace() -> None:
    """A template reads params, context, steps and app from the namespace it is given."""
    text = "{{ params.app }}@{{ context.git_sha }}:{{ steps.build.outputs.release }} in {{ app.source }}"
    assert render(text, NS) == "hello-api@abc123:r-42 in /srv/hello"


@pytest.mark.parametrize("text", ["{{ params.nope }}", "{{ nope }}", "{{ steps.deploy.outputs.x }}",
                                  "{{ params.nope | upper }}"])
def test_undefined_names_raise_template_error(text: str) -> None:
    """An undefined name is a TemplateError naming where it happened, never an empty string."""
    with pytest.raises(TemplateError) as caught:
        render(text, NS, where="steps.a.run[1]")
    assert caught.value.message.startswith(f"steps.a.run[1]: cannot render {text!r}")
    assert caught.value.exit_code == 4


def test_undefined_names_raise_in_native_and_expression_mode() -> None:
    """render_native and evaluate are just as strict about undefined names as render."""
    with pytest.raises(TemplateError):
        render_native("{{ params.nope }}", NS, where="w")
    with pytest.raises(TemplateError):
        evaluate("params.nope == 'x'", NS, where="w")


@pytest.mark.parametrize("text", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ params.__init__ }}",
    "{{ params.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ params.hosts.append('x') }}",
    "{{ params.update({'app': 'x'}) }}",
])
def test_sandbox_blocks_unsafe_attribute_access(text: str) -> None:
    """Dunder access and mutating methods are refused by the sandbox with a TemplateError."""
    with pytest.raises(TemplateError, match="unsafe"):
        render(text, NS, where="w")
    with pytest.raises(TemplateError, match="unsafe"):
        render_native(text, NS, where="w")
    assert NS["params"]["hosts"] == ["a", "b"]


def test_sandbox_blocks_unsafe_access_in_expressions() -> None:
    """Conditions (when, deny, confirm) run in the same sandbox as templates."""
    with pytest.raises(TemplateError, match="unsafe"):
        evaluate("params.__class__.__mro__", NS, where="policy.confirm")


def sh(command: str) -> subprocess.CompletedProcess[str]:
    """Run a rendered command line the way a `shell: true` step runs it."""
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=10, check=True)


INJECTIONS = [
    "; rm -rf /",
    "$(id)",
    "`id`",
    "../../etc/passwd",
    "a b  c",
    "it's \"quoted\"",
    "$HOME ${PATH}",
    "&& echo pwned || true",
    "| cat > /tmp/nope",
    "*",
    "-n",
    "",
]


def test_shell_mode_quotes_every_value_as_one_literal_word() -> None:
    """In shell mode each interpolated value reaches /bin/sh as exactly one literal argument."""
    template = "printf '%s\\n' " + " ".join(f"{{{{ params.v{i} }}}}" for i in range(len(INJECTIONS)))
    ns = {"params": {f"v{i}": value for i, value in enumerate(INJECTIONS)}}
    command = render(template, ns, shell=True)
    result = sh(command)
    assert result.stdout.split("\n")[:-1] == INJECTIONS
    assert result.stderr == ""


def test_shell_mode_quotes_lists_and_numbers_too() -> None:
    """Non-string values are stringified and quoted as one word, so a list cannot split into argv."""
    command = render("printf '%s\\n' {{ params.hosts }} {{ params.replicas }}", NS, shell=True)
    result = sh(command)
    assert result.stdout.splitlines() == ["['a', 'b']", "3"]


def test_plain_mode_does_not_quote() -> None:
    """Outside shell mode values are inserted verbatim (argv elements need no quoting)."""
    assert render("{{ params.v }}", {"params": {"v": "a b; c"}}) == "a b; c"


@pytest.mark.parametrize(("text", "expected"), [
    ("{{ params.replicas }}", 3),
    ("  {{ params.replicas + 1 }}  ", 4),
    ("{{ params.force }}", True),
    ("{{ not params.force }}", False),
    ("{{ params.hosts }}", ["a", "b"]),
    ("{{ request.dry_run }}", False),
    ("replicas={{ params.replicas }}", "replicas=3"),
    ("{{ params.replicas }}{{ params.replicas }}", "33"),
    ("no template", "no template"),
])
def test_render_native_keeps_the_type_of_a_lone_expression(text: str, expected: Any) -> None:
    """A lone {{ expr }} keeps its int/bool/list type; anything with surrounding text is a string."""
    value = render_native(text, NS)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("expression", "expected"), [
    ("params.env == 'prod'", True),
    ("params.env == 'prod' and params.replicas > 5", False),
    ("params.hosts", True),
    ("params.hosts[5] is defined", False),
    (True, True),
    (False, False),
])
def test_evaluate_returns_a_bool(expression: str | bool, expected: bool) -> None:
    """Conditions evaluate to a real bool; literal booleans pass through unchanged."""
    assert evaluate(expression, NS) is expected


def test_references_find_namespaces_and_attributes() -> None:
    """references() yields each (namespace, attribute) read, by attribute or constant subscript."""
    text = ("{{ params.app }} {{ steps.build.outputs.release }} {{ context['git_sha'] }} "
            "{{ app }} {{ request.dry_run }}")
    assert list(references(text)) == [("params", "app"), ("steps", "build"), ("context", "git_sha"),
                                      ("app", None), ("request", "dry_run")]


def test_references_skip_names_bound_in_the_template() -> None:
    """Loop and set variables are not reported as references to unknown namespaces."""
    text = "{% set sep = ',' %}{% for h in params.hosts %}{{ h }}{{ sep }}{% endfor %}"
    assert list(references(text)) == [("params", "hosts")]


def test_references_in_expressions_and_dynamic_subscripts() -> None:
    """Expressions are parsed too; a non-constant subscript gives the namespace without an attribute."""
    assert list(references("params.env == 'prod' and steps.a.outputs.ok", expression=True)) == [
        ("params", "env"), ("steps", "a")]
    assert sorted(references("{{ params[context.key] }}"), key=str) == [("context", "key"), ("params", None)]


def test_references_raise_on_syntax_errors() -> None:
    """A malformed template raises TemplateSyntaxError so the loader can point at its line."""
    with pytest.raises(TemplateSyntaxError):
        list(references("{{ params.app "))
    with pytest.raises(TemplateSyntaxError):
        list(references("params.env ==", expression=True))


@pytest.mark.parametrize("step_id", ["copy", "items", "keys", "get", "values", "update", "pop"])
def test_step_ids_named_like_dict_methods_read_the_step(step_id: str) -> None:
    """``steps.copy.outputs`` reads the step called copy, not dict.copy, in templates and expressions."""
    namespace = {"steps": {step_id: {"outputs": {"release": "r-7"}}}}
    text = f"{{{{ steps.{step_id}.outputs.release }}}}"
    assert render(text, namespace) == "r-7"
    assert render(text, namespace, shell=True) == "r-7"
    assert render_native(text, namespace) == "r-7"
    assert evaluate(f"steps.{step_id}.outputs.release == 'r-7'", namespace)


def test_mapping_methods_still_work_when_no_key_shadows_them() -> None:
    """Without a key of that name, ``get`` is still the mapping's method."""
    assert render("{{ params.get('app') }}", NS) == "hello-api"
