"""Tests of the intent file limits: size, nesting, alias expansion and step count, each a SpecError at its line."""

import time
from pathlib import Path

import pytest
import yaml

from intent_pipelines.errors import SpecError
from intent_pipelines.spec.loader import (
    MAX_INTENT_FILE_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    IntentYamlLoader,
    load_intent_file,
    parse_intent,
)
from intent_pipelines.spec.models import MAX_STEPS

HEAD = "name: demo\nsummary: s\n"
ONE_STEP = "steps:\n  - {id: a, run: [echo]}\n"


def _laughs(levels: int, width: int = 9) -> str:
    """A "billion laughs": each anchor is a list of ``width`` aliases of the one before (``width**levels`` values)."""
    lines = ["l0: &l0 [lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


# (case id, intent text, line the error names, fragment of the problem)
OVER_LIMITS = [
    ("50k-open-brackets", HEAD + "steps: " + "[" * 50_000 + "\n", 3, f"deeper than {MAX_YAML_DEPTH} levels"),
    ("5k-closed-brackets", HEAD + "steps: " + "[" * 5_000 + "]" * 5_000 + "\n", 3, "deeper than"),
    ("deep-mappings", HEAD + "x:\n" + "".join(f"{'  ' * i}k{i}:\n" for i in range(1, 40)) + ONE_STEP,
     MAX_YAML_DEPTH + 2, "deeper than"),
    ("billion-laughs", HEAD + _laughs(9) + ONE_STEP, 8, f"more than {MAX_YAML_NODES:,} values"),
    # Each alias adds its anchor's depth: 20 levels of 10 reach 200 through aliases alone.
    ("depth-through-aliases", HEAD + "".join(
        f"d{i}: &d{i} {'[' * 10}{f'*d{i - 1}' if i else 'x'}{']' * 10}\n" for i in range(20)) + ONE_STEP,
     6, "counting through aliases"),
    ("recursive-alias", HEAD + "loop: &loop [*loop]\n" + ONE_STEP, 3, "refers to the mapping or list it is in"),
    ("10k-steps", HEAD + "steps:\n" + "".join(f"- {{id: s{i}, run: [a]}}\n" for i in range(10_000)), 3,
     f"10,000 steps is more than the limit of {MAX_STEPS}"),
    ("too-many-checks", HEAD + ONE_STEP + "verify:\n" + "".join(
        f"  - {{id: v{i}, run: [a]}}\n" for i in range(MAX_STEPS + 1)), 5, "verify is more than the limit"),
]


@pytest.mark.parametrize(("text", "line", "problem"), [c[1:] for c in OVER_LIMITS], ids=[c[0] for c in OVER_LIMITS])
def test_over_a_limit_is_a_spec_error_at_its_line_in_bounded_time(text: str, line: int, problem: str) -> None:
    """Each hostile file is refused at the line where it goes over, fast, without RecursionError or MemoryError."""
    started = time.monotonic()
    with pytest.raises(SpecError) as refused:
        parse_intent(text, "hostile.yaml")
    assert time.monotonic() - started < 5
    assert problem in refused.value.message
    assert refused.value.one_line().startswith(f"hostile.yaml:{line}: ")
    assert refused.value.exit_code == 3 and "\n" not in refused.value.one_line()


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """A file over MAX_INTENT_FILE_BYTES is refused at line 1 from its first bytes only."""
    big = tmp_path / "big.yaml"
    big.write_text(HEAD + ONE_STEP + "#" * (MAX_INTENT_FILE_BYTES + 1) + "\n")
    with pytest.raises(SpecError, match=rf"big.yaml:1: the file is larger than {MAX_INTENT_FILE_BYTES // 1024} KiB"):
        load_intent_file(big)
    with pytest.raises(SpecError, match="larger than"):
        parse_intent(big.read_text(), "stored")


def test_files_within_the_limits_load_as_before(tmp_path: Path) -> None:
    """Aliases, MAX_STEPS steps and CRLF line ends still load; the content kept is what read_text gives."""
    steps = "".join(f"  - {{id: s{i}, run: [echo, *word]}}\n" for i in range(MAX_STEPS))
    text = HEAD + "x-shared: &word hello\nsteps:\n" + steps
    path = tmp_path / "ok.yaml"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    with pytest.raises(SpecError, match="unknown key 'x-shared'"):  # the alias resolved; the key is still unknown
        load_intent_file(path)
    spec = parse_intent(HEAD + "steps:\n" + steps.replace("*word", "hello"))
    assert len(spec.steps) == MAX_STEPS
    laughs = yaml.load(_laughs(3, width=3), Loader=IntentYamlLoader)  # noqa: S506 - a SafeLoader subclass
    assert laughs["l3"][2][1][0] == ["lol"]


def test_the_node_limit_counts_what_aliases_expand_to() -> None:
    """A file of a few hundred bytes whose aliases expand past MAX_YAML_NODES is refused; a smaller one is not."""
    assert len(_laughs(6, width=7)) < 300
    with pytest.raises(yaml.YAMLError, match="more than"):
        yaml.load(_laughs(6, width=7), Loader=IntentYamlLoader)  # noqa: S506 - 7**6 leaves, 137,258 values
    assert yaml.load(_laughs(6, width=5), Loader=IntentYamlLoader)  # noqa: S506 - 5**6 leaves, 44,000 values
