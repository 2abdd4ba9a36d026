"""Sandboxed Jinja2 templates and expressions: strict about undefined names, shell-quoting on demand, bounded.

Jinja's sandbox stops a template reaching Python internals, but not one that computes forever or
builds gigabytes (``9**(9**9)``, ``'%999999999d' % 1``, two nested loops over a long string). Every
render here runs against a budget (see "Limits" in docs/intents-reference.md):

- each value a template builds is at most MAX_VALUE_CHARS, checked *before* the operations that
  can blow up in one step (``*``, ``**``, ``%``, ``~``, padding and replacing methods and filters);
- one render emits at most MAX_VALUE_CHARS, and all renders of one plan at most MAX_RENDERED_CHARS;
- a render (or a whole plan) does at most MAX_TEMPLATE_OPERATIONS loop iterations, calls, filters and
  attribute reads, within TEMPLATE_TIME_LIMIT_S of wall-clock time as the backstop.
"""

import inspect
import re
import shlex
import string
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any, cast

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2 import TemplateError as JinjaError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from intent_pipelines.errors import TemplateError

# Names a template may use at the top level.
NAMESPACES = ("params", "context", "steps", "app", "request")
# Fields of `request` (see plan.request_view).
REQUEST_FIELDS = ("id", "dry_run", "reason")

# Longest string (or list, counted as its text) a template may build or emit: Linux's
# MAX_ARG_STRLEN, the most the kernel passes as one argv element or environment string, so a
# longer rendered value could not reach a command anyway.
MAX_VALUE_CHARS = 128 * 1024
# Rendered characters of all the templates of one plan (also the plan's size: plan.MAX_PLAN_BYTES).
# Every plan is stored; the bundled intents render under 10 KB, so this is a hundred times that.
MAX_RENDERED_CHARS = 1024 * 1024
# Loop iterations, calls, filters and attribute reads per render, or per plan when rendered as
# one. A runbook template does a few dozen; a million is ~1 s of Jinja and stops nested loops
# over long values (10^10 iterations) deterministically, before the clock does.
MAX_TEMPLATE_OPERATIONS = 1_000_000
# Wall-clock backstop for what the operation count does not see (comparisons of long strings in a
# loop): a plan's templates normally render in milliseconds.
TEMPLATE_TIME_LIMIT_S = 2.0
# Digits of an integer a template may compute: Python refuses to print a longer one
# (sys.get_int_max_str_digits), and 9**(9**9) would take hours to compute first.
MAX_INT_DIGITS = sys.int_info.default_max_str_digits

LIMITS_HINT = 'Compute less in the template; see "Limits" in docs/intents-reference.md.'
TEMPLATE_HINT = "Check the names it uses against the intent's params, context and steps."


class TemplateLimitExceeded(SecurityError):
    """A template went over one of the limits above (a SecurityError, so the sandbox stops it)."""


# -- the budget --------------------------------------------------------------------------------

@dataclass
class _Budget:
    """What the renders of one scope (one plan, or one render alone) have used so far."""

    deadline: float
    operations: int = 0
    emitted: int = 0  # characters output by the render in progress
    rendered: int = 0  # characters of every finished render of the scope

    def operation(self, count: int = 1) -> None:
        self.operations += count
        if self.operations > MAX_TEMPLATE_OPERATIONS:
            raise TemplateLimitExceeded(f"the templates take more than {MAX_TEMPLATE_OPERATIONS:,} operations "
                                        "(loop iterations, calls, filters, attribute reads)")
        if time.monotonic() > self.deadline:
            raise TemplateLimitExceeded(f"the templates take more than {TEMPLATE_TIME_LIMIT_S:g} s to render")

    def emit(self, chars: int) -> None:
        self.emitted += chars
        if self.emitted > MAX_VALUE_CHARS:
            raise TemplateLimitExceeded(f"the output is longer than {MAX_VALUE_CHARS:,} characters")

    def finish(self, chars: int) -> None:
        self.rendered += chars
        if self.rendered > MAX_RENDERED_CHARS:
            raise TemplateLimitExceeded(f"the plan's templates render to more than {MAX_RENDERED_CHARS:,} "
                                        "characters in all")


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


