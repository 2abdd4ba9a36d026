"""The exit-code table in docs/cli.md is the one errors.py generates, row for row."""

from pathlib import Path

from intent_pipelines.errors import IntentError, exit_code_table

CLI_DOC = Path(__file__).resolve().parents[3] / "docs" / "cli.md"


def documented_rows() -> list[tuple[int, str, str]]:
    text = CLI_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Exit codes"):]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1], cells[2]))
    return rows


def test_docs_table_matches_the_generated_one() -> None:
    """Every error class and code in the docs, in the same order and words (regenerate the table if not)."""
    assert documented_rows() == exit_code_table()


def test_every_error_class_exits_with_a_documented_code() -> None:
    """Each error a user can meet (subclasses elsewhere too) exits with the code of its own or an ancestor's row."""
    import intent_pipelines.confirmation  # noqa: F401  (defines PlanChanged)

    rows = {(code, name) for code, name, _ in exit_code_table()}

    def walk(cls: type[IntentError]) -> list[type[IntentError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in walk(sub))]

    middle = {"IntentError", "Refused", "RunFailed", "Waiting"}
    for cls in walk(IntentError):
        if cls.__name__ in middle:
            continue
        names = {c.__name__ for c in cls.__mro__ if issubclass(c, IntentError)} - middle
        assert any((cls.exit_code, name) in rows for name in names), f"{cls.__name__} (exit {cls.exit_code})"
