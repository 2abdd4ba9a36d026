"""The INTENT_* environment, parsed in one place: defaults, values, and one-line errors for bad numbers."""

from pathlib import Path

import pytest

from intent_pipelines.errors import UsageError
from intent_pipelines.settings import DEFAULT_DAGSTER_URL, Settings


def test_defaults_without_any_variable() -> None:
    """An empty environment gives the embedded defaults."""
    s = Settings.from_env({})
    assert s.home == Path(".intent_home").resolve() and s.fleet is None and s.store_url == ""
    assert s.intents_path == () and s.dagster_url == DEFAULT_DAGSTER_URL and not s.debug and s.heartbeat
    assert (s.watchdog_stale_s, s.watchdog_grace_s, s.alert_sensor_interval_s) == (900.0, 10.0, 10)
    assert (s.webhook_url, s.webhook_timeout_s, s.webhook_attempts, s.audit_anchor_dir) == ("", 5.0, 3, None)


def test_values_are_read_and_normalized(tmp_path: Path) -> None:
    """Paths resolve, the URL loses its trailing slash, INTENTS_PATH splits on the path separator."""
    s = Settings.from_env({"INTENT_HOME": str(tmp_path / "h"), "INTENTS_PATH": f"{tmp_path}/a:{tmp_path}/b",
                           "INTENT_DAGSTER_URL": "http://ops:3000/", "INTENT_HEARTBEAT": "OFF",
                           "INTENT_WATCHDOG_STALE_S": "30", "INTENT_ALERT_SENSOR_INTERVAL_S": "0"})
    assert s.home == tmp_path / "h" and s.intents_path == (tmp_path / "a", tmp_path / "b")
    assert s.dagster_url == "http://ops:3000" and not s.heartbeat
    assert s.watchdog_stale_s == 30.0 and s.alert_sensor_interval_s == 1


@pytest.mark.parametrize(("name", "raw", "fragment"), [
    ("INTENT_WATCHDOG_STALE_S", "15m", "INTENT_WATCHDOG_STALE_S='15m' is not a number"),
    ("INTENT_WATCHDOG_GRACE_S", "-1", "INTENT_WATCHDOG_GRACE_S='-1' is negative"),
    ("INTENT_ALERT_SENSOR_INTERVAL_S", "2.5", "is not a whole number"),
])
def test_a_bad_number_is_a_one_line_usage_error(name: str, raw: str, fragment: str) -> None:
    """The error names the variable, the value and what to do."""
    with pytest.raises(UsageError) as caught:
        Settings.from_env({name: raw})
    line = caught.value.one_line()
    assert fragment in line and "default" in line
    assert "\n" not in line


def test_a_typo_in_a_webhook_knob_keeps_the_default() -> None:
    """A bad webhook timeout must not cost the alert: the default is used."""
    s = Settings.from_env({"INTENT_ALERT_WEBHOOK_URL": "http://hook", "INTENT_ALERT_WEBHOOK_TIMEOUT": "soon"})
    assert (s.webhook_url, s.webhook_timeout_s) == ("http://hook", 5.0)


def test_every_variable_is_documented() -> None:
    """Each variable settings.py reads has a row in docs/cli.md's Environment table."""
    import re

    import intent_pipelines.settings as module

    source = Path(module.__file__).read_text(encoding="utf-8")
    names = set(re.findall(r'"(INTENTS?_[A-Z_]+)"', source))
    doc = (Path(__file__).resolve().parents[3] / "docs" / "cli.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(INTENTS?_[A-Z_<>]+)`", doc))
    assert names and names <= documented, sorted(names - documented)
