"""The intent file schema: IntentSpec and its parts, validated by pydantic with unknown keys refused."""

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from intent_pipelines.retries import Backoff, RetryOn

NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
STEP_ID_PATTERN = r"^[a-z][a-z0-9_]*$"
PARAM_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Steps (and, separately, verify checks) of one intent. A runbook a person reviews has a handful;
# each step is a Dagster op, and the loader's graph checks (cycles, upstream sets) grow with the
# square of the count. Past this, split the work into several intents.
MAX_STEPS = 100
# The launchpad's own fields (dagster_defs/launchpad.py): a param of the same name would be shadowed.
RESERVED_PARAMS = frozenset({"dry_run", "confirm", "reason", "replay_of", "fresh_context"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ParamType = Literal["string", "integer", "number", "boolean", "list"]


class ParamSpec(_Strict):
    """One parameter: its type, whether it is required, and the constraints its value must meet."""

    type: ParamType = "string"
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    pattern: str | None = None
    min: float | None = None
    max: float | None = None
    secret: bool = False
    env: str | None = Field(
        default=None, description="environment variable a secret param is read from at run time"
    )
    help: str = ""

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ParamSpec":
        if self.required and self.default is not None:
            raise ValueError("a param cannot be both required and have a default")
        if self.secret and self.default is not None:
            raise ValueError("a secret param cannot have a default: secrets never live in files")
        if self.pattern is not None and self.type != "string":
            raise ValueError("pattern applies only to string params")
        if (self.min is not None or self.max is not None) and self.type not in ("integer", "number"):
            raise ValueError("min/max apply only to integer and number params")
        return self


class ContextCapture(_Strict):
    """A command run once at preflight whose trimmed output is recorded (e.g. a git sha)."""

    run: list[str] = Field(min_length=1)
    timeout: float = Field(default=30, gt=0)
    optional: bool = Field(default=False, description="record '' instead of failing when it fails")


class DenyRule(_Strict):
    """Refuse the request when ``when`` holds, telling the operator ``reason``."""

    when: str
    reason: str = Field(min_length=1)


class PolicySpec(_Strict):
    """Guard rails evaluated before anything runs."""

    confirm: str | bool = False
    lock: str | None = Field(default=None, description="template of the lock target, e.g. app:{{ params.app }}")
    lock_wait: float = Field(default=0, ge=0, description="seconds to wait for a held lock; 0 fails fast")
    timeout: float | None = Field(default=None, gt=0, description="max runtime of the whole request, seconds")
    deny: list[DenyRule] = Field(default_factory=list)


class RetrySpec(_Strict):
    """How a step retries: attempts in total, exponential backoff with jitter, and on what."""

    attempts: int = Field(default=1, ge=1, le=20)
    delay: float = Field(default=1.0, ge=0)
    backoff: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.1, ge=0, le=1)
    on: RetryOn = RetryOn.TRANSIENT

    def backoff_policy(self) -> Backoff:
        """The Backoff these settings describe."""
        return Backoff(delay_s=self.delay, factor=self.backoff, jitter=self.jitter)


class SandboxSpec(_Strict):
    """Run a command under bubblewrap: system directories read-only, only declared paths besides."""

    # Plain absolute paths, not templates: what a step may touch is fixed when the file is reviewed.
    writable: list[str] = Field(default_factory=list)
    readable: list[str] = Field(default_factory=list)
    network: bool = False

    @field_validator("writable", "readable")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not PurePosixPath(path).is_absolute():
                raise ValueError(f"sandbox path {path!r} must be absolute (start with /)")
        return value


class ActionCall(_Strict):
    """Either an argv (``run``), a shell string (``run`` + ``shell: true``) or an action (``uses``)."""

    run: list[str] | str | None = None
    shell: bool = False
    uses: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    env: dict[str, str] = Field(default_factory=dict)
    # Variables taken by name from the operator's environment; a step sees nothing else beyond a base.
    inherit_env: list[Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]] = Field(default_factory=list)
    cwd: str | None = None
    sandbox: SandboxSpec | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("run", mode="before")
    @classmethod
    def _argv_scalars_are_words(cls, value: Any) -> Any:
        # `run: [sleep, 5]` and `run: [true]` mean the words "5" and "true", not a number or bool.
        if isinstance(value, list):
            return [str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, int | float) else v
                    for v in value]
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> "ActionCall":
        if (self.run is None) == (self.uses is None):
            raise ValueError("give exactly one of `run` (a command) or `uses` (an action)")
        if isinstance(self.run, str) and not self.shell:
            raise ValueError(
                "`run` is a string but `shell: true` is not set; write `run` as an argv list "
                "(preferred) or add `shell: true`"
            )
        if isinstance(self.run, list) and not self.run:
            raise ValueError("`run` is an empty list; give the command and its arguments")
        if self.shell and not isinstance(self.run, str):
            raise ValueError("`shell: true` needs `run` to be a single string")
        if self.with_ and self.uses is None:
            raise ValueError("`with` applies only to `uses` actions")
        if self.sandbox is not None and self.uses is not None:
            raise ValueError("`sandbox` applies only to `run` commands; an action (`uses`) runs inside the engine")
        return self


