"""Refuse templates that a shell or interpreter would parse as code, in argv lists and in shell strings."""

import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from intent_pipelines.spec.shell_scan import scan


@dataclass(frozen=True)
class Finding:
    """Interpolated text that would run as code: what is wrong, what to do, and which argv element."""

    problem: str
    hint: str
    index: int | None = None  # the argv element; None for a shell string


@dataclass(frozen=True)
class _Family:
    """A kind of program text, and how to hand values to it instead of interpolating them."""

    label: str
    advice: str


_SHELL = _Family("a shell script", "Pass each value as an argument after the script and read it as \"$1\" "
                                   "(sh -c 'echo \"$1\"' sh VALUE)")


def _argv_family(lang: str, argv: str) -> _Family:
    return _Family(f"a {lang} script", f"Pass each value as an argument after the script and read it from {argv}")


_ENV_SPLIT = _Family("an env -S string", "Give each value its own argv element instead of using env -S")
_SSH = _Family("an ssh remote command", "Send values on stdin (printf '%s\\n' VALUE | ssh HOST 'read -r v; ...'): "
                                        "ssh hands every word after the host to the remote shell")
_SSH_OPTION = _Family("an ssh command option", "Put the command in an ssh config file (ssh -F FILE) instead")
_SU = _Family("an su command", "Run the command with sudo -u USER and an argv instead of su -c")
_EVAL = _Family("an eval or trap argument", "Call the command directly: eval and trap run their arguments as code")

# (text, position in the argv it came from); `env -S` splits one argv element into several words.
_Word = tuple[str, int]


def _opts(names: str) -> frozenset[str]:
    return frozenset(names.split())


def _interpolates(text: str) -> bool:
    return "{{" in text or "{%" in text


def _starts_template(text: str) -> bool:
    return text.startswith(("{{", "{%"))


def _program(word: str) -> str:
    """The program a command word names: /usr/bin/python3.11 -> python, nodejs -> node."""
    base = re.sub(r"[\d.]+$", "", word.rsplit("/", 1)[-1])
    return _ALIASES.get(base, base)


class _Opt(NamedTuple):
    name: str | None  # the option taking a value, a long option, or None for a cluster of flags
    value: int | None  # where its value is: this word (attached: -Wx, --eval=x) or the next
    text: str  # the value itself
    next: int  # the next word to read


def _option(words: list[_Word], i: int, valued: frozenset[str], attached: frozenset[str] = frozenset()) -> _Opt:
    """Read the option word at ``i``; ``attached`` options only take a value in their own word (perl -MFoo)."""
    word = words[i][0]
    has_next = i + 1 < len(words)
    following = _Opt(None, i + 1 if has_next else None, words[i + 1][0] if has_next else "", i + 2)
    if word in valued:
        return following._replace(name=word)
    if word.startswith("--"):
        name, eq, rest = word.partition("=")
        return _Opt(name, i if eq else None, rest, i + 1)
    for at in range(1, len(word)):
        name, rest = "-" + word[at], word[at + 1:]
        if name in attached or (name in valued and rest):
            return _Opt(name, i, rest, i + 1)
        if name in valued:
            return following._replace(name=name)
    return _Opt(None, None, "", i + 1)


@dataclass(frozen=True)
class _Interpreter:
    """How an interpreter takes program text: in option values, or as its first operand (awk)."""

    family: _Family
    script: frozenset[str]  # options whose value is program text
    valued: frozenset[str] = frozenset()  # other options that take a value
    attached: frozenset[str] = frozenset()  # options whose value can only be attached
    stop: frozenset[str] = frozenset()  # options after which the rest are arguments (python -m)
    files: frozenset[str] = frozenset()  # options naming a program file (awk -f): no program operand
    program_operand: bool = False


