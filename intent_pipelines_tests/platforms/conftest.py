"""Fixtures for platform and action tests: a throwaway INTENT_HOME, a step context, free ports."""

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Importing the action modules registers them.
import intent_pipelines.actions.app
import intent_pipelines.actions.db
import intent_pipelines.actions.http  # noqa: F401
from intent_pipelines.actions.base import REGISTRY, ActionContext, Outputs
from intent_pipelines.fleet import load_fleet, register_app
from intent_pipelines.home import IntentHome
from intent_pipelines.platforms.local import LocalPlatform
from intent_pipelines.sample_fleet import install_sample_fleet

RunAction = Callable[..., Outputs]


def _free_ports(count: int) -> int:
    """Return the first of ``count`` consecutive loopback ports that are free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports found")


@pytest.fixture
def free_ports() -> Callable[[int], int]:
    """A function returning the first of N consecutive free loopback ports."""
    return _free_ports


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
def sample(home: IntentHome, ctx: ActionContext) -> Iterator[Path]:
    """The hello-api sample installed in INTENT_HOME on free ports; every replica stopped after."""
    fleet_file = install_sample_fleet(home)
    app = load_fleet(fleet_file).app("hello-api")
    register_app(fleet_file, app.model_copy(update={"port": _free_ports(3)}))
    yield home.fleet_dir / "src" / "hello-api"
    platform = LocalPlatform(home, fleet_file, ctx)
    for each in load_fleet(fleet_file).apps.values():
        if each.platform == "local":
            platform.stop(each)