class RollbackSpec(ActionCall):
    """What undoes a completed step."""

    timeout: float | None = Field(default=None, gt=0)


class StepSpec(ActionCall):
    """One step of an intent: a node of the DAG."""

    id: str = Field(pattern=STEP_ID_PATTERN)
    name: str = ""
    needs: list[str] = Field(default_factory=list)
    timeout: float | None = Field(default=None, gt=0, description="seconds")
    retry: RetrySpec = Field(default_factory=RetrySpec)
    pool: str | None = None
    when: str | None = None
    rollback: RollbackSpec | None = None
    # manual: a person approves (`intent approve`) before it runs; conditional: it runs only when
    # `when` holds or INTENT_ENABLE_<STEP_ID> is set in the environment.
    gate: Literal["auto", "manual", "conditional"] = "auto"

    @model_validator(mode="after")
    def _gate_consistent(self) -> "StepSpec":
        if self.uses == "gate.manual" and self.gate == "auto":
            object.__setattr__(self, "gate", "manual")  # a pure approval step needs no extra key
        if self.gate == "conditional" and self.when is None:
            raise ValueError("a conditional gate needs a `when` (or use gate: auto)")
        return self


class VerifyCheck(ActionCall):
    """A check run after the steps; a failing check fails (and rolls back) the request."""

    id: str = Field(pattern=STEP_ID_PATTERN)
    timeout: float | None = Field(default=None, gt=0)


class IntentSpec(_Strict):
    """A whole intent file."""

    name: str = Field(pattern=NAME_PATTERN)
    summary: str = Field(min_length=1)
    version: int | str = 1
    aliases: list[str] = Field(default_factory=list)
    description: str = ""
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    context: dict[str, ContextCapture] = Field(default_factory=dict)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    steps: list[StepSpec] = Field(min_length=1)
    verify: list[VerifyCheck] = Field(default_factory=list)
    # Variables every step, rollback, check and context capture takes from the operator's environment.
    inherit_env: list[Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]] = Field(default_factory=list)
    # The sandbox of every `run` step, rollback and check that declares none of its own.
    sandbox: SandboxSpec | None = None

    @field_validator("steps", "verify", mode="before")
    @classmethod
    def _not_too_many(cls, value: Any, info: ValidationInfo) -> Any:
        # Before the items are validated: 10,000 steps are refused without building 10,000 models.
        if isinstance(value, list) and len(value) > MAX_STEPS:
            raise ValueError(f"{len(value):,} {info.field_name} is more than the limit of {MAX_STEPS}; "
                             "split the runbook into several intents")
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases_are_names(cls, value: list[str]) -> list[str]:
        for alias in value:
            if not re.match(NAME_PATTERN, alias):
                raise ValueError(f"alias {alias!r} must be lowercase words joined by '-'")
        return value

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name in value:
            if not re.match(PARAM_NAME_PATTERN, name):
                raise ValueError(f"param name {name!r} must match {PARAM_NAME_PATTERN}")
            if name in RESERVED_PARAMS:
                raise ValueError(f"param name {name!r} is reserved for the launchpad; rename it")
        return value

    @property
    def job_name(self) -> str:
        """The Dagster job name: snake_case of the intent name."""
        return self.name.replace("-", "_")

    def sandbox_for(self, call: ActionCall) -> SandboxSpec | None:
        """The sandbox a call's command runs in: its own, else the intent's; never for an action."""
        if call.uses is not None:
            return None
        return call.sandbox or self.sandbox

    def step(self, step_id: str) -> StepSpec:
        """The step with this id."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)