_INTERPRETERS = {
    "fish": _Interpreter(_SHELL, _opts("-c --command -C --init-command"), _opts("-d --debug -o --debug-output")),
    "python": _Interpreter(_argv_family("python", "sys.argv"), _opts("-c"),
                           _opts("-W -X --check-hash-based-pycs"), stop=_opts("-m")),
    "perl": _Interpreter(_argv_family("perl", "@ARGV"), _opts("-e -E"), _opts("-I"),
                         attached=_opts("-M -m -x -i -d -D -F")),
    "ruby": _Interpreter(_argv_family("ruby", "ARGV"), _opts("-e"), _opts("-I -r -C -E"),
                         attached=_opts("-x -0 -K -T -W -F")),
    "node": _Interpreter(_argv_family("node", "process.argv"), _opts("-e --eval -p --print -pe"),
                         _opts("-r --require --import --loader --experimental-loader -C --conditions")),
    "php": _Interpreter(_argv_family("php", "$argv"), _opts("-r -B -R -E"), _opts("-c -d -z"), stop=_opts("-f")),
    "lua": _Interpreter(_argv_family("lua", "arg"), _opts("-e"), _opts("-l")),
    "awk": _Interpreter(_Family("an awk program", "Pass each value with -v name=VALUE and use name in the program"),
                        _opts("-e --source"), _opts("-F -v -i -l --field-separator --assign --include --load"),
                        files=_opts("-f --file -E --exec"), program_operand=True),
}
_SHELLS = _opts("sh bash rbash dash zsh ksh mksh ash yash posh csh tcsh")
_ALIASES = {"pypy": "python", "nodejs": "node", "luajit": "lua", "gawk": "awk", "mawk": "awk", "nawk": "awk",
            "runuser": "su"}
# Programs recognised wherever they appear in an argv, so that wrappers this module does not know
# (docker exec, kubectl exec --, chroot DIR, ssh-agent...) still cannot hide `sh -c`. awk is left
# out: its program is a bare operand, and `apt-get install gawk {{ pkg }}` must stay allowed.
_ANYWHERE = _SHELLS | {name for name, spec in _INTERPRETERS.items() if not spec.program_operand}
_SHELL_VALUED = _opts("--rcfile --init-file")


def _shell_script(words: list[_Word]) -> Iterator[_Word]:
    """The script of `sh [options] -c script [name [args...]]`: the first operand once -c is given."""
    command_mode = False
    i = 1
    while i < len(words):
        word = words[i][0]
        if word in ("--", "-"):
            i += 1
            break
        if _starts_template(word) and not command_mode:
            i += 1  # it may render to an option: read on rather than take it for a script file
            continue
        if word[:1] not in ("-", "+") or len(word) == 1:
            break
        if not word.startswith("--"):
            command_mode = command_mode or (word[0] == "-" and "c" in word)
        i += 2 if word in _SHELL_VALUED or word[-1] in "oO" else 1  # -o pipefail, +O extglob
    if command_mode and i < len(words):
        # Words after the script become $0, $1...: the shell never parses them, so they may be templates.
        yield words[i]


def _interpreter_scripts(words: list[_Word], spec: _Interpreter) -> Iterator[_Word]:
    valued = spec.script | spec.valued | spec.stop | spec.files
    i, has_program = 1, False
    while i < len(words):
        word = words[i][0]
        if word == "--":
            i += 1
            break
        if _starts_template(word) and not spec.program_operand:
            i += 1  # as for shells: it may render to an option
            continue
        if not word.startswith("-") or word == "-":
            break
        opt = _option(words, i, valued, spec.attached)
        if opt.name in spec.stop:
            return
        if opt.name in spec.script and opt.value is not None:
            yield words[opt.value]
        has_program = has_program or opt.name in spec.script | spec.files
        i = opt.next
    # Operands after the program are the script's arguments (sys.argv, @ARGV, awk's files): never code.
    if spec.program_operand and not has_program and i < len(words):
        yield words[i]


@dataclass(frozen=True)
class _Wrapper:
    """A program that runs another command given after its options (and a fixed number of operands)."""

    valued: frozenset[str] = frozenset()
    operands: int = 0  # timeout's DURATION, chroot's NEWROOT, flock's lock file
    assignments: bool = False  # NAME=value words may come before the command
    split: frozenset[str] = frozenset()  # env -S: the value is split into more words
    script: frozenset[str] = frozenset()  # flock -c: the value is a shell command


