"""Fixtures for platform and action tests: a throwaway INTENT_HOME, a step context, free ports."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Importing the action modules registers them.
import intent_pipelines.actions.app
import intent_pipelines.actions.db
import intent_pipelines.actions.http  # noqa: F401
from intent_pipelines import testing
from intent_pipelines.actions.base import REGISTRY, Outputs
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.home import IntentHome

RunAction = Callable[..., Outputs]


@pytest.fixture
def free_ports() -> Callable[[int], int]:
    """A function returning the first of N consecutive free loopback ports."""
    return testing.free_ports


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> IntentHome:
    monkeypatch.setenv("INTENT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("INTENT_FLEET", raising=False)
    return IntentHome(tmp_path / "home").ensure()


@pytest.fixture
def step_lines() -> list[str]:
    return []


@pytest.fixture
def ctx(home: IntentHome, tmp_path: Path, step_lines: list[str]) -> ActionContext:
    return ActionContext(
        request_id="req-test",
        step_id="step",
        home=home,
        log_path=tmp_path / "step.log",
        timeout_s=60,
        emit=step_lines.append,
    )


@pytest.fixture
def run_action(ctx: ActionContext) -> RunAction:
    """Validate ``inputs`` with the action's model and run it, as a step would."""

    def run(name: str, **inputs: Any) -> Outputs:
        definition = REGISTRY[name]
        return definition.run(ctx, definition.input_model(**inputs))

    return run


@pytest.fixture
def preview_action(ctx: ActionContext) -> Callable[..., str]:
    def preview(name: str, **inputs: Any) -> str:
        definition = REGISTRY[name]
        return definition.preview(ctx, definition.input_model(**inputs))

    return preview


@pytest.fixture
def sample(home: IntentHome) -> Iterator[Path]:
    """The hello-api sample installed in INTENT_HOME on free ports; every replica stopped after."""
    testing.prepare_sample_home(home.root, replicas=3)
    yield home.fleet_dir / "src" / "hello-api"
    testing.stop_fleet(home)
