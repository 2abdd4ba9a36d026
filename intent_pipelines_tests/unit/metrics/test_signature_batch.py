"""The vectorized failure signatures equal alerts.signatures.signature on every message, fast path or not."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intent_pipelines.alerts.signatures import signature
from intent_pipelines.metrics import signature_batch
from intent_pipelines.metrics.signature_batch import signature_many

TRICKY = st.text(alphabet=st.sampled_from(list("aZ09fF_x./-+@:T Z\t\n\r\x0b\x0c\x1c\\\"'<>é١\u2028")), max_size=60)
PIECES = st.lists(st.sampled_from([
    "2026-11-21T10:00:01.123Z", "2026-11-21 10:00", "0xDEADBEEF", "deadbeef00", "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    "/srv/apps/x", "/a//b", "x/y", "./rel", "30s", "1.5ms", "42", " ", "\n", "timed out", "é", "١٢", "a" * 40,
    "http://10.0.3.7:8080/health", "//", "/", "a/", "@/", ":", "-", "+", "file:///tmp/x",
]), max_size=8).map("".join)


def test_fast_path_is_active() -> None:
    """The RE2 translation matches the current rules; if this fails, alerts/signatures.py changed its rules:
    update metrics/signature_batch.py (_KNOWN and _RE2) or metrics fall back to the slow path."""
    assert signature_batch.FAST


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(TRICKY, PIECES), st.sampled_from(["", "build", "x.y"]),
                          st.sampled_from(["", "StepFailed"])), max_size=20))
def test_batch_equals_signature(items: list[tuple[str, str, str]]) -> None:
    """For any messages (ASCII, Unicode, control characters, paths, ids), the batch gives signature()'s ids."""
    messages = [m for m, _, _ in items]
    steps = [s for _, s, _ in items]
    classes = [c for _, _, c in items]
    assert signature_many(steps, classes, messages) == [signature(m, step=s, error_class=c) for m, s, c in items]


def test_urls_take_the_fast_path_and_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages with "//" after a non-path character (URLs) are vectorized, and still equal signature()."""
    messages = ["GET http://10.0.3.7:8080/health returned 503 after 3 attempts", "see file:///tmp/x//y", "a//b"]
    slow: list[str] = []
    python = signature_batch._python

    def recording(step: str, error_class: str, message: str) -> str:
        slow.append(message)
        return python(step, error_class, message)

    monkeypatch.setattr(signature_batch, "_python", recording)
    assert signature_many(["s"] * 3, ["E"] * 3, messages) == [signature(m, step="s", error_class="E") for m in messages]
    assert slow == messages[1:]  # a path character before "//": only those need Python


def test_missing_error_and_class_give_no_signature() -> None:
    """A failure record with neither message nor class has no signature; one with a class alone has one."""
    assert signature_many(["s", "s"], [None, "StepFailed"], [None, None]) == [
        None, signature("", step="s", error_class="StepFailed")]