_WRAPPERS = {
    "env": _Wrapper(_opts("-u --unset -C --chdir"), assignments=True, split=_opts("-S --split-string")),
    # sudo -s/-i run the command through a shell, but sudo backslash-escapes each argument first.
    "sudo": _Wrapper(_opts("-u --user -g --group -C --close-from -D --chdir -h --host -p --prompt -r --role "
                           "-t --type -U --other-user -T --command-timeout -R --chroot"), assignments=True),
    "doas": _Wrapper(_opts("-u -C")),
    "nice": _Wrapper(_opts("-n --adjustment")),
    "nohup": _Wrapper(),
    "setsid": _Wrapper(),
    "command": _Wrapper(),
    "builtin": _Wrapper(),
    "exec": _Wrapper(_opts("-a")),
    "timeout": _Wrapper(_opts("-s --signal -k --kill-after"), operands=1),
    "chroot": _Wrapper(_opts("--userspec --groups"), operands=1),
    "flock": _Wrapper(_opts("-w --wait --timeout -E --conflict-exit-code"), operands=1, script=_opts("-c --command")),
    "stdbuf": _Wrapper(_opts("-i -o -e --input --output --error")),
    "time": _Wrapper(_opts("-f --format -o --output")),
    "ionice": _Wrapper(_opts("-c --class -n --classdata -p --pid -P --pgid -u --uid")),
    "xargs": _Wrapper(_opts("-a --arg-file -d --delimiter -E -I -L --max-lines -n --max-args -P --max-procs "
                            "-s --max-chars --process-slot-var")),
}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _wrapped(words: list[_Word], spec: _Wrapper) -> Iterator[tuple[_Word, _Family]]:
    valued = spec.valued | spec.split | spec.script
    i = 1
    while i < len(words):
        word = words[i][0]
        if word == "--":
            i += 1
            break
        if spec.assignments and _ASSIGNMENT.match(word):
            i += 1
            continue
        if not word.startswith("-"):
            break
        opt = _option(words, i, valued)
        if opt.value is not None and opt.name in spec.script:
            yield words[opt.value], _SHELL
        if opt.value is not None and opt.name in spec.split:
            yield words[opt.value], _ENV_SPLIT
            try:
                split = shlex.split(opt.text)
            except ValueError:
                split = []  # env refuses unbalanced quotes, so nothing runs
            words = [*words[:i], *((part, words[opt.value][1]) for part in split), *words[opt.next:]]
            continue
        i = opt.next
    i += spec.operands
    if i + 1 < len(words) and words[i][0] in spec.script:
        yield words[i + 1], _SHELL
    yield from _scripts(words[i:])


_SSH_VALUED = _opts("-B -b -c -D -E -e -F -I -i -J -L -l -m -O -o -P -p -Q -R -S -W -w")


def _ssh(words: list[_Word]) -> Iterator[tuple[_Word, _Family]]:
    i = 1
    while i < len(words) and words[i][0].startswith("-"):
        if words[i][0] == "--":
            i += 1
            break
        opt = _option(words, i, _SSH_VALUED)
        if opt.name == "-o" and opt.value is not None and "command" in opt.text.lower():
            yield words[opt.value], _SSH_OPTION  # ProxyCommand, LocalCommand...: run by a shell
        i = opt.next
    # words[i] is the host; ssh joins everything after it with spaces for the remote shell to parse.
    for word in words[i + 1:]:
        yield word, _SSH


def _su(words: list[_Word]) -> Iterator[tuple[_Word, _Family]]:
    # su passes the arguments after the user on to the shell, so `su USER -c script` counts too.
    for i, (word, _) in enumerate(words):
        if word == "--" and any(option in ("-u", "--user") for option, _ in words[1:i]):
            yield from _scripts(words[i + 1:])  # runuser -u USER -- COMMAND runs it without a shell
            return
        if word.startswith(("--command=", "--session-command=")):
            yield words[i], _SU
        elif (word in ("--command", "--session-command") or re.fullmatch(r"-[A-Za-z]*[cC]", word)) \
                and i + 1 < len(words):
            yield words[i + 1], _SU


def _find(words: list[_Word]) -> Iterator[tuple[_Word, _Family]]:
    for i, (word, _) in enumerate(words):
        if word in ("-exec", "-execdir", "-ok", "-okdir"):
            end = next((j for j in range(i + 1, len(words)) if words[j][0] in (";", "+")), len(words))
            yield from _scripts(words[i + 1:end])


