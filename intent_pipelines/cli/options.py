"""Option types the commands share: numbers a user types that must be finite and within bounds."""

import math
from typing import Any

import click


class Seconds(click.FloatRange):
    """A finite number of seconds in [min, max]; ``nan`` and ``inf`` are refused like any malformed number."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds
