"""Param values: parse from the command line, check against the schema, read secrets, redact."""

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from intent_pipelines import secrets
from intent_pipelines.errors import ParamError, UsageError
from intent_pipelines.spec.models import IntentSpec, ParamSpec

REDACTED = "***"


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """Turn ``["app=hello", "replicas=2"]`` into a dict; a malformed pair is a UsageError."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"param {pair!r} is not key=value", hint="Write it as -p name=value.")
        values[key.strip()] = value
    return values


def _coerce(name: str, spec: ParamSpec, value: Any) -> Any:
    """Convert a CLI string (or an already typed value) to the param's type."""
    kind = spec.type
    try:
        if kind == "string":
            if isinstance(value, bool | dict | list):
                raise ValueError
            return str(value)
        if kind == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "number":
            # nan compares false with min/max, so it would slip past them; inf is no quantity either.
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError
            return float(value)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("true", "yes", "1", "on"):
                return True
            if lowered in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if kind == "list":
            if isinstance(value, list):
                return [str(v) for v in value]
            text = str(value).strip()
            if text.startswith("["):
                parsed = json.loads(text)
                if not isinstance(parsed, list):
                    raise ValueError
                return [str(v) for v in parsed]
            return [item.strip() for item in text.split(",") if item.strip()]
    except (ValueError, TypeError, json.JSONDecodeError):
        pass
    raise ParamError(f"param {name!r}: {value!r} is not a valid {kind}",
                     hint=_describe(name, spec))


def _describe(name: str, spec: ParamSpec) -> str:
    article = "an" if spec.type == "integer" else "a"
    bits = [f"{name} is {article} {spec.type}"]
    if spec.enum:
        bits.append(f"one of {', '.join(map(str, spec.enum))}")
    if spec.pattern:
        bits.append(f"matching {spec.pattern}")
    if spec.min is not None:
        bits.append(f">= {spec.min:g}")
    if spec.max is not None:
        bits.append(f"<= {spec.max:g}")
    text = ", ".join(bits)
    return f"Expected: {text}." + (f" ({spec.help})" if spec.help else "")


def _check(name: str, spec: ParamSpec, value: Any) -> None:
    if spec.enum is not None and value not in spec.enum:
        raise ParamError(f"param {name!r}: {value!r} is not allowed", hint=_describe(name, spec))
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise ParamError(f"param {name!r}: {value!r} does not match {spec.pattern}",
                         hint=_describe(name, spec))
    if spec.min is not None and value < spec.min:
        raise ParamError(f"param {name!r}: {value} is below the minimum {spec.min:g}",
                         hint=_describe(name, spec))
    if spec.max is not None and value > spec.max:
        raise ParamError(f"param {name!r}: {value} is above the maximum {spec.max:g}",
                         hint=_describe(name, spec))


def check_value(name: str, spec: ParamSpec, raw: Any) -> Any:
    """``raw`` converted to the param's type and checked against its enum, pattern, min and max."""
    value = _coerce(name, spec, raw)
    _check(name, spec, value)
    return value


def secret_env_var(name: str, spec: ParamSpec) -> str:
    """The environment variable a secret param is read from."""
    return spec.env or f"{secrets.SECRET_ENV_PREFIX}{name.upper()}"


def resolve_params(
    spec: IntentSpec,
    given: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Validate ``given`` against the intent's params; fill defaults; read secrets from the env.

    Secret params are never taken from ``given`` so they never reach run config, audit or logs.
    """
    environ = os.environ if environ is None else environ
    unknown = sorted(set(given) - set(spec.params))
    if unknown:
        known = ", ".join(spec.params) or "none"
        raise ParamError(f"{spec.name} has no param {unknown[0]!r}", hint=f"Its params: {known}.")
    values: dict[str, Any] = {}
    for name, pspec in spec.params.items():
        if pspec.secret:
            if name in given and given[name] not in (None, ""):
                raise ParamError(
                    f"param {name!r} is secret and cannot be passed on the command line",
                    hint=f"Set it in the environment variable {secret_env_var(name, pspec)}.",
                )
            raw = environ.get(secret_env_var(name, pspec))
            secrets.register(raw)  # before anything can print it (a value failing its pattern, say)
        else:
            raw = given.get(name)
            if raw is None or (raw == "" and pspec.type != "string"):
                raw = pspec.default
        if raw is None:
            if pspec.required:
                where = (f"the environment variable {secret_env_var(name, pspec)}" if pspec.secret
                         else f"-p {name}=...")
                raise ParamError(f"{spec.name} needs param {name!r}",
                                 hint=f"Give it with {where}. {_describe(name, pspec)}")
            values[name] = None
            continue
        values[name] = check_value(name, pspec, raw)
    return values


def redact(spec: IntentSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every secret replaced by ``***``.

    No digest of the value is kept: a hash of a short secret is found by trying them all (a 6-digit
    one in a second), and a keyed hash would only move the secret to its key. See ADR 0011.
    """
    return {name: REDACTED if (p := spec.params.get(name)) is not None and p.secret and value is not None else value
            for name, value in values.items()}
