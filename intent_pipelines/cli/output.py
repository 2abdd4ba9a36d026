"""Console output: rich on a terminal, plain lines otherwise; errors always one short line on stderr."""

import json
import re
from typing import Any

from rich.console import Console
from rich.markup import escape

from intent_pipelines import secrets

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

# An error line echoes what the user typed; these keep it one readable line whatever that was.
MAX_WORD = 200  # a longer run without spaces (a pasted blob, a huge id) keeps its head and its length
MAX_LINE = 1000  # a longer line keeps its start and its end, where the hint says what to do
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LONG_WORD = re.compile(rf"\S{{{MAX_WORD + 1},}}")


def print_json(data: Any) -> None:
    """Machine-readable output: sorted keys, one document."""
    console.out(secrets.mask(json.dumps(data, indent=2, sort_keys=True, default=str)), highlight=False)


def one_line(message: str) -> str:
    """``message`` as one bounded line: whitespace runs become a space, control characters are escaped."""
    text = _SPACES.sub(" ", message).strip()
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    text = _LONG_WORD.sub(lambda m: f"{m.group()[:MAX_WORD // 2]}…({len(m.group())} characters)", text)
    if len(text) > MAX_LINE:
        text = f"{text[:MAX_LINE * 6 // 10]} … {text[-MAX_LINE * 3 // 10:]}"
    return text


def print_error(message: str) -> None:
    """The one line a user sees for any error."""
    err_console.print(f"[bold red]error:[/] {escape(one_line(secrets.mask(message)))}", markup=True, emoji=False)
