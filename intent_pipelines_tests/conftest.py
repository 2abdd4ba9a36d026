"""Shared fixtures (a throwaway INTENT_HOME and its engine) and the test tiers, assigned by directory.

A test's tier is the first directory under intent_pipelines_tests (unit, integration, chaos, e2e, bench):
the marker is added here, never written in the test, and a test outside those directories or
with a tier marker of its own fails collection (so `make test` cannot silently drop it).

INTENT_TEST_STORAGE=postgres runs the same tests with the state store and Dagster's storage in a
fresh PostgreSQL database per test (the `sample_home` and `instance` fixtures); `make test` runs
a named subset that way.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from intent_pipelines import secrets
from intent_pipelines.bundled import write_dagster_yaml
from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome
from intent_pipelines.testing import fresh_database, postgres_server, prepare_sample_home, stop_fleet

pytest_plugins = ["intent_pipelines_tests.support.metrics_events", "intent_pipelines_tests.support.platform_actions"]

TIERS = ("unit", "integration", "chaos", "e2e", "bench")
ON_POSTGRES = os.environ.get("INTENT_TEST_STORAGE", "sqlite") == "postgres"
_ROOT = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the tier of its directory; refuse tests without one."""
    misplaced = []
    for item in items:
        parts = item.path.resolve().relative_to(_ROOT).parts
        tier = parts[0] if len(parts) > 1 else ""
        own = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        if tier not in TIERS or own:
            misplaced.append(item.nodeid)
            continue
        item.add_marker(getattr(pytest.mark, tier))
    if misplaced:
        raise pytest.UsageError(
            f"{len(misplaced)} test(s) outside a tier directory or with their own tier marker, e.g. "
            f"{misplaced[0]}: move the file under intent_pipelines_tests/{{{','.join(TIERS)}}}/ and drop the marker")


@pytest.fixture(autouse=True)
def no_known_secrets() -> Iterator[None]:
    """Each test starts, as a fresh process does, with no secret registered for masking."""
    secrets.forget_all()
    yield
    secrets.forget_all()


@pytest.fixture
def storage_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database under INTENT_TEST_STORAGE=postgres; "" (the embedded SQLite) otherwise."""
    if not ON_POSTGRES:
        yield ""
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def sample_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage_url: str) -> Iterator[IntentHome]:
    """INTENT_HOME with hello-api on free ports; every app process is stopped afterwards."""
    home = prepare_sample_home(tmp_path / "home")
    monkeypatch.setenv("INTENT_HOME", str(home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    monkeypatch.delenv("INTENT_FLEET", raising=False)
    monkeypatch.delenv("INTENTS_PATH", raising=False)
    if storage_url:
        monkeypatch.setenv("INTENT_STORE_URL", storage_url)
        home.dagster_home.mkdir(parents=True, exist_ok=True)
        write_dagster_yaml(home.dagster_home / "dagster.yaml", postgres=True)
    else:
        monkeypatch.delenv("INTENT_STORE_URL", raising=False)
    yield home
    stop_fleet(home)


@pytest.fixture
def engine(sample_home: IntentHome) -> Engine:
    """The engine for the sample home."""
    return Engine(sample_home)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL 15 on loopback for the whole session (started as the postgres user)."""
    try:
        with postgres_server() as url:
            yield url
    except RuntimeError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")


@pytest.fixture
def instance(tmp_path: Path, storage_url: str) -> Iterator[dg.DagsterInstance]:
    """A persistent Dagster instance in tmp (SQLite, or PostgreSQL), so re-execution can reload past runs."""
    (tmp_path / "dagster").mkdir()
    overrides: dict[str, object] = {"telemetry": {"enabled": False}}
    if storage_url:
        overrides["storage"] = {"postgres": {"postgres_url": storage_url}}
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster"), overrides=overrides) as inst:
        yield inst

