"""Scrubbing of alert text and environment names."""

import pytest

from intent_pipelines.alerts.forensics import environment_summary
from intent_pipelines.alerts.scrub import looks_secret, scrub


@pytest.mark.parametrize(("text", "secret"), [
    ("password=hunter2 user=bob", "hunter2"),
    ('curl -H "Authorization: Bearer abcdefgh12345" http://x', "abcdefgh12345"),
    ("postgresql://app:s3cret@db/app", "s3cret"),
    ('{"api_key": "xyz123"}', "xyz123"),
    ("PGPASSWORD=pw1 psql", "pw1"),
    ("X-Auth-Token: tok42", "tok42"),
    ("psql --password topsecret", "topsecret"),
    ("pushed with ghp_abcdefghijklmnopqrstuvwxyz0123", "ghp_abcdefghijklmnopqrstuvwxyz0123"),
    ("aws AKIAABCDEFGHIJKLMNOP denied", "AKIAABCDEFGHIJKLMNOP"),
])
def test_secret_looking_values_are_masked(text: str, secret: str) -> None:
    """Values that look like secrets never survive scrubbing."""
    assert secret not in scrub(text)
    assert "***" in scrub(text)


def test_ordinary_text_is_left_alone() -> None:
    """Messages without secrets pass unchanged, so alerts stay readable."""
    for text in ("exit 1: npm install", "author=me passes 3 tests", "lock app:hello-api is busy"):
        assert scrub(text) == text


def test_environment_summary_shows_names_and_only_harmless_values() -> None:
    """Secret-looking variables are masked, unknown ones listed by name only, a few harmless ones shown."""
    summary = environment_summary({"GITHUB_TOKEN": "t", "PATH": "/bin", "CUSTOM": "maybe-secret",
                                   "INTENT_ALERT_WEBHOOK_URL": "https://hooks/x"})
    assert summary == {"CUSTOM": "(set)", "GITHUB_TOKEN": "***", "INTENT_ALERT_WEBHOOK_URL": "***", "PATH": "/bin"}
    assert looks_secret("AWS_SECRET_ACCESS_KEY") and not looks_secret("AUTHOR")
