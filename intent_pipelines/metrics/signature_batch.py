r"""alerts.signatures.signature for many failures at once: Arrow's regex kernels where provably identical, else Python.

A day of a busy fleet can hold tens of thousands of failures whose messages all differ (numbers,
ids, paths); six Python regex substitutions each cost ~15 µs a message, seconds in all. For plain
ASCII messages the same rules run as Arrow (RE2) kernels over the whole column, which agree with
Python's ``re`` there: ``\b \d \w \s`` are ASCII classes in both once the text is ASCII and holds
none of the control characters Python counts as whitespace or line breaks but RE2 does not
(\v \f \x1c-\x1f). The path rule's look-behind, which RE2 lacks, becomes a captured preceding
character; that only differs after a path ending in "/" directly followed by another "/" (the
consumed "/" hides the next path's start), so messages where a path character ([\w.@+-]) precedes
"//" take the Python path too. A "//" after anything else (``http://host``) cannot end a path match:
a path match only ends before "/" through its optional trailing "/", itself after a path character.

The translation is tied to the exact rules in alerts/signatures.py: if those change, ``FAST`` turns
False and every message goes through ``signature`` itself (tests say so loudly), so the two can
never silently disagree.
"""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from intent_pipelines.alerts import signatures

# The rules this translation was written for: (pattern, flags, replacement) of signatures._RULES.
_KNOWN: Final = [
    (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b", 32, "<ts>"),
    (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", 34, "<uuid>"),
    (r"\b(0x)?[0-9a-f]{7,64}\b", 34, "<hex>"),
    (r"(?<![\w.])(/[\w.@+-]+)+/?", 32, "<path>"),
    (r"\b\d+(\.\d+)?(ms|s|m|h)?\b", 32, "<n>"),
    (r"\s+", 32, " "),
]
# The same rules for RE2, in order, with Arrow's replacement syntax.
_RE2: Final = [
    (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b", "<ts>"),
    (r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<uuid>"),
    (r"(?i)\b(0x)?[0-9a-f]{7,64}\b", "<hex>"),
    (r"(^|[^\w.])(?:/[\w.@+-]+)+/?", r"\1<path>"),
    (r"\b\d+(\.\d+)?(ms|s|m|h)?\b", "<n>"),
    (r"\s+", " "),
]
_WHITESPACE: Final = " \t\n\r"
_MAX: Final = 300
_PER_THREAD: Final = 10_000  # fewer messages per thread than this are not worth a thread
FAST: Final = [(p.pattern, int(p.flags), r) for p, r in signatures._RULES] == _KNOWN


def _python(step: str, error_class: str, message: str) -> str:
    return signatures.signature(message, step=step, error_class=error_class)


def normalize_many(messages: pa.Array) -> pa.Array:
    """signatures.normalize of every (ASCII-safe) message, vectorized; callers route the rest to Python.

    Large batches are split across threads (the regex kernels release the GIL).
    """
    workers = min(os.cpu_count() or 1, len(messages) // _PER_THREAD)
    if workers > 1:
        size = -(-len(messages) // workers)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_normalize, (messages.slice(i, size) for i in range(0, len(messages), size))))
        return pa.concat_arrays(parts)
    return _normalize(messages)


def _normalize(messages: pa.Array) -> pa.Array:
    text = pc.utf8_trim(messages, characters=_WHITESPACE)
    text = pc.replace_substring_regex(text, r"(?s)[\r\n].*", "")  # first line
    for pattern, replacement in _RE2:
        text = pc.replace_substring_regex(text, pattern, replacement)
    return pc.utf8_slice_codeunits(pc.utf8_trim(text, characters=_WHITESPACE), 0, _MAX)


def signature_many(steps: list[str | None], classes: list[str | None], errors: list[str | None]) -> list[str | None]:
    """signature(error, step=, error_class=) for each failure (None where it has neither error nor class)."""
    n = len(errors)
    out: list[str | None] = [None] * n
    wanted = [i for i in range(n) if errors[i] is not None or classes[i] is not None]
    if not wanted:
        return out
    texts = pa.array([errors[i] or "" for i in wanted], type=pa.string())
    if FAST:
        safe = pc.and_(pc.string_is_ascii(texts), pc.invert(pc.match_substring_regex(
            texts, r"[\x0b\x0c\x1c-\x1f]|[\w.@+-]//")))
        safe_mask = np.asarray(pc.fill_null(safe, False).to_numpy(zero_copy_only=False), dtype=bool)
    else:
        safe_mask = np.zeros(len(wanted), dtype=bool)
    normalized = normalize_many(texts).to_pylist() if safe_mask.any() else [None] * len(wanted)
    sha256 = hashlib.sha256
    cache: dict[tuple[str, str, str], str] = {}
    for j, i in enumerate(wanted):
        step, error_class = steps[i] or "", classes[i] or ""
        if safe_mask[j]:
            key = (step, error_class, normalized[j] or "")
            found = cache.get(key)
            if found is None:
                found = cache[key] = sha256("\0".join(key).encode("utf-8")).hexdigest()[:12]
        else:
            found = _python(step, error_class, errors[i] or "")
        out[i] = found
    return out
