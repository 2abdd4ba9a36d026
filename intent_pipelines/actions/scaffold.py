"""The ``scaffold.nextjs`` action: a Next.js app as a new git repository in the fleet."""

import os
import shutil
import tempfile
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import Field

from intent_pipelines.actions.base import ActionInput, Outputs, action
from intent_pipelines.errors import FailureDetail, StepFailed, TemplateError
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.execution.runner import run_command
from intent_pipelines.fleet import App, load_fleet, register_app

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
TEMPLATE_SUFFIX = ".j2"
COMMIT_MESSAGE = "Initial commit from intent create-nextjs-app"
GIT_TIMEOUT_S = 60.0
# A cold npm cache downloads Next.js and its native SWC binary: minutes, not seconds.
NPM_INSTALL_TIMEOUT_S = 900.0


class NextjsScaffoldInput(ActionInput):
    """The ``with:`` of ``scaffold.nextjs``."""

    # The name reaches paths, package.json and git; the pattern keeps it a plain slug there.
    name: str = Field(pattern=NAME_PATTERN, description="app and package name")
    directory: str = Field(
        default="",
        description="target directory; empty means INTENT_HOME/fleet/src/<name>, "
        "a relative path is taken from INTENT_HOME/fleet",
    )
    port: int = Field(default=3100, ge=1024, le=65535)  # 3000 is the Dagster UI of `make up`
    install: bool = Field(default=False, description="run `npm install` (needs the network)")
    # Aliased because BaseModel's metaclass already has a ``register`` (ABCMeta.register).
    add_to_fleet: bool = Field(
        default=True, alias="register", description="add the app to the fleet file"
    )
    # Control characters would break the one-line README heading and the page title.
    title: str = Field(default="", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")


def template_root() -> Traversable:
    """Return the Next.js template shipped as package data."""
    return resources.files("intent_pipelines") / "templates" / "nextjs"


def _walk(node: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    """Every file under ``node`` as (relative posix path, resource), sorted by path."""
    found: list[tuple[str, Traversable]] = []
    for child in node.iterdir():
        if child.name == "__pycache__":
            continue
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            found.extend(_walk(child, f"{rel}/"))
        else:
            found.append((rel, child))
    return sorted(found, key=lambda item: item[0])


def _output_path(rel: str) -> str:
    return rel.removesuffix(TEMPLATE_SUFFIX)


def template_files() -> list[str]:
    """Relative paths of the files a scaffold creates (before git and npm add theirs)."""
    return [_output_path(rel) for rel, _ in _walk(template_root())]


def render_template(dest: Path, *, name: str, title: str, port: int) -> list[Path]:
    """Write the template into the existing directory ``dest``; ``.j2`` files are rendered."""
    # Values are passed as context and never compiled, so "{{ 7*7 }}" in a title stays text;
    # the sandbox and StrictUndefined guard the template files themselves.
    env = SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    context = {"name": name, "title": title, "port": port}
    written: list[Path] = []
    for rel, source in _walk(template_root()):
        out = dest / _output_path(rel)
        out.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(TEMPLATE_SUFFIX):
            try:
                text = env.from_string(source.read_text(encoding="utf-8")).render(context)
            except jinja2.TemplateError as exc:
                raise TemplateError(
                    f"template {rel} cannot be rendered: {exc}",
                    hint="Fix the template shipped in intent_pipelines/templates/nextjs.",
                ) from None
            out.write_text(text, encoding="utf-8")
        else:
            out.write_bytes(source.read_bytes())
        written.append(out)
    return written


def target_directory(ctx: ActionContext, inp: NextjsScaffoldInput) -> Path:
    """Where the app goes: ``directory``, or INTENT_HOME/fleet/src/<name> when empty."""
    if not inp.directory:
        return (ctx.home.fleet_dir / "src" / inp.name).resolve()
    path = Path(inp.directory).expanduser()
    # Relative to the fleet folder, not the cwd: Dagster runs steps from whatever cwd it has.
    return (path if path.is_absolute() else ctx.home.fleet_dir / path).resolve()


def _refusal(target: Path) -> str:
    """Why ``target`` cannot receive the scaffold, or "" when it can."""
    if not target.exists():
        return ""
    if not target.is_dir():
        return f"{target} exists and is not a directory"
    if any(target.iterdir()):
        return f"{target} exists and is not empty"
    return ""


def _fleet_conflict(ctx: ActionContext, name: str) -> str:
    """Why registering ``name`` would clobber the fleet, or "" when it would not."""
    fleet = load_fleet(ctx.home.fleet_file)  # an invalid fleet fails here, before any write
    if name in fleet.apps:
        return f"app {name!r} is already in the fleet ({ctx.home.fleet_file})"
    return ""


def _app_entry(inp: NextjsScaffoldInput, target: Path) -> App:
    return App(
        name=inp.name,
        platform="local",
        source=str(target),
        start=["npm", "run", "start", "--", "-p", "{port}"],
        # Without node_modules a build cannot run, so only an installed app gets one.
        build=["npm", "run", "build"] if inp.install else [],
        port=inp.port,
        health_path="/api/health",
        version_path="/api/version",
    )


def preview_nextjs(ctx: ActionContext, inp: NextjsScaffoldInput) -> str:
    """Describe the scaffold without touching the disk."""
    target = target_directory(ctx, inp)
    lines = [f"create Next.js app {inp.name!r} in {target} (port {inp.port}):"]
    lines += [f"  {rel}" for rel in template_files()]
    refusal = _refusal(target)
    if refusal:
        lines.append(f"would refuse: {refusal}")
    lines.append("then run npm install" if inp.install else "without npm install")
    lines.append(f"then git init and commit {COMMIT_MESSAGE!r}")
    if inp.add_to_fleet:
        lines.append(f"then register it in {ctx.home.fleet_file}")
    else:
        lines.append("without registering it")
    return "\n".join(lines)


def _git(ctx: ActionContext, cwd: Path, *args: str) -> str:
    """Run one git command in ``cwd`` and return the tail of its output."""
    result = run_command(
        ctx,
        ["git", *args],
        cwd=cwd,
        env=dict(ctx.env),
        timeout_s=GIT_TIMEOUT_S,
    )
    return result.tail.strip()


def _build(ctx: ActionContext, inp: NextjsScaffoldInput, work: Path) -> str:
    """Render, install and commit the app in ``work``; return the commit sha."""
    render_template(work, name=inp.name, title=inp.title or inp.name, port=inp.port)
    if inp.install:
        # Before the commit, so package-lock.json is part of the first revision.
        run_command(
            ctx,
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=work,
            env=dict(ctx.env),
            timeout_s=ctx.timeout_s or NPM_INSTALL_TIMEOUT_S,
        )
    _git(ctx, work, "init", "--quiet", "--initial-branch=main")
    _git(ctx, work, "add", "-A")
    _git(
        ctx,
        work,
        "-c",
        "user.name=intent",
        "-c",
        "user.email=intent@localhost",
        # A user's global signing setup would otherwise prompt or fail in a headless run.
        "-c",
        "commit.gpgsign=false",
        "commit",
        "--quiet",
        "-m",
        COMMIT_MESSAGE,
    )
    return _git(ctx, work, "rev-parse", "HEAD").splitlines()[-1]


@action("scaffold.nextjs", NextjsScaffoldInput, preview=preview_nextjs)
def scaffold_nextjs(ctx: ActionContext, inp: NextjsScaffoldInput) -> Outputs:
    """Create a Next.js app as a new git repository and add it to the fleet."""
    target = target_directory(ctx, inp)
    refusal = _refusal(target) or (_fleet_conflict(ctx, inp.name) if inp.add_to_fleet else "")
    if refusal:
        raise StepFailed(
            f"refusing to scaffold {inp.name!r}: {refusal}",
            detail=FailureDetail(log_path=str(ctx.log_path)),
            hint="Pick another name or directory, or remove the existing one first.",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Everything is built next to the target and renamed into place last, so a failure (or a
    # retry after one) never meets a half-written app.
    work = Path(tempfile.mkdtemp(prefix=f".{inp.name}-scaffold-", dir=target.parent))
    try:
        commit = _build(ctx, inp, work)
        try:
            os.replace(work, target)  # atomic; also succeeds over an empty directory
        except OSError as exc:
            raise StepFailed(
                f"cannot move the app into {target}: {exc.strerror or exc}",
                detail=FailureDetail(log_path=str(ctx.log_path)),
                hint="Something else wrote there meanwhile; remove it or pick another directory.",
            ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ctx.log(f"created {target} at {commit}")
    if inp.add_to_fleet:
        try:
            register_app(ctx.home.fleet_file, _app_entry(inp, target))
        except BaseException:
            # An unregistered app would block the retry (its directory exists): undo it all.
            shutil.rmtree(target, ignore_errors=True)
            raise
        ctx.log(f"registered {inp.name} in {ctx.home.fleet_file}")
    return {"directory": str(target), "commit": commit, "registered": inp.add_to_fleet}
