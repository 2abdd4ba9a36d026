"""Literal secrets in intent and fleet files: a token, password or key written where a reference belongs.

A file names where a secret comes from (a secret param, read from ``INTENT_SECRET_*``, or the
environment); it never holds the secret itself, because files are copied, reviewed, hashed into
the audit log and pasted into tickets. What "looks like a secret" has one definition, the alert
scrubber's (alerts/scrub.py): its rules find the values here, so a value the alerts would mask is a
value the lint refuses. A value that is a template (``{{ params.token }}``) or a shell reference
(``$TOKEN``, ``${TOKEN}``, ``$(cat /run/secrets/x)``) is a reference, not a secret.

A false positive is silenced on its line with detect-secrets' own comment,
``# pragma: allowlist secret``, so one convention serves both this lint and the CI scanner.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass

import yaml

from intent_pipelines.alerts.scrub import MASK, RULES, looks_secret
from intent_pipelines.errors import SpecError
from intent_pipelines.spec.loader import IntentYamlLoader

ALLOWLIST_PRAGMA = "pragma: allowlist secret"
INTENT_HINT = "move it to a secret param (INTENT_SECRET_*) or the environment"
# Fleet values are used as written (no $VAR expansion): commands take a secret from the operator's
# environment by name, and libpq (PostgreSQL) reads a password the URL leaves out from its own.
FLEET_HINT = ("move it to the environment: list the variable under inherit_env, or for a database URL "
              "drop the password and set PGPASSWORD or ~/.pgpass")

_STR_TAG = "tag:yaml.org,2002:str"
_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
# The auth scheme some rules keep in the matched value (`Authorization: Bearer abc`): the secret is after it.
_SCHEME = re.compile(r"(?:bearer|basic|token)\s+", re.IGNORECASE)
# A name like DB_PASSWORD_FILE or TOKEN_ENV says where a secret is, not what it is.
_POINTER_NAME = re.compile(r"[_.-](?:file|path|env|var|name)$", re.IGNORECASE)
# Named values this short, or numbers, are counts and flags (WEBHOOK_ATTEMPTS: "3"), not secrets.
_MIN_NAMED = 4
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
# Token shapes (rules that mask the whole match) first: AWS_ACCESS_KEY_ID=AKIA... is an AWS key before it
# is a named value. Prose fields (summary, help) are only searched for shapes: "token: from $TOKEN" is a sentence.
_SHAPE_RULES = [rule for rule in RULES if rule[1] == MASK]
_NAMED_RULES = [rule for rule in RULES if rule[1] != MASK]
_PROSE = frozenset({"summary", "description", "help"})
# What a token-shape match is, by how it starts (the shapes themselves are the scrubber's rules).
_SHAPES = (("-----BEGIN", "private key"), ("github_pat_", "GitHub token"), ("gh", "GitHub token"),
           ("xox", "Slack token"), ("AKIA", "AWS access key"), ("ASIA", "AWS access key"),
           ("sk-", "API key"), ("eyJ", "JWT"))
# What a named value is, by the first keyword its name contains.
_NAMES = (("pass", "password"), ("private", "private key"), ("key", "API key"), ("token", "token"),
          ("webhook", "webhook URL"), ("credential", "credentials"), ("auth", "token"))

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class LiteralSecret:
    """One literal secret: where it is (file, line, field) and what it looks like."""

    path: str
    line: int
    field: str
    kind: str
    hint: str = INTENT_HINT

    def error(self) -> SpecError:
        """The SpecError ``intent validate`` reports it as."""
        return SpecError(f"literal secret ({self.kind}) in {self.field}; {self.hint}", path=self.path,
                         line=self.line)

    def one_line(self) -> str:
        """The line the CLI prints: ``file:line: literal secret (<kind>) in <field>; <what to do>``."""
        return self.error().one_line()


def find_literal_secrets(text: str, path: str = "<string>", *, hint: str = INTENT_HINT) -> list[LiteralSecret]:
    """Every field of a YAML document whose value holds a literal secret, at most one finding per field.

    Text that is not YAML has no findings here: the loader reports it with its own error.
    """
    try:
        root = yaml.compose(text, Loader=IntentYamlLoader)
    except yaml.YAMLError:
        return []
    if root is None:
        return []
    lines = text.splitlines()
    found: list[LiteralSecret] = []
    for at, name, node in _scalars(root, ()):
        hit = _secret_in(node.value, name)
        if hit is None:
            continue
        kind, position = hit
        line = _line_of(text, node, position)
        if ALLOWLIST_PRAGMA in (lines[line - 1] if 0 < line <= len(lines) else ""):
            continue
        found.append(LiteralSecret(path, line, _dotted(at), kind, hint))
    return found


def _scalars(node: yaml.Node, at: Path_, name: str = "") -> Iterator[tuple[Path_, str, yaml.ScalarNode]]:
    """(path, name of the key it is under, node) of every string value; keys themselves are not values."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(value, (*at, str(key.value)), str(key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _scalars(item, (*at, index))
    elif isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        # A param's default is named by its param: `params.db_password.default: hunter2`.
        if len(at) == 3 and at[0] == "params" and at[2] == "default":
            name = str(at[1])
        yield at, name, node


