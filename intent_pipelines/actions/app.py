"""The app.* actions: build, switch, run, scale, check and observe an app of the fleet."""

import math
import re
import re._constants as _constants
import re._parser as _parser
from typing import Any

from pydantic import Field, field_validator

from intent_pipelines.actions.base import ActionInput, Outputs, action
from intent_pipelines.actions.http import transient_status
from intent_pipelines.errors import IntentError, StepFailed
from intent_pipelines.execution.context import ActionContext
from intent_pipelines.fleet import App
from intent_pipelines.platforms.base import (
    HealthResult,
    Platform,
    ReplicaStatus,
    find_app,
    parse_since,
    platform_for,
)

MAX_REPLICAS = 20
# observe is a snapshot: probe each replica once instead of waiting for it to come up.
OBSERVE_HEALTH_TIMEOUT_S = 0.0
OBSERVE_ERRORS_SINCE = "15m"
OBSERVE_ERROR_LINES = 10


class AppInput(ActionInput):
    """An action on one app of the fleet."""

    app: str = Field(min_length=1, description="app name in fleet.yaml")


class BuildInput(AppInput):
    ref: str = Field(default="HEAD", min_length=1, description="git ref (local) or image tag")


class SwitchInput(AppInput):
    release: str = Field(min_length=1, description="release id from app.build")


class StartInput(AppInput):
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)


class ScaleInput(AppInput):
    replicas: int = Field(ge=1, le=MAX_REPLICAS)


class HealthInput(AppInput):
    path: str | None = Field(default=None, description="defaults to the app's health_path")
    expect_status: int = Field(default=200, ge=100, le=599)
    timeout_s: float = Field(default=20, gt=0, le=600)


# How many ways one repeat nested in another may split a piece of a line, e.g. 3**3 for
# `(\d{1,3}\.){3}`. Python's `re` backtracks with no time limit, app.logs runs inside the engine
# without a step timeout, and log lines are written by whoever the app serves: `(a+)+$` over 40
# injected characters runs for hours. IPv6-like `([0-9a-f]{1,4}:){7}` (16,384) still passes.
MAX_REGEX_SPLITS = 100_000
_REPEATS = (_constants.MAX_REPEAT, _constants.MIN_REPEAT)
_REGEX_HINT = ("Let each part match one way: `a+$` instead of `(a+)+$`, or make the inner repeat possessive "
               "(`(?:a++)+`) or atomic (`(?>a+)+`), which never backtrack.")


def backtracking_risk(pattern: str) -> str | None:
    r"""Why ``pattern`` may backtrack exponentially on a hostile line, or None when it cannot that way.

    Read from the parsed pattern (the stdlib's own parser): a repeat inside a repeat that can split
    text many ways, or alternatives inside a repeat that can match the same text. Polynomial cases
    (``\w*\w*$``) pass: they are slow only on lines far longer than a log line.
    """
    return _risk(_parser.parse(pattern), None)


def _risk(items: Any, outer: int | None) -> str | None:
    """``outer``: the largest count of the innermost enclosing repeat that can backtrack, or None."""
    for op, arg in items:
        if op in _REPEATS:
            _, high, body = arg
            if high > 1 and outer is not None and _splits(outer, high) > MAX_REGEX_SPLITS:
                return "repeats a repeat (like `(a+)+`), which can take exponential time on a long line"
            found = _risk(body, high if high > 1 else outer)
        elif op is _constants.POSSESSIVE_REPEAT:
            found = _risk(arg[2], None)
        elif op is _constants.ATOMIC_GROUP:
            found = _risk(arg, None)
        elif op is _constants.SUBPATTERN:
            found = _risk(arg[3], outer)
        elif op in (_constants.ASSERT, _constants.ASSERT_NOT):
            found = _risk(arg[1], outer)
        elif op is _constants.BRANCH:
            firsts = [_first_char(alternative) for alternative in arg[1]]
            if outer is not None and (None in firsts or len(set(firsts)) < len(firsts)):
                return ("repeats alternatives that can match the same text (like `(a|a)+`), which can take "
                        "exponential time on a long line")
            found = next((r for r in (_risk(a, outer) for a in arg[1]) if r), None)
        elif op is _constants.GROUPREF_EXISTS:
            found = _risk(arg[1], outer) or (_risk(arg[2], outer) if arg[2] else None)
        else:
            found = None
        if found:
            return found
    return None


def _splits(outer: int, inner: int) -> float:
    if _constants.MAXREPEAT in (outer, inner):
        return math.inf
    return math.exp(min(outer * math.log(inner), 700))  # inner ** outer without building the integer


def _first_char(items: Any) -> int | None:
    """The character an alternative must start with, or None when it may start with several (or match empty)."""
    if not items:
        return None
    op, arg = items[0]
    if op is _constants.LITERAL:
        return int(arg)
    if op is _constants.SUBPATTERN:
        return _first_char(arg[3])
    if op in (*_REPEATS, _constants.POSSESSIVE_REPEAT) and arg[0] >= 1:
        return _first_char(arg[2])
    return None


