"""Shared fixtures: a throwaway INTENT_HOME (with or without the sample fleet) and its engine."""

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome
from intent_pipelines.testing import postgres_server, prepare_sample_home, stop_fleet


@pytest.fixture
def sample_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IntentHome]:
    """INTENT_HOME with hello-api on free ports; every app process is stopped afterwards."""
    home = prepare_sample_home(tmp_path / "home")
    monkeypatch.setenv("INTENT_HOME", str(home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    monkeypatch.delenv("INTENT_FLEET", raising=False)
    monkeypatch.delenv("INTENTS_PATH", raising=False)
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
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A persistent (SQLite) Dagster instance in tmp, so re-execution can reload past runs."""
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster"),
                                       overrides={"telemetry": {"enabled": False}}) as inst:
        yield inst