def _secret_in(value: str, name: str) -> tuple[str, int] | None:
    """(kind, offset in ``value``) of the literal secret in a value under key ``name``, or None.

    A token shape wins (it says the most about the kind), then the key's own name, then a named value
    inside the text (``curl -u x:pw``, ``?token=...``).
    """
    shape = _first_match(value, _SHAPE_RULES)
    if shape is not None or name in _PROSE:
        return shape
    if name and looks_secret(name) and not _POINTER_NAME.search(name):
        start = len(value) - len(value.lstrip())
        scheme = _SCHEME.match(value, start)
        start = scheme.end() if scheme else start
        candidate = value[start:].strip()
        if len(candidate) >= _MIN_NAMED and not _NUMBER.match(candidate) and not _is_reference(value, start):
            return _name_kind(name), start
    return _first_match(value, _NAMED_RULES)


def _first_match(value: str, rules: list[tuple[re.Pattern[str], str]]) -> tuple[str, int] | None:
    """(kind, offset) of the first match of ``rules`` in ``value`` that is not a reference, or None."""
    for pattern, replacement in rules:
        for match in pattern.finditer(value):
            start, end = _secret_span(match, replacement)
            if start < end and not _is_reference(value, start):
                return _match_kind(value[match.start():start], value[start:end]), start
    return None


def _secret_span(match: re.Match[str], replacement: str) -> tuple[int, int]:
    """The part of a scrubber match its replacement turns into ``***``: what it kept is around it."""
    kept_before, _, kept_after = match.expand(replacement).partition(MASK)
    start, end = match.start() + len(kept_before), match.end() - len(kept_after)
    text = match.string
    while start < end and text[start].isspace():
        start += 1
    scheme = _SCHEME.match(text, start, end)
    return (scheme.end() if scheme else start), end


def _is_reference(value: str, start: int) -> bool:
    """Whether the secret starting at ``start`` is a template, an environment reference or already masked."""
    if value.startswith(("$", MASK), start):
        return True
    return any(m.start() <= start < m.end() for m in _TEMPLATE.finditer(value))


def _name_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for word, kind in _NAMES if word in lowered), "secret")


def _match_kind(before: str, secret: str) -> str:
    if "://" in before:
        return "password in URL"
    if before:  # a name (`password=`, `--api-token `) or an auth scheme stands before the value
        word = re.split(r"[\s:=\"']", before.strip().lstrip("-"), maxsplit=1)[0]
        return _name_kind(word) if word.lower() not in {"bearer", "basic"} else "token"
    return next((kind for prefix, kind in _SHAPES if secret.startswith(prefix)), "token")


def _line_of(text: str, node: yaml.ScalarNode, offset: int) -> int:
    """The file line of ``node.value[offset]``: its first line is looked up in the node's source text.

    Block scalars drop indentation and quoted ones escapes, so offsets differ between value and
    source; the secret's own first line, found in the source, does not (the n-th copy for the n-th).
    """
    value: str = node.value
    first: int = node.start_mark.line + 1
    fragment = value[offset:].split("\n", 1)[0].strip()[:40]
    source: str = text[node.start_mark.index:node.end_mark.index]
    if fragment:
        seen, at = value[:offset].count(fragment), -1
        for _ in range(seen + 1):
            at = source.find(fragment, at + 1)
            if at < 0:
                break
        if at >= 0:
            return first + source[:at].count("\n")
    if node.style in ("|", ">"):  # the content starts on the line after the indicator
        return first + 1 + value[:offset].count("\n")
    return first


def _dotted(at: Path_) -> str:
    """``steps[0].env.DB_PASSWORD``: the field path as the loader's errors write it."""
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