class LogsInput(AppInput):
    since: str = Field(default="", description='"10m", "1h", "2d" or an ISO time; "" for all')
    pattern: str = Field(default="", description="regular expression; empty matches every line")
    lines: int = Field(default=100, ge=1, le=10_000)

    @field_validator("since")
    @classmethod
    def _since_parses(cls, value: str) -> str:
        parse_since(value)
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern {value!r} is not a valid regular expression: {exc}") from None
        risk = backtracking_risk(value)
        if risk:
            raise ValueError(f"pattern {value!r} {risk}. {_REGEX_HINT}")
        return value


class RollbackInput(AppInput):
    release: str = Field(default="", description="release to go back to; default the previous")
    stop_if_none: bool = Field(
        default=False,
        description="when there is no release to go back to (a first deploy), stop the app instead of failing",
    )


def _target(ctx: ActionContext, name: str) -> tuple[App, Platform]:
    """Look the app up in the fleet file and bind its platform to this step."""
    app = find_app(ctx.home, name)
    return app, platform_for(app, ctx.home, ctx.home.fleet_file, ctx)


def _describe(ctx: ActionContext, name: str) -> str:
    """Summarise an app's state for a preview without changing it (errors become the summary)."""
    try:
        app, platform = _target(ctx, name)
        replicas = platform.status(app)
        release = platform.current_release(app) or "none"
    except IntentError as exc:
        return f"state unknown: {exc.one_line()}"
    alive = sum(r.alive for r in replicas)
    return f"{app.platform}, release {release}, {alive}/{len(replicas)} replicas alive"


def _alive(replicas: list[ReplicaStatus]) -> int:
    return sum(r.alive for r in replicas)


def _preview_build(ctx: ActionContext, inp: BuildInput) -> str:
    return f"build a release of {inp.app} at {inp.ref} without making it live ({_describe(ctx, inp.app)})"


@action("app.build", BuildInput, preview=_preview_build)
def build(ctx: ActionContext, inp: BuildInput) -> Outputs:
    """Build a release of the app at a git ref; outputs its id and the current (previous) one."""
    app, platform = _target(ctx, inp.app)
    previous = platform.current_release(app)
    release = platform.build(app, inp.ref)
    return {"release": release.id, "previous": previous}


def _preview_switch(ctx: ActionContext, inp: SwitchInput) -> str:
    return f"make release {inp.release} current for {inp.app} ({_describe(ctx, inp.app)})"


@action("app.switch", SwitchInput, preview=_preview_switch)
def switch(ctx: ActionContext, inp: SwitchInput) -> Outputs:
    """Atomically make a release current (also the rollback of a switch: switch back)."""
    app, platform = _target(ctx, inp.app)
    return {"previous": platform.switch(app, inp.release)}


def _preview_start(ctx: ActionContext, inp: StartInput) -> str:
    return f"start {inp.replicas} replica(s) of {inp.app} ({_describe(ctx, inp.app)})"


@action("app.start", StartInput, preview=_preview_start)
def start(ctx: ActionContext, inp: StartInput) -> Outputs:
    """Start the app's replicas that are not running yet."""
    app, platform = _target(ctx, inp.app)
    return {"replicas": _alive(platform.start(app, inp.replicas))}


def _preview_stop(ctx: ActionContext, inp: AppInput) -> str:
    return f"stop every replica of {inp.app} ({_describe(ctx, inp.app)})"


@action("app.stop", AppInput, preview=_preview_stop)
def stop(ctx: ActionContext, inp: AppInput) -> Outputs:
    """Stop every replica of the app."""
    app, platform = _target(ctx, inp.app)
    stopped = _alive(platform.status(app))
    platform.stop(app)
    return {"stopped": stopped}


def _preview_restart(ctx: ActionContext, inp: AppInput) -> str:
    return f"restart {inp.app} on its current release, same replica count ({_describe(ctx, inp.app)})"


@action("app.restart", AppInput, preview=_preview_restart)
def restart(ctx: ActionContext, inp: AppInput) -> Outputs:
    """Restart the app on its current release, keeping the replica count."""
    app, platform = _target(ctx, inp.app)
    return {"replicas": _alive(platform.restart(app))}


def _preview_scale(ctx: ActionContext, inp: ScaleInput) -> str:
    return f"scale {inp.app} to {inp.replicas} replica(s) ({_describe(ctx, inp.app)})"


@action("app.scale", ScaleInput, preview=_preview_scale)
def scale(ctx: ActionContext, inp: ScaleInput) -> Outputs:
    """Run exactly the given number of replicas."""
    app, platform = _target(ctx, inp.app)
    return {"replicas": _alive(platform.scale(app, inp.replicas))}


def _health_line(result: HealthResult) -> str:
    verdict = "ok" if result.ok else f"FAIL {result.error}"
    return f"  {result.replica}: {verdict}"


