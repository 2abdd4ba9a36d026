"""Failure signatures: normalize a failure message so repeated failures cluster under one id."""

import hashlib
import re

# Order matters: specific shapes first, so a timestamp is not eaten as plain numbers.
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b"), "<ts>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b(0x)?[0-9a-f]{7,64}\b", re.I), "<hex>"),
    (re.compile(r"(?<![\w.])(/[\w.@+-]+)+/?"), "<path>"),
    (re.compile(r"\b\d+(\.\d+)?(ms|s|m|h)?\b"), "<n>"),
    (re.compile(r"\s+"), " "),
]


def normalize(message: str) -> str:
    """The message with numbers, hex ids, uuids, paths and timestamps replaced by placeholders."""
    text = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text.strip()[:300]


def signature(message: str, *, step: str = "", error_class: str = "") -> str:
    """A short stable id for a failure: same step, error class and normalized message, same id."""
    key = "\0".join((step, error_class, normalize(message)))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
