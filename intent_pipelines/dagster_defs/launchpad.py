"""The launchpad: a typed Dagster Config per intent, mapped onto the preflight op's config."""

# No `from __future__ import annotations` here: pydantic and Dagster read these annotations at runtime.
from typing import Any

import dagster as dg
import pydantic

from intent_pipelines.spec.models import IntentSpec, ParamSpec

_PYTHON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool,
                                 "list": list[str]}

PREFLIGHT = "preflight"


def _field(spec: ParamSpec) -> tuple[Any, Any]:
    kind = _PYTHON_TYPES[spec.type]
    description = spec.help or None
    if spec.required:
        return kind, pydantic.Field(description=description)
    return kind | None, pydantic.Field(default=spec.default, description=description)


def launch_config_class(spec: IntentSpec) -> type[dg.Config]:
    """A Config class whose fields are the intent's (non-secret) params plus dry_run/confirm/reason."""
    fields: dict[str, Any] = {name: _field(p) for name, p in spec.params.items() if not p.secret}
    fields["dry_run"] = (bool, pydantic.Field(default=False, description="plan and log only; change nothing"))
    # Any, so the launchpad takes both `confirm: true` and `confirm: <plan hash>`.
    fields["confirm"] = (Any, pydantic.Field(
        default="", description="confirm a change the policy guards: true, or the plan hash a dry run showed"))
    fields["reason"] = (str, pydantic.Field(default="", description="why: recorded in the audit log"))
    fields["replay_of"] = (str, pydantic.Field(
        default="", description="replay this earlier request: its recorded context is reused"))
    fields["fresh_context"] = (bool, pydantic.Field(
        default=False, description="with replay_of: capture the context again instead of reusing it"))
    fields["plan"] = (str, pydantic.Field(
        default="", description="run exactly this plan (hash from a dry run): its captured context is reused"))
    model: type[dg.Config] = pydantic.create_model(
        f"{spec.job_name}_launch", __base__=dg.Config, **fields)
    return model


def preflight_config_schema() -> dict[str, Any]:
    """The inner config the mapping produces (and that a raw run config may give directly)."""
    return {
        "params": dg.Field(dg.Permissive(), default_value={}),  # type: ignore[no-untyped-call]
        "dry_run": dg.Field(bool, default_value=False),
        "confirm": dg.Field(dg.Any, default_value=""),
        "reason": dg.Field(str, default_value=""),
        "who": dg.Field(str, default_value=""),
        "replay_of": dg.Field(str, default_value=""),
        "fresh_context": dg.Field(bool, default_value=False),
        "plan": dg.Field(str, default_value=""),
    }


def launch_config_mapping(spec: IntentSpec) -> dg.ConfigMapping:
    """Map the typed launchpad fields onto the preflight op."""
    config_class = launch_config_class(spec)
    param_names = [name for name, p in spec.params.items() if not p.secret]

    def to_run_config(config: dict[str, Any]) -> dict[str, Any]:
        params = {k: config[k] for k in param_names if config.get(k) is not None}
        return {
            "ops": {PREFLIGHT: {"config": {
                "params": params, "dry_run": config["dry_run"], "confirm": config["confirm"],
                "reason": config["reason"], "replay_of": config["replay_of"],
                "fresh_context": config["fresh_context"], "plan": config["plan"]}}},
            # Dagster's per-event console lines drown the step output the CLI streams; the UI's
            # event log keeps every event regardless of this level.
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        }

    return dg.ConfigMapping(config_fn=to_run_config, config_schema=config_class.to_config_schema())
