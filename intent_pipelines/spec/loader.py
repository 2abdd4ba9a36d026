"""Load intent files: YAML with line numbers, schema validation, and the cross-field checks."""

import difflib
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError
from pydantic import ValidationError
from yaml.composer import Composer

from intent_pipelines.actions import registry
from intent_pipelines.errors import ParamError, SpecError, UnknownIntentError
from intent_pipelines.rendering import NAMESPACES, REQUEST_FIELDS, private_attribute, references
from intent_pipelines.settings import settings
from intent_pipelines.spec.models import ActionCall, IntentSpec, StepSpec
from intent_pipelines.spec.params import check_value
from intent_pipelines.spec.shell_guard import check_argv, check_shell

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "intents"

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedIntent:
    """A validated intent with where it came from and the exact bytes it was read from."""

    spec: IntentSpec
    path: Path
    content: str

    @property
    def sha256(self) -> str:
        """Content hash of the intent file, recorded with every request."""
        return hashlib.sha256(self.content.encode("utf-8")).hexdigest()


# Bounds on what one intent file may make the loader build (docs/intents-reference.md, "Limits").
# The bundled intents are 0.3-2.5 KB; 256 KiB is a hundred times the largest, and keeps a whole
# catalog of maximal files (each stored with every request that uses it) in megabytes.
MAX_INTENT_FILE_BYTES = 256 * 1024
# Nesting levels of mappings and lists, counting through aliases. A real intent nests about 6 deep
# (steps > step > with > value > list > item); every later pass over the data (line map, pydantic,
# template sites) recurses once per level, so this also keeps them far from Python's recursion limit.
MAX_YAML_DEPTH = 32
# Nodes (keys, values, items) after expanding aliases: 100 steps of 50 values each with room to
# spare. Aliases are counted as what they expand to, so a 400-byte "billion laughs" stops here
# instead of building a billion-entry line map.
MAX_YAML_NODES = 100_000


