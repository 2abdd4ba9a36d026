"""The http.check and wait.until actions, and which HTTP failures are worth a retry."""

import time

import requests
from pydantic import Field

from intent_pipelines.actions.base import ActionInput, Outputs, action
from intent_pipelines.errors import FailureDetail, StepFailed
from intent_pipelines.execution.context import ActionContext


def transient_status(status: int | None) -> bool:
    """Whether a retry may help: unreachable (None), 429 Too Many Requests, or any 5xx."""
    return status is None or status == 429 or status >= 500


class CheckInput(ActionInput):
    url: str = Field(pattern=r"^https?://", description="http(s) URL to GET")
    expect_status: int = Field(default=200, ge=100, le=599)
    contains: str = Field(default="", description="text the body must contain")
    timeout_s: float = Field(default=10, gt=0, le=600)


class WaitInput(ActionInput):
    url: str = Field(default="", pattern=r"^(https?://.*)?$", description='"" waits timeout_s')
    timeout_s: float = Field(default=60, gt=0, le=3600)
    interval_s: float = Field(default=1, gt=0, le=60)


def _get(url: str, timeout_s: float) -> requests.Response:
    """GET ``url``; a connection error or timeout is a transient StepFailed."""
    try:
        return requests.get(url, timeout=timeout_s)
    except requests.RequestException as exc:
        raise StepFailed(
            f"GET {url} failed: {type(exc).__name__}",
            transient=True,
            detail=FailureDetail(command=f"GET {url}", stderr_tail=str(exc)[:500]),
            hint="Check the service is up and the URL is right.",
        ) from None


def _preview_check(ctx: ActionContext, inp: CheckInput) -> str:
    contains = f" containing {inp.contains!r}" if inp.contains else ""
    return f"GET {inp.url} and expect HTTP {inp.expect_status}{contains} within {inp.timeout_s:g}s"


@action("http.check", CheckInput, preview=_preview_check)
def check(ctx: ActionContext, inp: CheckInput) -> Outputs:
    """GET a URL and check its status and, optionally, its body."""
    started = time.monotonic()
    response = _get(inp.url, inp.timeout_s)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    ctx.log(f"GET {inp.url} -> {response.status_code} in {elapsed_ms} ms")
    detail = FailureDetail(command=f"GET {inp.url}", stderr_tail=response.text[:500])
    if response.status_code != inp.expect_status:
        raise StepFailed(
            f"GET {inp.url} returned {response.status_code}, expected {inp.expect_status}",
            transient=transient_status(response.status_code),
            detail=detail,
            hint="See the service's logs.",
        )
    if inp.contains and inp.contains not in response.text:
        raise StepFailed(
            f"GET {inp.url} body does not contain {inp.contains!r}",
            detail=detail,
            hint="Check the deployed version or the expected text.",
        )
    return {"status": response.status_code, "elapsed_ms": elapsed_ms}


def _preview_wait(ctx: ActionContext, inp: WaitInput) -> str:
    if not inp.url:
        return f"wait {inp.timeout_s:g}s"
    return f"poll {inp.url} every {inp.interval_s:g}s until it answers below 400 (at most {inp.timeout_s:g}s)"


@action("wait.until", WaitInput, preview=_preview_wait)
def wait_until(ctx: ActionContext, inp: WaitInput) -> Outputs:
    """Wait until a URL answers with a status below 400, or simply wait when no URL is given."""
    started = time.monotonic()
    if not inp.url:
        time.sleep(inp.timeout_s)
        return {"waited_ms": int(inp.timeout_s * 1000), "status": 0}
    deadline = started + inp.timeout_s
    last = "no answer yet"
    while True:
        try:
            status = _get(inp.url, min(inp.interval_s * 5, inp.timeout_s)).status_code
        except StepFailed as exc:
            last = exc.message
        else:
            last = f"HTTP {status}"
            if status < 400:
                waited_ms = int((time.monotonic() - started) * 1000)
                ctx.log(f"{inp.url} is up ({last}) after {waited_ms} ms")
                return {"waited_ms": waited_ms, "status": status}
        if time.monotonic() + inp.interval_s > deadline:
            raise StepFailed(
                f"{inp.url} still not up after {inp.timeout_s:g}s (last: {last})",
                transient=True,
                hint="Raise timeout_s or look at why the service does not start.",
            )
        time.sleep(inp.interval_s)
