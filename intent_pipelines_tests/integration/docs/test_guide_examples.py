"""The user guide's shell examples, run as written against a throwaway INTENT_HOME with the sample fleet.

Which blocks run is written in the guide itself, as an HTML comment on the line before the fence
(invisible when rendered): ``<!-- doc-test -->`` runs the block, ``<!-- no-doc-test: why -->``
says why a shell block does not run. Options of ``doc-test``:

- ``name=NAME``: other blocks can start from this one's end state with ``after=NAME``;
- ``after=NAME``: run block NAME first (and what it runs after), in the same home;
- ``file=PATH``: a non-shell block (an intent file, a script) is written to PATH before every
  example runs; ``~`` is the example's HOME, a relative path is under its working directory;
- ``output=illustrative``: the output shown comes from some other history; only exit codes count.

In a ``console`` block a ``$ `` line is a command and the lines under it are its output; in a
``bash``/``sh`` block every line is a command. A command must exit 0, or N when it ends with a
``# exit N`` comment. Every output line shown must be a line of the real output, where ``...``/``…``
stands for anything and ids, hashes, numbers, durations and timestamps may differ (exit codes may
not). An id the guide shows in an output stands for the id in that place of the real output from
then on; an id first met in a command, and ``<request-id>``-style placeholders, stand for the
latest request. The sample app's documented port stands for the port the fixture gave it.

Plain ``intent ...`` commands run in process; anything with shell syntax runs in bash, in a
working directory where ``./.intent_home`` and ``./.venv`` are the throwaway home and the
project's venv, as in a checkout. ``export NAME=VALUE`` holds for the rest of the example.
"""

import getpass
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from intent_pipelines.fleet import load_fleet
from intent_pipelines.home import IntentHome
from intent_pipelines.testing import invoke_cli