class YamlTooLarge(yaml.YAMLError):  # type: ignore[misc]
    """The YAML is well-formed but over one of the limits above, at ``line``."""

    def __init__(self, problem: str, line: int, hint: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line
        self.hint = hint


class _BoundedComposer(Composer):  # type: ignore[misc]
    """PyYAML's composer with the depth and (alias-expanded) node count bounded as it goes.

    libyaml's own composer recurses in C and overflows the stack (a segfault) on ~50,000 nested
    ``[``; this one runs over libyaml's events, which arrive from a non-recursive parser.
    """

    def _start_counting(self) -> None:
        self._depth = 0  # level of the node being composed (the document's root is 1)
        self._deepest = 0  # deepest level reached so far inside the node being composed
        self._nodes = 0
        # anchor -> (nodes it expands to, levels below it): what each alias to it adds.
        self._anchored: dict[str, tuple[int, int]] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        depth = self._depth + 1
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.anchors and event.anchor not in self._anchored:
                raise YamlTooLarge(f"alias *{event.anchor} refers to the mapping or list it is in",
                                   line, "A recursive structure never ends; copy the values instead.")
            size, height = self._anchored.get(event.anchor, (0, 0))
            self._count(size, depth + height, line)
            return super().compose_node(parent, index)
        self._count(1, depth, line)
        start, outer_deepest = self._nodes - 1, self._deepest
        self._depth, self._deepest = depth, depth
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth = depth - 1
        if event.anchor is not None:
            self._anchored[event.anchor] = (self._nodes - start, self._deepest - depth)
        self._deepest = max(outer_deepest, self._deepest)
        return node

    def _count(self, nodes: int, depth: int, line: int) -> None:
        self._nodes += nodes
        self._deepest = max(self._deepest, depth)
        if depth > MAX_YAML_DEPTH:
            raise YamlTooLarge(f"nesting is deeper than {MAX_YAML_DEPTH} levels (counting through aliases)",
                               line, "Flatten the structure; intents need only a few levels.")
        if self._nodes > MAX_YAML_NODES:
            raise YamlTooLarge(f"the file has more than {MAX_YAML_NODES:,} values (counting what aliases "
                               "expand to)", line, "Split it into several intents, or use fewer aliases.")


# libyaml's parser is ~10x faster than the pure-Python one; fall back when it is not compiled in.
_SafeBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class IntentYamlLoader(_BoundedComposer, _SafeBase):  # type: ignore[misc]
    """SafeLoader with YAML 1.2 booleans (only true/false, so `on:`, `yes`, `no` stay strings) and bounds.

    Nesting and alias expansion are bounded while composing (MAX_YAML_DEPTH, MAX_YAML_NODES).
    """

    def __init__(self, stream: str) -> None:
        _SafeBase.__init__(self, stream)
        self.anchors: dict[str, yaml.Node] = {}  # the C base does not run Composer.__init__
        self._start_counting()


IntentYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
IntentYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


class _LineMap:
    """Line numbers of every node in a YAML document, by path; duplicate keys are refused."""

    def __init__(self, text: str, path: str) -> None:
        self.lines: dict[Path_, int] = {}
        self.path = path
        self.data: Any = None
        loader = IntentYamlLoader(text)
        try:
            # One parse gives both: the node tree (for line numbers) and the data built from it.
            root = loader.get_single_node()
            if root is not None:
                self.data = loader.construct_document(root)
        except YamlTooLarge as exc:
            raise SpecError(exc.problem, path=path, line=exc.line, hint=exc.hint) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise SpecError(f"not valid YAML: {problem}", path=path, line=line,
                            hint="Fix the YAML syntax (indentation, quotes, colons).") from None
        finally:
            loader.dispose()
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, at: Path_) -> None:
        self.lines[at] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = str(key.value)
                if name in seen:
                    raise SpecError(f"duplicate key {name!r}", path=self.path,
                                    line=key.start_mark.line + 1, field_path=_dotted(at),
                                    hint="Remove one of them.")
                seen.add(name)
                self._walk(value, (*at, name))
                self.lines[(*at, name)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*at, index))

    def line(self, at: Path_) -> int | None:
        """The line of the deepest known node on ``at``."""
        for end in range(len(at), -1, -1):
            if at[:end] in self.lines:
                return self.lines[at[:end]]
        return None

    def error(self, message: str, at: Path_, hint: str) -> SpecError:
        return SpecError(message, path=self.path, line=self.line(at), field_path=_dotted(at), hint=hint)


def _dotted(at: Path_) -> str:
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _validation_hint(kind: str) -> str:
    if kind == "extra_forbidden":
        return "Remove it or check the spelling against docs/guides/intent-system-user-guide.md."
    if kind == "missing":
        return "Add it."
    return "Fix the value."


def parse_intent(text: str, path: str = "<string>") -> IntentSpec:
    """Parse and fully validate one intent file's text; raise SpecError with file:line:field."""
    if len(text) > MAX_INTENT_FILE_BYTES or len(text.encode("utf-8")) > MAX_INTENT_FILE_BYTES:
        raise _too_big(path)
    lines = _LineMap(text, path)
    data = lines.data
    if not isinstance(data, dict):
        raise SpecError("an intent file must be a YAML mapping with name, summary and steps",
                        path=path, line=1, hint="See the bundled intents for examples.")
    try:
        spec = IntentSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = tuple(p for p in first["loc"] if not (isinstance(p, str) and "[" in p))
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"unknown key {at[-1]!r}" if at else "unknown key"
        raise lines.error(message, at, _validation_hint(first["type"])) from None
    _check_defaults(spec, lines)
    _check_graph(spec, lines)
    _check_actions(spec, lines)
    _check_shell(spec, lines)
    _check_templates(spec, lines)
    return spec


def _check_defaults(spec: IntentSpec, lines: _LineMap) -> None:
    """Every default meets its own param's type and constraints (else every run without it is refused)."""
    for name, pspec in spec.params.items():
        if pspec.default is None:
            continue
        try:
            check_value(name, pspec, pspec.default)
        except ParamError as exc:
            raise lines.error(f"default of {exc.message}", ("params", name, "default"),
                              f"Change the default or the constraint. {exc.hint}") from None


