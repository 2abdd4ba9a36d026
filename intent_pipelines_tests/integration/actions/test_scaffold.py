"""Tests of the ``scaffold.nextjs`` action and the Next.js template it renders."""

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from intent_pipelines.actions.base import REGISTRY
from intent_pipelines.actions.scaffold import (
    COMMIT_MESSAGE,
    NextjsScaffoldInput,
    preview_nextjs,
    render_template,
    scaffold_nextjs,
    template_files,
)
from intent_pipelines.errors import StepFailed
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.fleet import App, load_fleet, register_app
from intent_pipelines.home import IntentHome

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def make_ctx(tmp_path: Path) -> ActionContext:
    home = IntentHome(tmp_path / "home")
    return ActionContext(
        request_id="r1", step_id="scaffold", home=home, log_path=tmp_path / "log.txt"
    )


def inputs(**values: Any) -> NextjsScaffoldInput:
    return NextjsScaffoldInput.model_validate(values)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content, to prove nothing changed."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def fake_tool(bin_dir: Path, name: str, *, exit_code: int = 0) -> Path:
    """Install a stand-in executable that records its argv in ``<name>.calls``, then exits."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls = bin_dir / f"{name}.calls"
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexit {exit_code}\n', encoding="utf-8")
    script.chmod(0o755)
    return calls


def test_action_is_registered() -> None:
    """The action is reachable by its intent-facing name with its input model."""
    assert REGISTRY["scaffold.nextjs"].input_model is NextjsScaffoldInput


def test_template_ships_a_next_app_router_project() -> None:
    """The packaged template holds the files a runnable App Router app needs."""
    assert set(template_files()) == {
        ".gitignore",
        "README.md",
        "app/api/health/route.js",
        "app/api/version/route.js",
        "app/layout.jsx",
        "app/page.jsx",
        "next.config.mjs",
        "package.json",
    }


def test_render_fills_name_port_and_pins_versions(tmp_path: Path) -> None:
    """package.json is valid JSON with the name, the port in its scripts and exact versions."""
    render_template(tmp_path, name="shop", title="Shop", port=4321)
    package = json.loads((tmp_path / "package.json").read_text(encoding="utf-8"))
    assert package["name"] == "shop"
    assert package["scripts"]["start"] == "next start -p 4321"
    assert package["scripts"]["dev"] == "next dev -p 4321"
    assert set(package["dependencies"]) == {"next", "react", "react-dom"}
    assert all(v[0].isdigit() for v in package["dependencies"].values()), "pin exact versions"
    assert not list(tmp_path.rglob("*.j2"))


def test_title_is_data_not_template_or_code(tmp_path: Path) -> None:
    """A title with Jinja and script syntax is rendered literally and stays a JS string."""
    title = '{{ 7*7 }} </h1><script>alert("x")</script>'
    render_template(tmp_path, name="shop", title=title, port=3000)
    page = (tmp_path / "app/page.jsx").read_text(encoding="utf-8")
    assert "49" not in page and "<script>" not in page
    literal = page.split("const TITLE = ", 1)[1].split(";\n", 1)[0]
    assert json.loads(literal) == title
    assert "# {{ 7*7 }}" in (tmp_path / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "name",
    ["{{ 7*7 }}", "../x", "x/../y", "Shop", "-shop", "", "a" * 64, "shop\n", "a b", "{% x %}"],
)
def test_unsafe_or_malformed_names_are_rejected(name: str) -> None:
    """Names that are not plain lowercase slugs never reach a path, a template or git."""
    with pytest.raises(ValidationError):
        inputs(name=name)


@pytest.mark.parametrize(
    "values",
    [
        {"name": "shop", "port": 80},
        {"name": "shop", "port": 70000},
        {"name": "shop", "title": "two\nlines"},
        {"name": "shop", "unknown": 1},
    ],
)
def test_bad_inputs_are_rejected(values: dict[str, Any]) -> None:
    """Privileged or out-of-range ports, control characters and unknown keys are refused."""
    with pytest.raises(ValidationError):
        inputs(**values)


def test_defaults() -> None:
    """Without options the app uses port 3100, skips npm install and is registered."""
    inp = inputs(name="shop")
    assert (inp.port, inp.install, inp.add_to_fleet, inp.directory) == (3100, False, True, "")


def test_preview_describes_and_writes_nothing(tmp_path: Path) -> None:
    """The preview names the target, the files and the follow-ups without touching the disk."""
    ctx = make_ctx(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    text = preview_nextjs(ctx, inputs(name="shop", install=True))
    assert sorted(tmp_path.rglob("*")) == before
    assert str(ctx.home.fleet_dir / "src" / "shop") in text
    assert "package.json" in text and "app/api/health/route.js" in text
    assert "npm install" in text and str(ctx.home.fleet_file) in text


def test_preview_warns_about_a_non_empty_target(tmp_path: Path) -> None:
    """The preview says up front that an occupied directory would be refused."""
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine", encoding="utf-8")
    text = preview_nextjs(make_ctx(tmp_path), inputs(name="shop", directory=str(occupied)))
    assert "would refuse" in text


@needs_git
def test_scaffold_creates_committed_registered_app(tmp_path: Path) -> None:
    """A scaffold renders the template, commits it once and registers the app in the fleet."""
    ctx = make_ctx(tmp_path)
    out = scaffold_nextjs(ctx, inputs(name="shop", port=4321, title="My Shop"))
    target = ctx.home.fleet_dir / "src" / "shop"
    assert out == {"directory": str(target.resolve()), "commit": out["commit"], "registered": True}
    assert json.loads((target / "package.json").read_text(encoding="utf-8"))["name"] == "shop"
    assert git(target, "rev-list", "--count", "HEAD") == "1"
    assert git(target, "rev-parse", "HEAD") == out["commit"]
    subject_author = git(target, "log", "-1", "--format=%s|%an|%ae")
    assert subject_author == f"{COMMIT_MESSAGE}|intent|intent@localhost"
    assert git(target, "status", "--porcelain") == ""
    assert sorted(git(target, "ls-files").splitlines()) == sorted(template_files())
    app = load_fleet(ctx.home.fleet_file).app("shop")
    assert app.source == str(target.resolve())
    assert app.start == ["npm", "run", "start", "--", "-p", "{port}"]
    assert app.build == []
    assert (app.port, app.health_path, app.version_path) == (4321, "/api/health", "/api/version")
    assert [p.name for p in target.parent.iterdir()] == ["shop"], "no temp dir left behind"


@needs_git
def test_scaffold_into_given_empty_directory_without_registering(tmp_path: Path) -> None:
    """An explicit empty directory is filled, and register=false leaves the fleet alone."""
    ctx = make_ctx(tmp_path)
    target = tmp_path / "apps" / "blog"
    target.mkdir(parents=True)
    out = scaffold_nextjs(ctx, inputs(name="blog", directory=str(target), register=False))
    assert out["directory"] == str(target.resolve()) and out["registered"] is False
    assert (target / ".git").is_dir() and (target / "app/api/health/route.js").is_file()
    assert not ctx.home.fleet_file.exists()


@needs_git
def test_install_false_never_runs_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without install=true npm is never invoked (no network, no node_modules)."""
    calls = fake_tool(tmp_path / "bin", "npm")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    ctx = make_ctx(tmp_path)
    scaffold_nextjs(ctx, inputs(name="shop"))
    assert not calls.exists()
    assert "$ npm" not in ctx.log_path.read_text(encoding="utf-8")


