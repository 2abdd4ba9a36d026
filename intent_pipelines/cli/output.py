"""Console output: rich on a terminal, plain lines otherwise; errors always one line on stderr."""

import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from intent_pipelines import secrets

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output: sorted keys, one document."""
    console.out(secrets.mask(json.dumps(data, indent=2, sort_keys=True, default=str)), highlight=False)


def print_error(message: str) -> None:
    """The one line a user sees for any error."""
    err_console.print(f"[bold red]error:[/] {escape(secrets.mask(message))}", markup=True)
