"""Tests of the retry taxonomy: classification of real failure output, the retry matrix, backoff."""

import random

import pytest

from intent_pipelines.retries import Backoff, FailureClass, RetryOn, classify, should_retry
from intent_pipelines.spec.models import RetrySpec

TRANSIENT_OUTPUT = [
    "curl: (7) Failed to connect to localhost port 8080 after 0 ms: Connection refused",
    "curl: (22) The requested URL returned error: HTTP 503",
    "HTTP/1.1 429 Too Many Requests",
    "curl: (28) Operation timed out after 5001 milliseconds with 0 bytes received",
    'psql: error: could not connect to server: Connection refused\n\tIs the server running on host '
    '"localhost" (127.0.0.1) and accepting\n\tTCP/IP connections on port 5432?',
    "sqlite3.OperationalError: database is locked",
    "ssh: Could not resolve hostname db.internal: Temporary failure in name resolution",
    "Error from server (ServiceUnavailable): the server is currently unable to handle the request",
    "npm ERR! network request failed, reason: getaddrinfo EAI_AGAIN registry.npmjs.org",
    "fatal: unable to access 'https://example.com/x.git/': Connection reset by peer",
    "ERROR:  deadlock detected\nDETAIL:  Process 4242 waits for ShareLock on transaction 1234",
    "Resource temporarily unavailable, try again later",
]

DETERMINISTIC_OUTPUT = [
    "error: invalid timeout value \"abc\" for --timeout",
    "kubectl: timeoutSeconds must be a positive integer",
    "cat: /etc/app.conf: No such file or directory",
    'ERROR:  syntax error at or near "SELEC"\nLINE 1: SELEC 1;',
    "bash: ./deploy.sh: Permission denied",
    'psql: error: FATAL:  password authentication failed for user "app"',
    'ERROR:  relation "users" does not exist',
    "curl: (22) The requested URL returned error: 404",
    "fatal: repository 'https://example.com/x.git/' not found",
    "error: pathspec 'v9.9.9' did not match any file(s) known to git",
    "Traceback (most recent call last):\n  File \"migrate.py\", line 3\nKeyError: 'release'",
    "npm ERR! 404 Not Found - GET https://registry.npmjs.org/no-such-package",
]


@pytest.mark.parametrize("output", TRANSIENT_OUTPUT, ids=lambda o: o.split("\n")[0][:40])
def test_transient_output_is_classified_transient(output: str) -> None:
    """Output saying the other side is temporarily unable is transient, whatever the exit code."""
    assert classify(output, exit_code=1) is FailureClass.TRANSIENT
    assert classify(output.upper()) is FailureClass.TRANSIENT


@pytest.mark.parametrize("output", DETERMINISTIC_OUTPUT, ids=lambda o: o.split("\n")[0][:40])
def test_deterministic_output_is_classified_deterministic(output: str) -> None:
    """Output saying the input itself is wrong is deterministic: the same retry would fail again."""
    assert classify(output, exit_code=1) is FailureClass.DETERMINISTIC


@pytest.mark.parametrize(("output", "exit_code", "expected"), [
    ("", 1, FailureClass.DETERMINISTIC),
    ("", None, FailureClass.DETERMINISTIC),
    ("", 127, FailureClass.DETERMINISTIC),
    ("", 75, FailureClass.TRANSIENT),
    ("cat: x: No such file or directory", 75, FailureClass.TRANSIENT),
])
def test_exit_code_alone(output: str, exit_code: int | None, expected: FailureClass) -> None:
    """Exit 1 with no output is deterministic; EX_TEMPFAIL (75) is transient even without output."""
    assert classify(output, exit_code=exit_code) is expected


@pytest.mark.parametrize(("on", "failure", "retries"), [
    (RetryOn.TRANSIENT, FailureClass.TRANSIENT, True),
    (RetryOn.TRANSIENT, FailureClass.DETERMINISTIC, False),
    (RetryOn.ANY, FailureClass.TRANSIENT, True),
    (RetryOn.ANY, FailureClass.DETERMINISTIC, True),
    (RetryOn.NEVER, FailureClass.TRANSIENT, False),
    (RetryOn.NEVER, FailureClass.DETERMINISTIC, False),
])
def test_should_retry_matrix(on: RetryOn, failure: FailureClass, retries: bool) -> None:
    """`on: transient` retries only transient failures, `any` everything, `never` nothing."""
    assert should_retry(on, failure) is retries


def test_backoff_grows_exponentially_without_jitter() -> None:
    """With no jitter the wait is delay * factor ** (attempt - 1), capped at max_delay_s."""
    backoff = Backoff(delay_s=0.5, factor=3.0, jitter=0.0, max_delay_s=10.0)
    assert [backoff.wait_before(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]
    assert backoff.wait_before(0) == 0.5


def test_backoff_factor_one_is_a_constant_delay() -> None:
    """`backoff: 1` waits the same delay before every retry."""
    backoff = Backoff(delay_s=2.0, factor=1.0, jitter=0.0)
    assert {backoff.wait_before(n) for n in range(1, 10)} == {2.0}


def test_backoff_jitter_stays_within_bounds() -> None:
    """Jitter spreads each wait within +/- jitter * base and really does spread it."""
    backoff = Backoff(delay_s=1.0, factor=2.0, jitter=0.25)
    rng = random.Random(1234)
    for attempt in range(1, 7):
        base = 2.0 ** (attempt - 1)
        waits = [backoff.wait_before(attempt, rng) for _ in range(200)]
        assert all(base * 0.75 <= w <= base * 1.25 for w in waits)
        assert max(waits) - min(waits) > base * 0.25
        assert min(waits) < base < max(waits)


def test_backoff_with_seeded_random_is_reproducible() -> None:
    """The same seed gives the same waits, so retry timing can be replayed in tests."""
    backoff = Backoff(delay_s=1.0, factor=2.0, jitter=0.5)
    first = [backoff.wait_before(n, random.Random(7)) for n in range(1, 5)]
    second = [backoff.wait_before(n, random.Random(7)) for n in range(1, 5)]
    other = [backoff.wait_before(n, random.Random(8)) for n in range(1, 5)]
    assert first == second
    assert first != other


def test_backoff_full_jitter_never_goes_negative() -> None:
    """With jitter 1 the wait may reach zero but is never negative."""
    backoff = Backoff(delay_s=1.0, factor=2.0, jitter=1.0)
    rng = random.Random(0)
    waits = [backoff.wait_before(1, rng) for _ in range(500)]
    assert all(0.0 <= w <= 2.0 for w in waits)


def test_retry_spec_describes_its_backoff() -> None:
    """A step's `retry:` settings map onto the Backoff used between attempts."""
    spec = RetrySpec(attempts=4, delay=3, backoff=1.5, jitter=0.2, on=RetryOn.ANY)
    assert spec.backoff_policy() == Backoff(delay_s=3.0, factor=1.5, jitter=0.2)
    assert spec.backoff_policy().wait_before(3, random.Random(0)) == pytest.approx(6.75, rel=0.2)