def _check_graph(spec: IntentSpec, lines: _LineMap) -> None:
    ids: dict[str, int] = {}
    for index, step in enumerate(spec.steps):
        if step.id in ids:
            raise lines.error(f"duplicate step id {step.id!r} (also steps[{ids[step.id]}])",
                              ("steps", index, "id"), "Give every step a unique id.")
        ids[step.id] = index
    for index, step in enumerate(spec.steps):
        for need_index, need in enumerate(step.needs):
            if need not in ids:
                raise lines.error(f"needs unknown step {need!r}", ("steps", index, "needs", need_index),
                                  f"Known steps: {', '.join(ids)}.")
            if need == step.id:
                raise lines.error("a step cannot need itself", ("steps", index, "needs", need_index),
                                  "Remove it from `needs`.")
    cycle = find_cycle({s.id: list(s.needs) for s in spec.steps})
    if cycle:
        raise lines.error(f"steps form a cycle: {' -> '.join(cycle)}", ("steps", ids[cycle[0]], "needs"),
                          "Break the cycle by removing one of these `needs`.")
    check_ids: dict[str, int] = {}
    for index, check in enumerate(spec.verify):
        if check.id in check_ids:
            raise lines.error(f"duplicate verify id {check.id!r} (also verify[{check_ids[check.id]}])",
                              ("verify", index, "id"), "Give every check a unique id.")
        check_ids[check.id] = index


