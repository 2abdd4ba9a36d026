"""Hostile intent files, templates and action inputs: each is refused by the real `intent` command, in bounded time and memory.

Every case runs the CLI as its own process under a 1 GiB address-space limit, so a case that
recursed into C (a segfault), ran out of memory or hung would show as a wrong exit code here.
"""

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from intent_pipelines.home import IntentHome
from intent_pipelines.spec.loader import BUNDLED_DIR, MAX_INTENT_FILE_BYTES

MEMORY_LIMIT = 1024**3
# Each case must end within ~5 s on a quiet machine; this one is shared and noisy.
TIME_LIMIT_S = 10.0
HEAD = "name: hostile\nsummary: a hostile intent\n"


def _step(run: str) -> str:
    """An intent whose one step runs ``[echo, <run>]``, ``<run>`` on line 9."""
    return HEAD + "params:\n  text: {type: string, default: ''}\nsteps:\n  - id: s\n    run:\n      - echo\n" \
        f"      - {run!r}\n"


def _laughs() -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return HEAD + "\n".join(lines) + "\nsteps: [{id: s, run: [true]}]\n"


@dataclass(frozen=True)
class Case:
    """A hostile input: the intent file (None for a bundled one), the command, and how it must be refused."""

    id: str
    intent: str | None
    args: tuple[str, ...]
    exit_code: int
    line: int
    problem: str


CASES = [
    # intent files (SpecError, exit 3)
    Case("50k-nested-brackets", HEAD + "steps: " + "[" * 50_000 + "\n", ("validate", "{file}"), 3, 3,
         "nesting is deeper than"),
    Case("5k-nested-brackets", HEAD + "steps: " + "[" * 5_000 + "]" * 5_000 + "\n", ("validate", "{file}"), 3, 3,
         "nesting is deeper than"),
    Case("billion-laughs", _laughs(), ("validate", "{file}"), 3, 8, "more than 100,000 values"),
    Case("recursive-alias", HEAD + "x: &x [*x]\nsteps: [{id: s, run: [true]}]\n", ("validate", "{file}"), 3, 3,
         "refers to the mapping or list it is in"),
    Case("10k-steps", HEAD + "steps:\n" + "".join(f"- {{id: s{i}, run: [a]}}\n" for i in range(10_000)),
         ("validate", "{file}"), 3, 3, "10,000 steps is more than the limit"),
    Case("huge-file", HEAD + "steps: [{id: s, run: [true]}]\n" + "#" * MAX_INTENT_FILE_BYTES + "\n",
         ("validate", "{file}"), 3, 1, "the file is larger than"),
    Case("sandbox-escape", _step("{{ ''.__class__.__mro__[1].__subclasses__() }}"), ("validate", "{file}"), 3, 9,
         "private attribute"),
    Case("range-join", _step("{{ range(10**9)|join }}"), ("plan", "hostile"), 3, 9, "unknown name 'range'"),
    # templates (TemplateError, exit 4)
    Case("power-tower", _step("{{ 9**(9**9) }}"), ("plan", "hostile"), 4, 9, "the result of **"),
    Case("printf-width", _step("{{ '%999999999d' % 1 }}"), ("plan", "hostile"), 4, 9, "the result of %"),
    Case("string-times-billion", _step("{{ 'x' * 10**9 }}"), ("plan", "hostile"), 4, 9, "the result of *"),
    Case("nested-loops", _step("{% for a in params.text %}{% for b in params.text %}{% endfor %}{% endfor %}"),
         ("plan", "hostile", "-p", "text=" + "a" * 9_000), 4, 9, "operations (loop iterations"),
    Case("output-bomb", _step("{% for a in params.text %}{{ params.text }}{% endfor %}"),
         ("plan", "hostile", "-p", "text=" + "a" * 9_000), 4, 9, "the output is longer than"),
    Case("huge-plan", HEAD + "steps:\n" + "".join(
        f"  - id: s{i}\n    run: [echo, \"{{{{ 'x' * 100000 }}}}\"]\n" for i in range(20)),
         ("plan", "hostile"), 4, 25, "render to more than"),
    # action inputs (ParamError, exit 4): refused in preflight, not by a hanging or failing step
    Case("redos-pattern", None, ("run", "check-logs", "-p", "app=hello-api", "-p", "pattern=(a+)+$"), 4, 16,
         "repeats a repeat"),
    Case("bad-regex", None, ("run", "check-logs", "-p", "app=hello-api", "-p", "pattern=(["), 4, 16,
         "is not a valid regular expression"),
    Case("bad-date", None, ("run", "check-logs", "-p", "app=hello-api", "-p", "since=2024-99-99"), 4, 15,
         "neither a duration"),
]


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def intent_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str, float]:
    """Run `intent ARGS` as a fresh process under the memory limit: (exit code, stdout, stderr, seconds)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "from intent_pipelines.cli.main import main; main()", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=60,
                          preexec_fn=_limit_memory)  # noqa: PLW1509 - no threads are started before it
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_input_is_refused_in_one_line_at_its_file_and_line(case: Case, sample_home: IntentHome,
                                                                     tmp_path: Path) -> None:
    """Exit code 3 or 4 as documented, one line naming file:line, no traceback, in bounded time and memory."""
    env = dict(os.environ)
    if case.intent is None:
        file = BUNDLED_DIR / "check-logs.yaml"
    else:
        intents = tmp_path / "intents"
        intents.mkdir()
        file = intents / "hostile.yaml"
        file.write_text(case.intent)
        env["INTENTS_PATH"] = str(intents)
    args = [a.replace("{file}", str(file)) for a in case.args]
    code, out, err, seconds = intent_cli(*args, env=env, cwd=tmp_path)
    assert code == case.exit_code, err
    assert seconds < TIME_LIMIT_S
    located = [line for line in (out + err).splitlines() if f"{file}:{case.line}: " in line]
    assert len(located) == 1 and case.problem in located[0], out + err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err


def test_a_refused_plan_is_not_stored(sample_home: IntentHome, tmp_path: Path) -> None:
    """A plan over its limit leaves the state store as small as it was (it used to grow by 125-300 MB a plan)."""
    intents = tmp_path / "intents"
    intents.mkdir()
    (intents / "hostile.yaml").write_text(next(c.intent for c in CASES if c.id == "huge-plan") or "")
    env = {**os.environ, "INTENTS_PATH": str(intents)}
    for _ in range(2):
        code, _, err, _ = intent_cli("plan", "hostile", env=env, cwd=tmp_path)
        assert code == 4, err
    state = sample_home.root / "state.db"
    assert not state.exists() or state.stat().st_size < 1024**2