def _preview_health(ctx: ActionContext, inp: HealthInput) -> str:
    path = inp.path or "the health path"
    return (
        f"GET {path} on every replica of {inp.app} expecting {inp.expect_status}, "
        f"for up to {inp.timeout_s:g}s ({_describe(ctx, inp.app)})"
    )


@action("app.health", HealthInput, preview=_preview_health)
def health(ctx: ActionContext, inp: HealthInput) -> Outputs:
    """Check every replica answers its health path; unreachable or 5xx is a transient failure."""
    app, platform = _target(ctx, inp.app)
    results = platform.health(
        app, path=inp.path, expect_status=inp.expect_status, timeout_s=inp.timeout_s
    )
    for result in results:
        ctx.log(_health_line(result))
    if not results:
        raise StepFailed(
            f"app {app.name} has no running replicas to check",
            hint="Start it first (app.start or the restart-app intent).",
        )
    failing = [r for r in results if not r.ok]
    if failing:
        raise StepFailed(
            f"{app.name}: {len(failing)}/{len(results)} replicas unhealthy: {failing[0].error}",
            transient=any(transient_status(r.status) for r in failing),
            hint=f"See the app's logs (app.logs) and {ctx.log_path}.",
        )
    return {"healthy": len(results)}


def _preview_logs(ctx: ActionContext, inp: LogsInput) -> str:
    since = f" since {inp.since}" if inp.since else ""
    pattern = f" matching /{inp.pattern}/" if inp.pattern else ""
    return f"show the last {inp.lines} log lines of {inp.app}{since}{pattern} (read-only)"


@action("app.logs", LogsInput, preview=_preview_logs)
def logs(ctx: ActionContext, inp: LogsInput) -> Outputs:
    """Copy the app's matching log lines into the step log."""
    app, platform = _target(ctx, inp.app)
    lines = platform.logs(app, since=inp.since, pattern=inp.pattern, lines=inp.lines)
    ctx.log(f"{len(lines)} matching line(s) from {app.name}")
    for line in lines:
        ctx.log(line)
    return {"matches": len(lines)}


def _preview_observe(ctx: ActionContext, inp: AppInput) -> str:
    return f"report health, replicas, recent errors and version of {inp.app} (read-only)"


@action("app.observe", AppInput, preview=_preview_observe)
def observe(ctx: ActionContext, inp: AppInput) -> Outputs:
    """Write a readable report (health, replicas, recent errors, version) to the step log."""
    app, platform = _target(ctx, inp.app)
    replicas = platform.status(app)
    results = platform.health(app, timeout_s=OBSERVE_HEALTH_TIMEOUT_S) if replicas else []
    errors = platform.logs(
        app, since=OBSERVE_ERRORS_SINCE, pattern=r"\bERROR\b", lines=OBSERVE_ERROR_LINES
    )
    version = platform.version(app)
    release = platform.current_release(app)
    healthy = bool(results) and all(r.ok for r in results)
    ctx.log(f"== {app.name} ({app.platform}) ==")
    ctx.log(f"release:  {release or 'none'}")
    ctx.log(f"version:  {version or 'unknown'}")
    ctx.log(f"replicas: {_alive(replicas)}/{len(replicas)} alive")
    for r in replicas:
        where = f" pid {r.pid} port {r.port}" if r.pid else ""
        ctx.log(f"  {r.name}: {'alive' if r.alive else 'DEAD'}{where} release {r.release}")
    ctx.log(f"health:   {sum(r.ok for r in results)}/{len(results)} healthy")
    for result in results:
        ctx.log(_health_line(result))
    ctx.log(f"errors in the last {OBSERVE_ERRORS_SINCE}: {len(errors)} (latest shown)")
    for line in errors:
        ctx.log(f"  {line}")
    ctx.log(f"verdict:  {'HEALTHY' if healthy else 'UNHEALTHY'}")
    return {
        "healthy": healthy,
        "replicas": _alive(replicas),
        "version": version,
        "release": release,
        "errors": len(errors),
    }


def _preview_rollback(ctx: ActionContext, inp: RollbackInput) -> str:
    target = inp.release or "the previous release"
    return f"switch {inp.app} back to {target} and restart it ({_describe(ctx, inp.app)})"


@action("app.rollback", RollbackInput, preview=_preview_rollback)
def rollback(ctx: ActionContext, inp: RollbackInput) -> Outputs:
    """Switch back to the previous (or a given) release and restart on it."""
    app, platform = _target(ctx, inp.app)
    previous = platform.current_release(app)
    try:
        return {"release": platform.rollback(app, inp.release), "previous": previous, "stopped": False}
    except StepFailed:
        if not inp.stop_if_none or inp.release:
            raise
    # Nothing to go back to: a broken first release must not keep serving.
    ctx.log(f"{app.name}: no earlier release; stopping it so {previous or 'the failed release'} does not serve")
    platform.stop(app)
    return {"release": "", "previous": previous, "stopped": True}