def find_cycle(needs: dict[str, list[str]]) -> list[str]:
    """Return one cycle as [a, b, ..., a], or [] when the graph is acyclic."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in needs.get(node, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in needs:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def _calls(spec: IntentSpec) -> Iterator[tuple[Path_, ActionCall]]:
    for index, step in enumerate(spec.steps):
        yield ("steps", index), step
        if step.rollback is not None:
            yield ("steps", index, "rollback"), step.rollback
    for index, check in enumerate(spec.verify):
        yield ("verify", index), check


def _check_actions(spec: IntentSpec, lines: _LineMap) -> None:
    actions = registry()
    for at, call in _calls(spec):
        if call.uses is None:
            continue
        if call.uses not in actions:
            raise lines.error(f"unknown action {call.uses!r}", (*at, "uses"),
                              f"Use one of: {', '.join(sorted(actions))}; or `run` a command.")
        fields = actions[call.uses].input_model.model_fields
        for key in call.with_:
            if key not in fields:
                raise lines.error(f"action {call.uses} has no input {key!r}", (*at, "with", key),
                                  f"Its inputs are: {', '.join(fields)}.")
        for name, info in fields.items():
            if info.is_required() and name not in call.with_:
                raise lines.error(f"action {call.uses} needs input {name!r}", (*at, "with"),
                                  f"Add `{name}:` under `with`.")


def _strings(value: Any, at: Path_) -> Iterator[tuple[Path_, str]]:
    if isinstance(value, str):
        yield at, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*at, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*at, key))


def _ancestors(spec: IntentSpec) -> dict[str, set[str]]:
    needs = {s.id: s.needs for s in spec.steps}
    memo: dict[str, set[str]] = {}

    def up(step_id: str) -> set[str]:
        if step_id not in memo:
            memo[step_id] = set()
            for parent in needs[step_id]:
                memo[step_id] |= {parent} | up(parent)
        return memo[step_id]

    return {s: up(s) for s in needs}


def _template_sites(spec: IntentSpec) -> Iterator[tuple[Path_, str, bool, set[str] | None]]:
    """(path, text, is_expression, steps it may read: None = all, set() = none)."""
    ancestors = _ancestors(spec)
    all_steps = {s.id for s in spec.steps}
    for name, capture in spec.context.items():
        for at, text in _strings(capture.run, ("context", name, "run")):
            yield at, text, False, set()
    policy = spec.policy
    if policy.lock:
        yield ("policy", "lock"), policy.lock, False, set()
    if isinstance(policy.confirm, str):
        yield ("policy", "confirm"), policy.confirm, True, set()
    for index, rule in enumerate(policy.deny):
        yield ("policy", "deny", index, "when"), rule.when, True, set()
    for index, step in enumerate(spec.steps):
        readable = ancestors[step.id]
        yield from _call_sites(("steps", index), step, readable)
        if step.when:
            yield ("steps", index, "when"), step.when, True, readable
        if step.rollback is not None:
            yield from _call_sites(("steps", index, "rollback"), step.rollback, readable | {step.id})
    for index, check in enumerate(spec.verify):
        yield from _call_sites(("verify", index), check, all_steps)


def _call_sites(at: Path_, call: ActionCall, readable: set[str]) -> Iterator[tuple[Path_, str, bool, set[str]]]:
    for where, text in [*_strings(call.run, (*at, "run")), *_strings(call.with_, (*at, "with")),
                        *_strings(call.env, (*at, "env")), *_strings(call.cwd, (*at, "cwd"))]:
        yield where, text, False, readable


def _check_shell(spec: IntentSpec, lines: _LineMap) -> None:
    """Refuse templates a shell or interpreter would parse as code (see shell_guard)."""
    runs: list[tuple[Path_, list[str] | str | None]] = [(at, call.run) for at, call in _calls(spec)]
    runs += [(("context", name), capture.run) for name, capture in spec.context.items()]
    for at, run in runs:
        finding = check_argv(run) if isinstance(run, list) else check_shell(run) if run else None
        if finding is not None:
            where = (*at, "run") if finding.index is None else (*at, "run", finding.index)
            raise lines.error(finding.problem, where, finding.hint)


def _check_templates(spec: IntentSpec, lines: _LineMap) -> None:
    for at, text, is_expression, readable in _template_sites(spec):
        try:
            refs = list(references(text, expression=is_expression))
            private = private_attribute(text, expression=is_expression)
        except TemplateSyntaxError as exc:
            raise lines.error(f"template syntax error: {exc.message}", at,
                              "Fix the {{ }} expression.") from None
        except RecursionError:
            raise lines.error("template nests too deeply", at, "Simplify the {{ }} expression.") from None
        if private is not None:
            raise lines.error(f"template reads the private attribute {private!r}", at,
                              "Templates may not reach Python internals; use params, context and steps.")
        for namespace, attr in refs:
            problem = _reference_problem(spec, namespace, attr, readable)
            if problem:
                raise lines.error(f"{problem} in {text!r}", at, _reference_hint(spec, namespace))


def _reference_problem(spec: IntentSpec, namespace: str, attr: str | None,
                       readable: set[str] | None) -> str:
    if namespace not in NAMESPACES:
        return f"unknown name {namespace!r}"
    if attr is None:
        return ""
    if namespace == "params" and attr not in spec.params:
        return f"undefined param {attr!r}"
    if namespace == "context" and attr not in spec.context:
        return f"undefined context value {attr!r}"
    if namespace == "steps":
        if attr not in {s.id for s in spec.steps}:
            return f"undefined step {attr!r}"
        if readable is not None and attr not in readable:
            return f"step {attr!r} is not upstream here (add it to `needs`)"
    if namespace == "app" and "app" not in spec.params:
        return "`app` is used but the intent has no `app` param"
    if namespace == "request" and attr not in REQUEST_FIELDS:
        return f"request has no field {attr!r} (it has {', '.join(REQUEST_FIELDS)})"
    return ""


def _reference_hint(spec: IntentSpec, namespace: str) -> str:
    if namespace == "params":
        return f"Declared params: {', '.join(spec.params) or 'none'}."
    if namespace == "steps":
        return f"Steps: {', '.join(s.id for s in spec.steps)}."
    if namespace == "context":
        return f"Declared context: {', '.join(spec.context) or 'none'}."
    return f"Templates may use: {', '.join(NAMESPACES)}."


def _too_big(path: str) -> SpecError:
    return SpecError(f"the file is larger than {MAX_INTENT_FILE_BYTES // 1024} KiB", path=path, line=1,
                     hint="Split it into several intents; see \"Limits\" in docs/intents-reference.md.")


_WHERE_PART = re.compile(r"\.?([^.\[]+)|\[(\d+)\]")


def locate(loaded: LoadedIntent, where: str) -> str:
    """``file:line`` of a place named as plan and rendering errors name it (``steps.build.with.app``).

    Steps and checks are named by id there and by index in the file; the line is that of the
    deepest part of ``where`` the file has. Reads the file again: only for errors.
    """
    parts: list[str | int] = [int(index) if index else key for key, index in _WHERE_PART.findall(where)]
    if len(parts) >= 2 and parts[0] in ("steps", "verify"):
        ids = [c.id for c in (loaded.spec.steps if parts[0] == "steps" else loaded.spec.verify)]
        if parts[1] in ids:
            parts[1] = ids.index(str(parts[1]))
    try:
        line = _LineMap(loaded.content, str(loaded.path)).line(tuple(parts))
    except SpecError:
        line = None
    return f"{loaded.path}:{line}" if line else str(loaded.path)


def load_intent_file(path: Path) -> LoadedIntent:
    """Read and validate one intent file (never more of it than the size limit)."""
    try:
        # Text mode, as read_text: newlines are translated, so the content hash does not change.
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_INTENT_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror}", path=str(path), hint="Check the path.") from None
    except UnicodeDecodeError:
        raise SpecError("not UTF-8 text", path=str(path), hint="Save the file as UTF-8.") from None
    return LoadedIntent(parse_intent(text, str(path)), path, text)


def intent_dirs() -> list[Path]:
    """User directories from INTENTS_PATH (os.pathsep-separated) first, then the bundled intents."""
    user = list(settings().intents_path)
    return [*user, BUNDLED_DIR]


def intent_files(dirs: list[Path]) -> list[Path]:
    """Every *.yaml / *.yml under the directories (not recursive), in a stable order."""
    files: list[Path] = []
    for directory in dirs:
        if directory.is_dir():
            files += sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    return files


class IntentCatalog:
    """All intents visible to this process; a user intent may override a bundled one by name."""

    def __init__(self, intents: dict[str, LoadedIntent]) -> None:
        self.intents = intents
        self.aliases = {a: name for name, li in intents.items() for a in li.spec.aliases}

    @classmethod
    def discover(cls, dirs: list[Path] | None = None,
                 problems: list[SpecError] | None = None) -> "IntentCatalog":
        """Load every intent file; the first definition of a name wins (user dirs come first).

        Invalid files raise SpecError, or are appended to ``problems`` and skipped when given.
        """
        intents: dict[str, LoadedIntent] = {}
        for path in intent_files(dirs if dirs is not None else intent_dirs()):
            try:
                loaded = load_intent_file(path)
                name = loaded.spec.name
                if name in intents:
                    earlier = intents[name].path
                    if earlier.parent != BUNDLED_DIR and path.parent != BUNDLED_DIR:
                        raise SpecError(f"intent {name!r} is also defined in {earlier}", path=str(path),
                                        line=1, field_path="name", hint="Rename one of them.")
                    continue
            except SpecError as exc:
                if problems is None:
                    raise
                problems.append(exc)
                continue
            intents[name] = loaded
        return cls(intents)

    def get(self, name: str) -> LoadedIntent:
        """Look an intent up by name, job name or alias."""
        key = self.aliases.get(name, name).replace("_", "-")
        if key in self.intents:
            return self.intents[key]
        close = difflib.get_close_matches(name, [*self.intents, *self.aliases], n=1)
        hint = f"Did you mean {close[0]!r}?" if close else "Run `intent list` to see them."
        raise UnknownIntentError(f"no intent named {name!r}", hint=hint)

    def __iter__(self) -> Iterator[LoadedIntent]:
        return iter(self.intents[name] for name in sorted(self.intents))


def step_by_id(spec: IntentSpec) -> dict[str, StepSpec]:
    """Steps keyed by id."""
    return {s.id: s for s in spec.steps}


def find_intent(name: str) -> LoadedIntent:
    """Load one intent by name, reading only ``<name>.yaml`` when it exists (the usual layout).

    Falls back to a full discovery, so aliases and differently named files still resolve.
    """
    key = name.replace("_", "-")
    for directory in intent_dirs():
        for suffix in (".yaml", ".yml"):
            path = directory / f"{key}{suffix}"
            if path.is_file():
                loaded = load_intent_file(path)
                if loaded.spec.name == key:
                    return loaded
    return IntentCatalog.discover().get(name)
