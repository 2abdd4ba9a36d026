"""The retry taxonomy: which failures are transient (retry with backoff) and which are not."""

import random
import re
from dataclasses import dataclass
from enum import Enum

# Phrases that mean "the other side is temporarily unable", seen in curl, requests, psql, kubectl,
# git and npm output. Anything not listed is deterministic: retrying the same input won't help.
_TRANSIENT_PATTERNS = [
    r"connection refused",
    r"connection reset",
    r"connection aborted",
    r"broken pipe",
    r"\btimed out\b",
    r"\btime-?out (expired|exceeded|error)\b",
    r"\bgateway time-?out\b",
    r"temporar(il)?y unavailable",
    r"temporary failure in name resolution",
    r"service unavailable",
    r"too many requests",
    r"\bhttp(?: status)?:? ?(429|5\d\d)\b",
    r"\bstatus(?: code)?:? ?(429|502|503|504)\b",
    r"\b(429|502|503|504) (too many requests|bad gateway|service unavailable|gateway time-?out)",
    r"resource temporarily unavailable",
    r"database is locked",
    r"lock (is )?busy",
    r"could not obtain lock",
    r"deadlock detected",
    r"the server is currently unable",
    r"etimedout|econnreset|econnrefused|eai_again",
    r"network is unreachable",
    r"try again",
]
_TRANSIENT = re.compile("|".join(_TRANSIENT_PATTERNS), re.IGNORECASE)

# Exit codes that by convention mean "temporary": EX_TEMPFAIL (75) and curl's connect/timeout codes.
_TRANSIENT_EXIT_CODES = frozenset({75})


class FailureClass(str, Enum):
    """How a failure should be treated."""

    TRANSIENT = "transient"
    DETERMINISTIC = "deterministic"


def classify(message: str, *, exit_code: int | None = None) -> FailureClass:
    """Classify a failure from its message (stderr tail) and exit code."""
    if exit_code in _TRANSIENT_EXIT_CODES or _TRANSIENT.search(message or ""):
        return FailureClass.TRANSIENT
    return FailureClass.DETERMINISTIC


class RetryOn(str, Enum):
    """Which failures a step retries: ``transient`` (default), ``any`` or ``never``."""

    TRANSIENT = "transient"
    ANY = "any"
    NEVER = "never"


def should_retry(on: RetryOn, failure: FailureClass) -> bool:
    """Whether a step configured with ``on`` retries a failure of this class."""
    if on is RetryOn.NEVER:
        return False
    if on is RetryOn.ANY:
        return True
    return failure is FailureClass.TRANSIENT


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: delay * backoff**(attempt-1), +/- jitter fraction."""

    delay_s: float = 1.0
    factor: float = 2.0
    jitter: float = 0.1
    max_delay_s: float = 300.0

    def wait_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = first retry)."""
        base = min(self.delay_s * self.factor ** max(attempt - 1, 0), self.max_delay_s)
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))
