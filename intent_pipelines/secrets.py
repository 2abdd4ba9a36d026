"""Secret values: the process-wide set of known secrets, masked in every form they can take in text.

A secret enters the process in one place (a secret param read from the environment, a secret
setting such as the webhook URL) and is registered here; every writer (step logs, audit bodies,
store columns, errors, reports, alerts, Dagster events and metadata, printed lines) masks through
:func:`mask`. Besides the value itself, the forms it takes once quoted or escaped are masked too:
shell-quoted (whole and inside a larger quoted word), JSON- and Python-escaped, URL-encoded,
HTML-escaped, base64 and hex of the whole value, and each line of a multi-line value.

Registration only grows: masking a value of an earlier request in this process is harmless, and
forgetting one too early is a leak.
"""

import base64
import html
import json
import re
import shlex
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
SECRET_ENV_PREFIX = "INTENT_SECRET_"
# Lines of a multi-line secret shorter than this are not masked on their own: a line such as "}" or
# "-----" would blank out unrelated text everywhere, and is no secret by itself.
MIN_LINE = 4
MIN_GUESSED = 8

_lock = threading.Lock()
_values: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None


def forms(secret: str) -> set[str]:
    """Every text form ``secret`` may take in output: raw, quoted, escaped, encoded, per line."""
    found = {secret, shlex.quote(secret), secret.replace("'", "'\"'\"'"), json.dumps(secret)[1:-1],
             json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1], quote(secret, safe=""),
             quote(secret), quote_plus(secret), html.escape(secret),
             base64.b64encode(secret.encode()).decode().rstrip("="),
             base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="), secret.encode().hex()}
    lines = [line.strip() for line in secret.splitlines()]
    if len(lines) > 1:
        for line in lines:
            if len(line) >= MIN_LINE:
                found |= forms(line)
    return {f for f in found if f}


def register(*values: str | None) -> None:
    """Add secret values to mask from now on in this process (empty values are ignored)."""
    global _values, _pattern
    new = {v for v in values if v}
    with _lock:
        if new <= _values:
            return
        _values = _values | new
        every = set().union(*(forms(v) for v in _values))
        # Longest first, so a value is masked whole before any of its lines or shorter forms.
        _pattern = re.compile("|".join(re.escape(f) for f in sorted(every, key=len, reverse=True)))


def register_environment(environ: Mapping[str, str]) -> None:
    """Register the values of variables named like secrets (INTENT_SECRET_*, *_TOKEN, *PASSWORD, ...).

    A guess from the name alone needs a value of MIN_GUESSED characters: INTENT_ALERT_WEBHOOK_ATTEMPTS=3
    is named like a secret, and masking every "3" would ruin every line.
    """
    from intent_pipelines.alerts.scrub import looks_secret

    register(*(v for k, v in environ.items()
               if k.startswith(SECRET_ENV_PREFIX) or (looks_secret(k) and len(v) >= MIN_GUESSED)))


def forget_all() -> None:
    """Start over with no known secrets (tests: each starts as a fresh process would)."""
    global _values, _pattern
    with _lock:
        _values, _pattern = frozenset(), None


def known() -> frozenset[str]:
    """The secret values registered so far."""
    return _values


def mask(text: str) -> str:
    """``text`` with every form of every registered secret replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def mask_data(value: Any) -> Any:
    """A JSON-like value with every string in it (keys too) masked."""
    if _pattern is None:
        return value
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {mask(str(k)) if isinstance(k, str) else k: mask_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_data(v) for v in value]
    return value