def _scripts(words: list[_Word]) -> Iterator[tuple[_Word, _Family]]:
    """The words that the command ``words`` runs as program text, through any wrappers."""
    if not words:
        return
    name = _program(words[0][0])
    if name in _WRAPPERS:
        yield from _wrapped(words, _WRAPPERS[name])
    elif name in _SHELLS:
        yield from ((word, _SHELL) for word in _shell_script(words))
    elif name in _INTERPRETERS:
        spec = _INTERPRETERS[name]
        yield from ((word, spec.family) for word in _interpreter_scripts(words, spec))
    elif name == "busybox":
        yield from _scripts(words[1:])
    elif name == "ssh":
        yield from _ssh(words)
    elif name == "su":
        yield from _su(words)
    elif name == "find":
        yield from _find(words)
    elif name == "eval":
        yield from ((word, _EVAL) for word in words[1:])
    elif name == "trap":
        action = words[2:3] if words[1:2] and words[1][0] == "--" else words[1:2]
        yield from ((word, _EVAL) for word in action)


def _first_interpolated(argv: Sequence[str]) -> tuple[int, _Family] | None:
    """The first program-text argument that holds a template, and what kind of program reads it."""
    words = [(word, index) for index, word in enumerate(argv)]
    for start in range(len(words)):
        if start == 0 or _program(words[start][0]) in _ANYWHERE:
            for (text, index), family in _scripts(words[start:]):
                if _interpolates(text):
                    return index, family
    return None


def check_argv(argv: Sequence[str]) -> Finding | None:
    """Refuse an argv that hands a shell or interpreter program text containing a template."""
    found = _first_interpolated(argv)
    if found is None:
        return None
    index, family = found
    hint = family.advice + (", or write `run` as one string with `shell: true`." if family is _SHELL else ".")
    return Finding(f"{family.label} in an argv interpolates templates unquoted", hint, index)


# Where a template must not sit in a shell string (see shell_scan.Scanned), and what to do instead.
# Anywhere else (a bare word, `--flag={{ x }}`, inside `$( )`) its shell-quoted value is one literal word.
_BARE = "Write the template bare; every value is shell-quoted for you."
_PLACES = {
    "sq": ("inside single quotes", _BARE),
    "dq": ("inside double quotes", _BARE),
    "ansi": ("inside $'...' quotes", _BARE),
    "bt": ("inside backticks", "Use $( ) instead of backticks and write the template bare inside it."),
    "brace": ("inside ${...}", "Assign the value to a variable first (v={{ x }}) and expand the variable."),
    "arith": ("inside $((...))", "Assign the value to a variable first (n={{ x }}) and use $((n ...))."),
    "comment": ("inside a comment", "Take the template out of the comment: a newline in the value ends it."),
    "heredoc": ("inside a here-document",
                "Set the value in `env:` and write $NAME in the here-document; its body is not shell-quoted."),
    "backslash": ("right after a backslash", "Remove the backslash; every value is shell-quoted for you."),
    "dollar": ("right after $", "Remove the $; every value is shell-quoted for you."),
}
_KEYWORDS = _opts("! { } if then elif else fi do done while until")


def _command_words(words: Sequence[str]) -> Sequence[str]:
    """A simple command without its leading keywords and NAME=value assignments."""
    start = 0
    while start < len(words) and (words[start] in _KEYWORDS or _ASSIGNMENT.match(words[start])):
        start += 1
    return words[start:]


def check_shell(command: str) -> Finding | None:
    """Refuse a `shell: true` string whose template sits where its shell quoting would not hold."""
    scanned = scan(command)
    if scanned is None:
        return None  # the loader's template check reports the syntax error, with its line
    for source, place in scanned.templates:
        if place:
            where, hint = _PLACES[place]
            return Finding(f"`{source}` sits {where} in a shell string", hint)
    for words in scanned.commands:
        found = _first_interpolated(_command_words(words))
        if found is not None:
            family = found[1]
            return Finding(f"{family.label} in a shell string interpolates templates "
                           "(the outer shell strips their quoting first)", family.advice + ".")
    return None
