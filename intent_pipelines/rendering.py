"""Sandboxed Jinja2 templates and expressions: strict about undefined names, shell-quoting on demand."""

import re
import shlex
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from intent_pipelines.errors import TemplateError

# Names a template may use at the top level.
NAMESPACES = ("params", "context", "steps", "app", "request")
# Fields of `request` (see plan.request_view).
REQUEST_FIELDS = ("id", "dry_run", "reason")


def _shell_finalize(value: Any) -> str:
    """Quote every interpolated value so it reaches the shell as one literal word."""
    return shlex.quote(str(value))


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with ``a.b`` on a mapping reading key ``b`` before any attribute named ``b``.

    Jinja tries attributes first, so a step named ``copy``, ``items``, ``keys``, ``get``... would
    read the dict method instead of the step (``steps.copy.outputs`` failing): keys win here.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


@lru_cache(maxsize=2)
def _env(shell: bool) -> ImmutableSandboxedEnvironment:
    env = _Environment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_shell_finalize if shell else None,
    )
    return env


def is_template(text: str) -> bool:
    """Whether ``text`` contains Jinja syntax at all (plain strings skip rendering)."""
    return "{{" in text or "{%" in text or "{#" in text


def render(text: str, namespace: Mapping[str, Any], *, shell: bool = False, where: str = "") -> str:
    """Render one template string; errors become a one-line TemplateError naming ``where``."""
    if not is_template(text):
        return text
    try:
        return _env(shell).from_string(text).render(**namespace)
    except (UndefinedError, SecurityError, TemplateSyntaxError, TypeError, ValueError) as exc:
        raise TemplateError(
            f"{where}: cannot render {text!r}: {exc}" if where else f"cannot render {text!r}: {exc}",
            hint="Check the names it uses against the intent's params, context and steps.",
        ) from None


_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}$", re.DOTALL)


def render_native(text: str, namespace: Mapping[str, Any], *, where: str = "") -> Any:
    """Render a template; a lone ``{{ expr }}`` keeps its native type (int, bool, list)."""
    match = _SINGLE_EXPRESSION.match(text.strip())
    if match is None:
        return render(text, namespace, where=where)
    try:
        value = _env(False).compile_expression(match["expr"], undefined_to_none=False)(**namespace)
        if isinstance(value, Undefined):
            str(value)  # a lone undefined (or unsafe) name is returned, not raised: make it raise
        return value
    except (UndefinedError, SecurityError, TemplateSyntaxError, TypeError, ValueError) as exc:
        raise TemplateError(
            f"{where}: cannot render {text!r}: {exc}",
            hint="Check the names it uses against the intent's params, context and steps.",
        ) from None


def evaluate(expression: str | bool, namespace: Mapping[str, Any], *, where: str = "") -> bool:
    """Evaluate a condition such as ``params.env == 'prod'`` to a bool."""
    if isinstance(expression, bool):
        return expression
    try:
        return bool(_env(False).compile_expression(expression, undefined_to_none=False)(**namespace))
    except (UndefinedError, SecurityError, TemplateSyntaxError, TypeError, ValueError) as exc:
        raise TemplateError(
            f"{where}: cannot evaluate {expression!r}: {exc}",
            hint="Check the names it uses against the intent's params, context and steps.",
        ) from None


def references(text: str, *, expression: bool = False) -> Iterator[tuple[str, str | None]]:
    """Yield (namespace, attribute) pairs a template or expression reads, e.g. ("params", "app").

    Raises TemplateSyntaxError for malformed templates so the loader can report the line.
    """
    env = _env(False)
    tree = env.parse("{{ (" + text + ") }}" if expression else text)
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    parents: dict[int, nodes.Node] = {}
    for node in tree.find_all(nodes.Node):
        for child in node.iter_child_nodes():
            parents[id(child)] = node
    for name in tree.find_all(nodes.Name):
        if name.ctx != "load" or name.name in assigned:
            continue
        parent = parents.get(id(name))
        attr: str | None = None
        if isinstance(parent, nodes.Getattr) and parent.node is name:
            attr = parent.attr
        elif (
            isinstance(parent, nodes.Getitem)
            and parent.node is name
            and isinstance(parent.arg, nodes.Const)
            and isinstance(parent.arg.value, str)
        ):
            attr = parent.arg.value
        yield name.name, attr
