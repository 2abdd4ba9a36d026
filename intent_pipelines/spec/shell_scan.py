"""Read a shell string as sh does: the quoting context of each {{ }}, and the words of each command."""

import re
from dataclasses import dataclass, field

from jinja2 import Environment, TemplateSyntaxError

# A bare template in a command's words (the argv check looks for "{{").
PLACEHOLDER = "{{ }}"


@dataclass(frozen=True)
class Scanned:
    """What sh would make of a shell string, as far as its templates are concerned.

    ``templates`` holds (source, place) per {{ }} in order. The place is "" for a bare word or part
    of one, else where it sits: sq, dq, ansi ($'...'), bt (backticks), brace (${...}), arith
    ($((...))), comment, heredoc, backslash (right after one), dollar (right after $).
    ``commands`` holds the words of each simple command, quotes removed, bare templates as PLACEHOLDER.
    """

    templates: tuple[tuple[str, str], ...]
    commands: tuple[tuple[str, ...], ...]


def scan(command: str) -> Scanned | None:
    """Scan one `shell: true` string; None when its templates do not lex (the loader reports that)."""
    flat = _flatten(command)
    if flat is None:
        return None
    text, snippets = flat
    reader = _Reader(text)
    reader.run()
    return Scanned(tuple(zip(snippets, reader.places, strict=True)), tuple(map(tuple, reader.commands)))


# rendering.py renders with Jinja's default delimiters; lexing with them finds each {{ }} exactly,
# quotes and braces inside the expression included.
_LEXER = Environment(keep_trailing_newline=True)
_MARK = "\x00"  # stands for one {{ }} in the text being scanned (NUL can reach no shell anyway)


def _flatten(command: str) -> tuple[str, list[str]] | None:
    """The command with each {{ }} replaced by _MARK, and the source of each; None if it does not lex."""
    text: list[str] = []
    snippets: list[str] = []
    inside: list[str] | None = None
    try:
        for _, kind, value in _LEXER.lex(command):
            if inside is not None:
                inside.append(value)
                if kind == "variable_end":
                    snippets.append("".join(inside))
                    inside = None
            elif kind == "variable_begin":
                inside = [value]
                text.append(_MARK)
            elif kind == "data":  # {% %} tags and {# #} comments add no text of their own
                text.append(value.replace(_MARK, ""))
    except TemplateSyntaxError:
        return None
    if inside is not None:
        snippets.append("".join(inside))
    return "".join(text), snippets


@dataclass
class _Command:
    """The words of the simple command being read in one command context."""

    words: list[str] = field(default_factory=list)
    current: str | None = None
    redirect: bool = False  # the next word is a redirection target, not an argument


