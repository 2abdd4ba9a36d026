"""The environment a step's command sees: an allowlisted base, what the intent declares, nothing else.

The operator's shell may hold the webhook URL, database URLs and tokens; a step gets none of them
unless its intent opts a variable in by name (``inherit_env:``) or sets it (``env:``).
"""

import os
from collections.abc import Iterable, Mapping

# What any command needs to find programs, a home, a locale and a time zone.
BASE_VARIABLES = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM")
BASE_PREFIXES = ("LC_",)
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def step_environment(declared: Mapping[str, str] | None = None, *, inherit: Iterable[str] = (),
                     environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The base variables and the ``inherit`` names taken from ``environ``, then ``declared`` on top."""
    environ = os.environ if environ is None else environ
    wanted = set(BASE_VARIABLES) | set(inherit)
    env = {k: v for k, v in environ.items() if k in wanted or k.startswith(BASE_PREFIXES)}
    env.update(declared or {})
    return env


def given_names(declared: Mapping[str, str] | None, inherit: Iterable[str],
                environ: Mapping[str, str] | None = None) -> list[str]:
    """The variables a step gets beyond the base, by name (what the audit records; never values)."""
    environ = os.environ if environ is None else environ
    return sorted(set(declared or {}) | {name for name in inherit if name in environ})