@contextmanager
def render_scope() -> Iterator[None]:
    """Render every template inside against one shared budget (a plan's); nested scopes join the outer."""
    if _BUDGET.get() is not None:
        yield
        return
    token = _BUDGET.set(_Budget(deadline=time.monotonic() + TEMPLATE_TIME_LIMIT_S))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _operation() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.operation()


def size_of(value: Any, *, limit: int = MAX_VALUE_CHARS) -> int:
    """About how many characters ``value`` prints as; counting stops once past ``limit``.

    Shared references count every time (``[s] * 1000`` is a thousand ``s``): what matters is what
    printing or joining the value would build.
    """
    total = 0
    pending = [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += _int_digits(item)
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            total += 2 + 4 * len(item)
            pending.extend(item)
        else:
            total += 24  # floats, undefined, generators (lazy: counted when consumed)
    return total


def _int_digits(value: int) -> int:
    # bit_length is exact and free; 0.302 digits per bit (log10 2) is close enough for a bound.
    return value.bit_length() * 302 // 1000 + 1


def _check_size(chars: int, what: str) -> None:
    if chars > MAX_VALUE_CHARS:
        raise TemplateLimitExceeded(f"{what} would be about {chars:,} characters, over the limit of "
                                    f"{MAX_VALUE_CHARS:,}")


# -- the size of what an operation would build, before it is built --------------------------------

_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def _printf_size(fmt: str, args: Any) -> int:
    """Upper bound of ``fmt % args``: the format, plus each conversion's width or argument."""
    widths = 0
    for match in _PRINTF_SPEC.finditer(fmt):
        if "*" in (match[1], match[2]):
            raise TemplateLimitExceeded("a `*` width or precision in a % format is not allowed; write the number")
        widths += max(int(match[1] or 0), int(match[2] or 0))
    conversions = fmt.count("%")
    return len(fmt) + widths + conversions * size_of(args)


def _str_format_size(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """Upper bound of ``fmt.format(*args, **kwargs)``, read with the stdlib's own format parser."""
    total = 0
    largest = max((size_of(v) for v in (*args, *kwargs.values())), default=0)
    for literal, field, spec, _ in string.Formatter().parse(fmt):
        total += len(literal)
        if field is None:
            continue
        if spec and "{" in spec:
            raise TemplateLimitExceeded("a nested {} in a format spec is not allowed; write the width")
        total += max((int(d) for d in re.findall(r"\d+", spec or "")), default=0) + largest
    return total


def _replace_size(text: str, old: str, new: str, count: int | None = None) -> int:
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(0, len(new) - len(old))


def _join_size(items: list[Any], separator: str) -> int:
    return sum(size_of(i) for i in items) + max(0, len(items) - 1) * len(separator)


def _binop_size(operator: str, left: Any, right: Any) -> int | None:
    """Characters ``left <operator> right`` would build, or None when it cannot grow (numbers)."""
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        return _int_digits(left) * right
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            return _int_digits(left) + _int_digits(right)
        if isinstance(right, int) and isinstance(left, str | list | tuple):
            return size_of(left) * max(right, 0)
        if isinstance(left, int) and isinstance(right, str | list | tuple):
            return size_of(right) * max(left, 0)
    if operator == "%" and isinstance(left, str):
        return _printf_size(left, right)
    if operator == "+" and not isinstance(left, int | float):
        return size_of(left) + size_of(right)
    return None


def _width(value: Any) -> int:
    return value if isinstance(value, int) else len(value) if isinstance(value, str) else 0


def _str_method_size(method: str, text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int | None:
    """Characters a ``str`` method that can grow its string would build (None for the others)."""
    if method in ("center", "ljust", "rjust", "zfill"):
        return max(len(text), _width(args[0] if args else kwargs.get("width", 0)))
    if method == "expandtabs":
        return len(text) + text.count("\t") * _width(args[0] if args else kwargs.get("tabsize", 8))
    if method == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = args[2] if len(args) > 2 else kwargs.get("count")
        return _replace_size(text, args[0], args[1], count if isinstance(count, int) else None)
    if method == "join" and args and isinstance(args[0], list):
        return _join_size(args[0], text)
    if method == "translate" and args and isinstance(args[0], Mapping):
        return len(text) * max((size_of(v) for v in args[0].values()), default=1)
    return None


# Filters that can build much more than they are given: the size of their result, from their
# bound arguments (names as in jinja2/filters.py). Every other filter's result is checked after.
_FILTER_SIZE: dict[str, Callable[[Mapping[str, Any]], int]] = {
    "center": lambda a: max(size_of(a["value"]), _width(a.get("width", 80))),
    "indent": lambda a: size_of(a["s"]) + (str(a["s"]).count("\n") + 1) * _width(a.get("width", 4)),
    "wordwrap": lambda a: size_of(a["s"]) + (size_of(a["s"]) // max(_width(a.get("width", 79)), 1)
                                             + str(a["s"]).count("\n") + 1) * len(a.get("wrapstring") or "\n"),
    "replace": lambda a: _replace_size(str(a["s"]), str(a["old"]), str(a["new"]), a.get("count")),
    "join": lambda a: _join_size(a["value"], str(a.get("d", ""))),
    "format": lambda a: _printf_size(str(a["value"]), a.get("args") or a.get("kwargs")),
    "truncate": lambda a: size_of(a["s"]) + len(str(a.get("end", "..."))),
    "urlize": lambda a: size_of(a["value"]) * (4 + len(a.get("rel") or "") + len(a.get("target") or "")),
    "tojson": lambda a: size_of(a["value"]) * (1 + _width(a.get("indent") or 0)),
    "batch": lambda a: size_of(a["value"]) + (0 if a.get("fill_with") is None
                                               else _width(a["linecount"]) * size_of(a["fill_with"])),
    "slice": lambda a: size_of(a["value"]) + _width(a["slices"]) * (3 + size_of(a.get("fill_with"))),
    # Adding lists or strings copies the partial result once per item: bound it as if all were kept.
    "sum": lambda a: (0 if isinstance(a.get("start", 0), int | float)
                      else len(a["iterable"]) * (size_of(a["iterable"]) + size_of(a.get("start")))),
}
# Filters whose input is materialised first, so the size of a lazy one (a `map`) can be known.
_MATERIALISED = {"join": "value", "sum": "iterable"}
# What jinja2/filters.py names the context, eval context or environment it is passed first.
_PASSED_NAMES = frozenset({"context", "eval_ctx", "environment", "env"})


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its result's size checked (before, for the filters in _FILTER_SIZE)."""
    size = _FILTER_SIZE.get(name)
    signature = inspect.signature(func) if size is not None else None
    # Jinja passes the context, eval context or environment first when the filter is marked so. An
    # async-capable filter is marked while the sync function its signature shows takes none: skip it.
    passed = getattr(func, "jinja_pass_arg", None) is not None
    skip = int(passed and signature is not None and next(iter(signature.parameters), "") not in _PASSED_NAMES)

    @wraps(func)  # keeps jinja_pass_arg, so Jinja still passes the context or environment first
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _operation()
        if signature is not None and size is not None:
            bound = signature.bind(*args[skip:], **kwargs)
            arguments = bound.arguments
            if name in _MATERIALISED and not isinstance(arguments[_MATERIALISED[name]], list):
                arguments[_MATERIALISED[name]] = list(_counted(arguments[_MATERIALISED[name]]))
            _check_size(size(arguments), f"the result of |{name}")
            args, kwargs = (*args[:skip], *bound.args), bound.kwargs
        result = func(*args, **kwargs)
        _check_size(size_of(result), f"the result of |{name}")
        return result

    return bounded


def _counted(iterable: Iterable[Any], literal_chars: int = 0) -> Iterator[Any]:
    """Iterate, charging one operation (and the loop body's literal text) per item."""
    for item in iterable:
        budget = _BUDGET.get()
        if budget is not None:
            budget.operation()
            budget.emit(literal_chars)
        yield item


# -- the environment ---------------------------------------------------------------------------

def _shell_finalize(value: Any) -> str:
    """Quote every interpolated value so it reaches the shell as one literal word."""
    return shlex.quote(str(value))


def _bounded_tree(tree: nodes.Template) -> nodes.Template:
    """Route what the sandbox does not see through the environment: loops and ``~`` joins."""
    for loop in tree.find_all(nodes.For):
        literal = _literal_chars(loop.body)
        loop.iter = _env_call("template_loop", loop.iter, nodes.Const(literal), lineno=loop.lineno)
        if loop.recursive:  # `loop(children)` iterates its argument without passing `loop.iter`
            for call in loop.find_all(nodes.Call):
                if isinstance(call.node, nodes.Name) and call.node.name == "loop" and call.args:
                    call.args[0] = _env_call("template_loop", call.args[0], nodes.Const(literal),
                                             lineno=call.lineno)
    for concat in list(tree.find_all(nodes.Concat)):
        concat.nodes = [_env_call("template_concat", *concat.nodes, lineno=concat.lineno)]
    return tree


def _literal_chars(body: list[nodes.Node]) -> int:
    """Characters of text and string constants in a loop body: what each iteration emits besides values."""
    chars = 0
    for statement in body:
        for node in statement.find_all((nodes.TemplateData, nodes.Const)):
            value = node.data if isinstance(node, nodes.TemplateData) else cast(nodes.Const, node).value
            chars += len(value) if isinstance(value, str) else 0
    return chars


def _env_call(method: str, *args: nodes.Node, lineno: int) -> nodes.Call:
    function = nodes.EnvironmentAttribute(method, lineno=lineno)
    return nodes.Call(function, cast(list[nodes.Expr], list(args)), [], None, None, lineno=lineno)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, bounded (see the module docstring), and with ``a.b`` on a mapping reading key ``b`` first.

    Jinja tries attributes first, so a step named ``copy``, ``items``, ``keys``, ``get``... would
    read the dict method instead of the step (``steps.copy.outputs`` failing): keys win here.
    """

    # Operators whose result can be far larger than their operands (intercepted: not constant-folded).
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, shell: bool) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                         finalize=self._finalize_shell if shell else self._finalize)
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}

    @staticmethod
    def _finalize(value: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget.emit(size_of(value))
        return value

    @staticmethod
    def _finalize_shell(value: Any) -> str:
        return _shell_finalize(_Environment._finalize(value))

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        # Jinja's hook between parsing and code generation (internal, documented as overridable);
        # templates and compile_expression both pass here.
        return super()._generate(_bounded_tree(source), name, filename, defer_init)

    def template_loop(self, iterable: Iterable[Any], literal_chars: int) -> Iterator[Any]:
        """What every ``{% for %}`` iterates: one operation per item."""
        return _counted(iterable, literal_chars)

    def template_concat(self, *parts: Any) -> str:
        """``a ~ b ~ c``, refused before it is built when it would be too long."""
        _check_size(sum(size_of(p) for p in parts), "the result of ~")
        return "".join(str(p) for p in parts)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _operation()
        estimate = _binop_size(operator, left, right)
        if estimate is not None:
            _check_size(estimate, f"the result of {operator}")
            if operator in ("*", "**") and isinstance(left, int) and isinstance(right, int) \
                    and estimate > MAX_INT_DIGITS:
                raise TemplateLimitExceeded(f"the result of {operator} would have about {estimate:,} "
                                            f"digits, over the limit of {MAX_INT_DIGITS:,}")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _operation()
        receiver = getattr(__obj, "__self__", None)
        if isinstance(receiver, str):
            method = getattr(__obj, "__name__", "")
            if method == "join" and args and not isinstance(args[0], list):
                args = (list(_counted(args[0])), *args[1:])
            estimate = _str_method_size(method, receiver, args, kwargs)
            if estimate is not None:
                _check_size(estimate, f"the result of .{method}()")
        result = super().call(__context, __obj, *args, **kwargs)
        _check_size(size_of(result), "the result of the call")
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        fmt: str = value.__self__
        is_format_map = value.__name__ == "format_map"

        @wraps(formatter)
        def bounded(*args: Any, **kwargs: Any) -> str:
            named = args[0] if is_format_map and args and isinstance(args[0], Mapping) else kwargs
            _check_size(_str_format_size(fmt, () if is_format_map else args, named), "the result of .format()")
            return formatter(*args, **kwargs)

        return bounded

    def getattr(self, obj: Any, attribute: str) -> Any:
        _operation()
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _operation()
        return super().getitem(obj, argument)


@lru_cache(maxsize=2)
def _env(shell: bool) -> ImmutableSandboxedEnvironment:
    return _Environment(shell=shell)


# -- rendering ---------------------------------------------------------------------------------

# Everything a template can raise while it renders: Jinja's errors (undefined names, the sandbox,
# the limits above) and what the operations themselves raise (1/0, int('x'), float overflow, a
# macro calling itself).
_RENDER_FAILURES = (JinjaError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError)


def is_template(text: str) -> bool:
    """Whether ``text`` contains Jinja syntax at all (plain strings skip rendering)."""
    return "{{" in text or "{%" in text or "{#" in text


def _shown(text: str) -> str:
    """The template as quoted in an error: short enough for one line."""
    return repr(text) if len(text) <= 120 else repr(text[:100]) + f" ({len(text):,} characters)"


def _failure(verb: str, text: str, where: str, exc: BaseException) -> TemplateError:
    detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
    message = f"cannot {verb} {_shown(text)}: {detail}"
    hint = LIMITS_HINT if isinstance(exc, TemplateLimitExceeded | RecursionError) else TEMPLATE_HINT
    return TemplateError(f"{where}: {message}" if where else message, hint=hint)


@contextmanager
def _rendering(verb: str, text: str, where: str) -> Iterator[_Budget]:
    """One render inside the current scope (or a scope of its own), its errors made TemplateErrors."""
    with render_scope():
        budget = _BUDGET.get()
        assert budget is not None
        budget.emitted = 0
        try:
            yield budget
        except _RENDER_FAILURES as exc:
            raise _failure(verb, text, where, exc) from None


def render(text: str, namespace: Mapping[str, Any], *, shell: bool = False, where: str = "") -> str:
    """Render one template string; errors (and going over a limit) become a one-line TemplateError."""
    if not is_template(text):
        return text
    with _rendering("render", text, where) as budget:
        result = _env(shell).from_string(text).render(**namespace)
        _check_size(len(result), "the output")
        budget.finish(len(result))
    return result


_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}$", re.DOTALL)


def render_native(text: str, namespace: Mapping[str, Any], *, where: str = "") -> Any:
    """Render a template; a lone ``{{ expr }}`` keeps its native type (int, bool, list)."""
    match = _SINGLE_EXPRESSION.match(text.strip())
    if match is None:
        return render(text, namespace, where=where)
    with _rendering("render", text, where) as budget:
        value = _env(False).compile_expression(match["expr"], undefined_to_none=False)(**namespace)
        if isinstance(value, Undefined):
            str(value)  # a lone undefined (or unsafe) name is returned, not raised: make it raise
        chars = size_of(value)
        _check_size(chars, "the value")
        budget.finish(chars)
    return value


def evaluate(expression: str | bool, namespace: Mapping[str, Any], *, where: str = "") -> bool:
    """Evaluate a condition such as ``params.env == 'prod'`` to a bool."""
    if isinstance(expression, bool):
        return expression
    with _rendering("evaluate", expression, where):
        return bool(_env(False).compile_expression(expression, undefined_to_none=False)(**namespace))


def references(text: str, *, expression: bool = False) -> Iterator[tuple[str, str | None]]:
    """Yield (namespace, attribute) pairs a template or expression reads, e.g. ("params", "app").

    Raises TemplateSyntaxError for malformed templates so the loader can report the line.
    """
    tree = _parse(text, expression=expression)
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


def private_attribute(text: str, *, expression: bool = False) -> str | None:
    """The first ``_name`` attribute a template reads (``''.__class__``), which the sandbox refuses.

    Raises TemplateSyntaxError for malformed templates, as references() does.
    """
    tree = _parse(text, expression=expression)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attr: Any
        if isinstance(node, nodes.Getattr):
            attr = node.attr
        else:
            key = cast(nodes.Getitem, node).arg
            attr = key.value if isinstance(key, nodes.Const) else None
        if isinstance(attr, str) and attr.startswith("_"):
            return attr
    return None


@lru_cache(maxsize=1024)
def _parse(text: str, *, expression: bool) -> nodes.Template:
    # Cached: the loader reads each template twice (references, private attributes) and the plan
    # again (which steps it reads). Callers only read the tree.
    return _env(False).parse("{{ (" + text + ") }}" if expression else text)