REPO = Path(__file__).resolve().parents[3]
GUIDE = REPO / "docs" / "guides" / "intent-system-user-guide.md"
SHELL_LANGS = frozenset({"console", "bash", "sh", "shell"})
# The OS user in the guide's outputs ("approved by ops", /home/ops/...): whoever runs the test matches it.
GUIDE_USER = "ops"

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+)(?P<lang>[\w-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>doc-test|no-doc-test)\b(?P<options>.*?)-->\s*$")
_EXIT_COMMENT = re.compile(r"#\s*exit (\d+)\b")
_ELISION = re.compile(r"\.\.\.|…")
_PLACEHOLDER = re.compile(r"<(?:request|run)[ -]id>")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# An id the guide abbreviates: `9c4b5213-...`, `8d0c…`.
_SHORT_ID = re.compile(r"(?<![\w-])(?P<id>[0-9a-f]{4,8})-?(?:\.\.\.|…)")
# In commands: a request id, or a hex word that may be an id or hash shown before (4+ characters).
_COMMAND_ID = re.compile(rf"(?<![\w-])(?P<id>{_UUID}|(?=[0-9a-f]*\d)[0-9a-f]{{4,64}})(?![\w-])")
ID_TOKEN = "\u27e6id\u27e7"
_VOLATILE = re.compile(
    r"(?P<exit>\bexit \d+)"
    r"|(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?|\d{8}T\d{6}Z)"
    rf"|(?P<id>(?<![\w-]){_UUID}(?![\w-])|(?<!\w)(?=[0-9a-f]*\d)[0-9a-f]{{12,64}}(?!\w))"
    r"|(?P<number>(?<!\w)(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|%)?|(?=[0-9a-f]*\d)[0-9a-f]+)(?!\w))")


@dataclass(frozen=True)
class Command:
    """One command of an example: its guide line, text, expected exit code and the output shown."""

    line: int
    text: str
    exit_code: int
    output: tuple[str, ...]


@dataclass(frozen=True)
class Block:
    """A fenced block of the guide with the marker on the line before its fence."""

    line: int  # the fence's line, 1-based
    lang: str
    marker: str  # "doc-test", "no-doc-test" or "" (none)
    options: dict[str, str]
    body: str

    @property
    def is_shell(self) -> bool:
        return self.lang in SHELL_LANGS

    @property
    def test_id(self) -> str:
        name = self.options.get("name")
        return f"guide-line-{self.line}" + (f"-{name}" if name else "")

    def commands(self) -> list[Command]:
        """The block's commands, each with the output lines shown under it."""
        commands: list[Command] = []
        lines = self.body.splitlines()
        index = 0
        while index < len(lines):
            raw, line_no = lines[index], self.line + 1 + index
            index += 1
            prompt = self.lang == "console"
            if prompt and not raw.startswith("$ "):
                if not commands:
                    if raw.strip():
                        raise ValueError(f"guide line {line_no}: output before the first `$ ` command")
                    continue
                last = commands[-1]
                commands[-1] = Command(last.line, last.text, last.exit_code, (*last.output, raw))
                continue
            text = raw[2:] if prompt else raw
            while text.endswith("\\") and index < len(lines):
                text = text[:-1] + lines[index].strip()
                index += 1
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            expected = _EXIT_COMMENT.search(text)
            commands.append(Command(line_no, text.strip(), int(expected.group(1)) if expected else 0, ()))
        return commands


def parse_guide(text: str) -> list[Block]:
    """Every fenced block of the guide, with the doc-test marker (if any) on the line before it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == fence), None)
        if end is None:
            raise ValueError(f"guide line {index + 1}: the fence is never closed")
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line.lstrip()
                         for line in lines[index + 1:end])
        marker = _MARKER.match(lines[index - 1]) if index else None
        kind, options = "", {}
        if marker is not None:
            kind = marker.group("kind")
            if kind == "doc-test":
                options = dict(option.partition("=")[::2] for option in shlex.split(marker.group("options")))
        blocks.append(Block(index + 1, opening.group("lang"), kind, options, body))
        index = end + 1
    return blocks


BLOCKS = parse_guide(GUIDE.read_text(encoding="utf-8"))
BY_NAME = {block.options["name"]: block for block in BLOCKS if "name" in block.options}
EXAMPLES = [block for block in BLOCKS if block.marker == "doc-test" and block.is_shell]
FILES = [block for block in BLOCKS if block.marker == "doc-test" and "file" in block.options]


def prerequisites(block: Block, seen: tuple[int, ...] = ()) -> Iterator[Block]:
    """The blocks to run before ``block`` (its ``after=`` chain), the earliest first."""
    after = block.options.get("after")
    if after is None:
        return
    if after not in BY_NAME:
        raise ValueError(f"guide line {block.line}: after={after} names no block (known: {sorted(BY_NAME)})")
    first = BY_NAME[after]
    if first.line in seen:
        raise ValueError(f"guide line {block.line}: after={after} runs in a circle")
    yield from prerequisites(first, (*seen, block.line))
    yield first


def normalise(text: str, *, guide: bool, known: list[str] | None = None) -> tuple[str, list[str]]:
    """``text`` with volatile values replaced, and the ids it held in order (each id becomes ID_TOKEN).

    ``known`` are the values of the ID_TOKENs already in ``text`` (the guide's abbreviated ids).
    """
    known = list(known or [])
    ids: list[str] = []

    def replace(match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind == "exit":
            return match.group(0)
        if kind == "id":
            ids.append(match.group(0))
            return ID_TOKEN
        return "<ts>" if kind == "ts" else "#"

    # "approved by ops", "(deploy-app) by ops:": the OS user who ran the command.
    user = re.escape(GUIDE_USER if guide else getpass.getuser())
    text = re.sub(rf"(?<=\bby ){user}(?![\w-])", "<user>", text)
    pieces = []
    for piece in re.split(f"({re.escape(ID_TOKEN)})", text):
        if piece == ID_TOKEN:
            ids.append(known.pop(0))
            pieces.append(piece)
        else:
            pieces.append(_VOLATILE.sub(replace, piece))
    return re.sub(r"\s+", " ", "".join(pieces)).strip(), ids


def expected_pattern(line: str) -> tuple[re.Pattern[str], list[str]]:
    """A pattern for the real output line the guide's ``line`` stands for, and the guide's ids in it in order."""
    short: list[str] = []

    def abbreviated(match: re.Match[str]) -> str:
        short.append(match.group("id"))
        return ID_TOKEN

    parts, ids = [], []
    for piece in _ELISION.split(_SHORT_ID.sub(abbreviated, line)):
        tokens = piece.count(ID_TOKEN)
        normal, found = normalise(piece, guide=True, known=short[:tokens])
        del short[:tokens]
        parts.append(re.escape(normal).replace(re.escape(ID_TOKEN), f"({re.escape(ID_TOKEN)})"))
        ids.extend(found)
    return re.compile(".*".join(parts)), ids


@dataclass
class Example:
    """One example's world: the throwaway home, its working directory and what the guide's ids stand for."""

    home: IntentHome
    workdir: Path
    monkeypatch: pytest.MonkeyPatch
    documented_port: int
    port: int
    ids: dict[str, str] = field(default_factory=dict)  # a guide id (prefix) -> the real one

    def run_block(self, block: Block) -> None:
        for command in block.commands():
            self.run_command(block, command)

    def run_command(self, block: Block, command: Command) -> None:
        text = self.substitute(command.text)
        where = f"guide line {command.line}: `{command.text}`"
        code, output = self.execute(text)
        if code == 127 and command.exit_code != 127 and "command not found" in output:
            pytest.skip(f"{where} needs a program that is not installed: {output.strip()}")
        assert code == command.exit_code, f"{where} exited {code}, the guide says {command.exit_code}:\n{output}"
        if block.options.get("output") == "illustrative":
            return
        actual = [normalise(line, guide=False) for line in output.splitlines()]
        missing = [line for line in command.output if line.strip() and not _ELISION.fullmatch(line.strip())
                   and not self.find(line, actual)]
        assert not missing, (f"{where}: output lines the guide shows are missing:\n  " + "\n  ".join(missing)
                             + f"\nthe real output was:\n{output}")

    def find(self, line: str, actual: list[tuple[str, list[str]]]) -> bool:
        """Whether the guide's output ``line`` is a line of ``actual``; binds the guide's ids in it."""
        pattern, guide_ids = expected_pattern(line)
        for text, real_ids in actual:
            match = pattern.fullmatch(text)
            if match is None:
                continue
            for guide_id, group in zip(guide_ids, range(1, (match.lastindex or 0) + 1), strict=False):
                self.ids.setdefault(guide_id[:8], real_ids[text[:match.start(group)].count(ID_TOKEN)])
            return True
        return False

    def substitute(self, text: str) -> str:
        """The command as it must run here: the guide's ids, placeholders and port replaced."""
        text = re.sub(rf"(?<!\d){self.documented_port}(?!\d)", str(self.port), text)
        text = _PLACEHOLDER.sub(lambda _: self.latest_request(), text)

        def real(match: re.Match[str]) -> str:
            guide_id = match.group("id")
            for prefix, value in self.ids.items():
                if guide_id.startswith(prefix) or prefix.startswith(guide_id):
                    return value[:len(guide_id)]  # a prefix stands for a prefix (ids and hashes take them)
            if re.fullmatch(_UUID, guide_id):
                self.ids[guide_id[:8]] = self.latest_request()
                return self.ids[guide_id[:8]]
            return guide_id

        return _COMMAND_ID.sub(real, text)

    def latest_request(self) -> str:
        code, out, err = invoke_cli("status", "--all", "--json")
        assert code == 0, err
        requests = json.loads(out)
        assert requests, "the guide refers to a request, but no request was started before"
        return str(requests[0]["request_id"])

    def execute(self, text: str) -> tuple[int, str]:
        """Run one command line: ``intent ...`` in process, anything else in bash. (exit code, output)."""
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
        if words and words[0] == "export" and len(words) == 2 and "=" in words[1]:
            name, _, value = words[1].partition("=")
            self.monkeypatch.setenv(name, os.path.expandvars(os.path.expanduser(value)))
            return 0, ""
        shell = "`" in text or any(word and set(word) <= set("();<>|&") for word in words)
        if words and words[0] == "intent" and not shell:
            code, out, err = invoke_cli(*(os.path.expandvars(os.path.expanduser(word)) for word in words[1:]))
            return code, out + err
        done = subprocess.run(["bash", "-c", text], cwd=self.workdir, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL, check=False)
        return done.returncode, done.stdout + done.stderr


@pytest.fixture
def example(sample_home: IntentHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Example:
    """A checkout-like working directory on the sample home, with its own HOME and the guide's files."""
    workdir, user_home = tmp_path / "work", tmp_path / "user"
    workdir.mkdir()
    user_home.mkdir()
    (workdir / ".intent_home").symlink_to(sample_home.root)
    (workdir / ".venv").symlink_to(REPO / ".venv")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("PATH", f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    for variable in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(variable, "Guide Reader")
    for variable in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(variable, "reader@example.com")
    for block in FILES:
        target = Path(os.path.expanduser(block.options["file"]))
        target = target if target.is_absolute() else workdir / target
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.body + "\n", encoding="utf-8")
    documented = load_fleet(REPO / "intent_pipelines" / "bundled" / "sample" / "fleet.yaml").app("hello-api").port
    port = load_fleet(sample_home.fleet_file).app("hello-api").port
    return Example(sample_home, workdir, monkeypatch, documented, port)


@pytest.mark.parametrize("block", EXAMPLES, ids=[block.test_id for block in EXAMPLES])
def test_guide_example(block: Block, example: Example) -> None:
    """The guide's example at this line runs as shown: its exit codes and the output lines it shows."""
    for earlier in prerequisites(block):
        example.run_block(earlier)
    example.run_block(block)


def test_every_shell_example_says_whether_it_runs() -> None:
    """Each shell block of the guide is marked doc-test, or no-doc-test with the reason it cannot run."""
    unmarked = [block.line for block in BLOCKS if block.is_shell and not block.marker]
    assert not unmarked, f"shell blocks at guide lines {unmarked} need <!-- doc-test --> or <!-- no-doc-test: why -->"
    assert EXAMPLES, "no guide example is marked <!-- doc-test -->"
