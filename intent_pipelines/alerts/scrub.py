"""Scrubbing: mask anything that looks like a secret before text leaves the host in an alert.

The engine already masks the values of secret params. This is the second, conservative net for
secrets that were never declared as such: ``password=...``, bearer tokens, credentials in URLs and
the well-known token shapes of common services.
"""

import re

MASK = "***"

# Names that mark their value as secret: `api_key=...`, `DB_PASSWORD`, `X-Auth-Token: ...`. The keyword
# may be glued to a prefix (PGPASSWORD); short ones must stand between separators, so AUTHOR or
# PASSENGER are not secrets but GITHUB_TOKEN and X-Auth-Token are.
_LONG = r"(?:password|passwd|secrets?|tokens?|apikey|(?:api|access|private|secret|signing)[_-]?key|" \
        r"credentials?|webhook)"
_SHORT = r"(?:pass|auth|authorization|cookie|signature|dsn)"
_SECRET_NAME = rf"(?:[\w.-]*{_LONG}|(?:[\w.-]*[_.-])?{_SHORT})(?:[_.-][\w.-]*)?"
_SECRET_NAME_RE = re.compile(rf"^{_SECRET_NAME}$", re.IGNORECASE)

# Public: the literal-secret lint (spec/secret_lint.py) finds values with the same rules.
RULES: list[tuple[re.Pattern[str], str]] = [
    # name=value, name: value, "name": "value", `Authorization: Bearer abc` (value up to whitespace,
    # quote, comma, ampersand or semicolon)
    (re.compile(rf"(?<![\w.-])({_SECRET_NAME}[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',&;]+",
                re.IGNORECASE), rf"\1{MASK}"),
    # --password VALUE, --api-token=VALUE
    (re.compile(rf"(--{_SECRET_NAME}[ =])(?!\*\*\*)\S+", re.IGNORECASE), rf"\1{MASK}"),
    # `bearer abc...` without a name in front
    (re.compile(r"\b(bearer|basic)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), rf"\1 {MASK}"),
    # scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)(@)", re.IGNORECASE), rf"\1{MASK}\3"),
    # Token shapes: GitHub, Slack, AWS access key ids, OpenAI-style keys, JWTs, PEM private keys.
    (re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b"), MASK),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"), MASK),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b"), MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"), MASK),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL), MASK),
]


def scrub(text: str) -> str:
    """``text`` with every secret-looking value replaced by ``***``."""
    for pattern, replacement in RULES:
        text = pattern.sub(replacement, text)
    return text


def looks_secret(name: str) -> bool:
    """Whether an environment variable or field named ``name`` probably holds a secret."""
    return bool(_SECRET_NAME_RE.match(name))