class _Reader:
    """One pass over a shell string with a stack of quoting contexts; each step reads one or more characters."""

    def __init__(self, text: str) -> None:
        self.text = text
        # Contexts: cmd (top level, $( ), ( )), sq, dq, ansi, bt, brace, arith, paren, comment.
        self.stack = ["cmd"]
        self.open: list[_Command] = [_Command()]  # one per cmd on the stack
        self.commands: list[list[str]] = []
        self.places: list[str] = []  # per template in order: its place (see Scanned)
        self.heredocs: list[tuple[str, bool]] = []  # delimiters still to read, and whether tabs are stripped

    def run(self) -> None:
        i = 0
        while i < len(self.text):
            i = self._step(i)
        while self.open:
            self._end_command()
            self.open.pop()

    def _template(self, place: str) -> None:
        self.places.append("bt" if "bt" in self.stack else "arith" if place == "paren" else place)
        if not self.places[-1]:
            self._add(PLACEHOLDER)

    def _add(self, text: str) -> None:
        command = self.open[-1]
        command.current = (command.current or "") + text

    def _push(self, context: str) -> None:
        if context == "cmd":
            self.open.append(_Command())
        else:
            self._add("")  # a quote or expansion starts a word, even an empty one
        self.stack.append(context)

    def _pop(self) -> None:
        if self.stack.pop() == "cmd":
            self._end_command()
            self.open.pop()

    def _end_word(self) -> None:
        command = self.open[-1]
        if command.current is not None and not command.redirect:
            command.words.append(command.current)
        command.redirect = command.redirect and command.current is None
        command.current = None

    def _end_command(self) -> None:
        self._end_word()
        if self.open[-1].words:
            self.commands.append(self.open[-1].words)
        self.open[-1].words = []

    def _step(self, i: int) -> int:
        text, top = self.text, self.stack[-1]
        char, following = text[i], text[i + 1:i + 2]
        if char == _MARK:
            self._template("" if top == "cmd" else top)
        elif top == "sq" or (top == "ansi" and char != "\\"):
            if char == "'":
                self._pop()
            else:
                self._add(char)
        elif top == "comment":
            if char == "\n":
                self.stack.pop()
                return i  # the newline still ends the command
        elif char == "\\":
            if following == _MARK:
                # A template's opening quote would be escaped (in double quotes it is already refused).
                self._template("backslash" if top == "cmd" else top)
            elif top != "bt":
                self._add(following if following != "\n" else "")
            return i + 2
        elif top == "bt":
            if char == "`":
                self.stack.pop()
        elif char == "$":
            return self._dollar(i)
        elif top == "dq":
            if char == '"':
                self._pop()
            elif char == "`":
                self._push("bt")
            else:
                self._add(char)
        elif top == "brace":
            if char == "}":
                self.stack.pop()
            elif char in "'\"" and not (char == "'" and self.stack[-2] == "dq"):
                self._push("sq" if char == "'" else "dq")
        elif top in ("arith", "paren"):
            if char == "(":
                self.stack.append("paren")
            elif char == ")":
                self.stack.pop()
                return i + 2 if top == "arith" and following == ")" else i + 1
        else:
            return self._command_char(i)
        return i + 1

    def _dollar(self, i: int) -> int:
        text, top = self.text, self.stack[-1]
        following = text[i + 1:i + 2]
        if following == _MARK:
            self._template("dollar" if top == "cmd" else top)
            return i + 2
        if text.startswith("$((", i):
            self._push("arith")
            return i + 3
        contexts = {"(": "cmd", "{": "brace"} | ({"'": "ansi", '"': "dq"} if top == "cmd" else {})
        if following in contexts:
            self._add("")
            self._push(contexts[following])
            return i + 2
        self._add("$")
        return i + 1

    def _command_char(self, i: int) -> int:
        char = self.text[i]
        command = self.open[-1]
        if char in "'\"`":
            self._push({"'": "sq", '"': "dq", "`": "bt"}[char])
        elif char == "#" and command.current is None:
            self.stack.append("comment")
        elif char in " \t":
            self._end_word()
        elif char == "\n":
            self._end_command()
            return self._heredoc_bodies(i + 1)
        elif char in ";&|":
            self._end_command()
        elif char == "(":
            self._end_command()
            command.redirect = False
            self._push("cmd")
        elif char == ")":
            if len(self.open) > 1:
                self._pop()
            else:
                self._end_command()  # a `case` pattern, or unbalanced: a separator either way
        elif char in "<>":
            return self._redirect(i)
        else:
            self._add(char)
        return i + 1

    def _redirect(self, i: int) -> int:
        text = self.text
        if text.startswith("<<", i) and not text.startswith("<<<", i):
            return self._heredoc_start(i + 2)
        command = self.open[-1]
        if command.current is not None and command.current.isdigit():
            command.current = None  # the fd of 2>&1
        self._end_word()
        while i < len(text) and text[i] in "<>&|":
            i += 1
        command.redirect = True
        return i

    def _heredoc_start(self, i: int) -> int:
        text = self.text
        self._end_word()
        strip = text.startswith("-", i)
        i += strip
        while i < len(text) and text[i] in " \t":
            i += 1
        start = i
        while i < len(text) and text[i] not in " \t\n;&|()<>":
            close = text.find(text[i], i + 1) if text[i] in "'\"" else -1
            i = close + 1 if close != -1 else i + 1
        for _ in range(text[start:i].count(_MARK)):
            self._template("heredoc")  # the body's end cannot be known
        delimiter = re.sub(r"['\"\\]", "", text[start:i])
        self.heredocs.append((delimiter, strip))
        return i

    def _heredoc_bodies(self, i: int) -> int:
        text = self.text
        while self.heredocs and i < len(text):
            delimiter, strip = self.heredocs[0]
            end = text.find("\n", i)
            end = len(text) if end == -1 else end
            line = text[i:end]
            if (line.lstrip("\t") if strip else line) == delimiter:
                self.heredocs.pop(0)
            for _ in range(line.count(_MARK)):
                self._template("heredoc")
            i = end + 1
        return min(i, len(text))