@needs_git
def test_install_true_runs_npm_install_and_registers_a_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """install=true runs npm install in the app before the commit and registers a build step."""
    calls = fake_tool(tmp_path / "bin", "npm")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    ctx = make_ctx(tmp_path)
    scaffold_nextjs(ctx, inputs(name="shop", install=True))
    assert calls.read_text(encoding="utf-8").split() == ["install", "--no-audit", "--no-fund"]
    assert load_fleet(ctx.home.fleet_file).app("shop").build == ["npm", "run", "build"]


@needs_git
def test_refuses_non_empty_directory_and_leaves_it_untouched(tmp_path: Path) -> None:
    """An occupied target is refused before anything is written, and the fleet stays as it was."""
    ctx = make_ctx(tmp_path)
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "notes.txt").write_text("mine", encoding="utf-8")
    before = snapshot(tmp_path)
    with pytest.raises(StepFailed, match="not empty") as info:
        scaffold_nextjs(ctx, inputs(name="shop", directory=str(target)))
    assert info.value.transient is False
    after = snapshot(tmp_path)
    after.pop("log.txt", None)
    assert after == before
    assert not ctx.home.fleet_file.exists()


@needs_git
def test_refuses_a_name_already_in_the_fleet(tmp_path: Path) -> None:
    """Registering never silently replaces an app that the fleet already lists."""
    ctx = make_ctx(tmp_path)
    register_app(ctx.home.fleet_file, App(name="shop", source="/srv/shop"))
    with pytest.raises(StepFailed, match="already in the fleet"):
        scaffold_nextjs(ctx, inputs(name="shop"))
    assert load_fleet(ctx.home.fleet_file).app("shop").source == "/srv/shop"
    assert not (ctx.home.fleet_dir / "src").exists()


def test_failure_midway_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When git fails, neither the target nor a temp directory nor a fleet entry remains."""
    fake_tool(tmp_path / "bin", "git", exit_code=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    ctx = make_ctx(tmp_path)
    with pytest.raises(StepFailed, match="git"):
        scaffold_nextjs(ctx, inputs(name="shop"))
    assert list((ctx.home.fleet_dir / "src").iterdir()) == []
    assert not ctx.home.fleet_file.exists()
