"""Every ``INTENT_*`` environment variable the product reads, parsed in one place and never at import time.

Per-step and per-param variables are named by the intent (``INTENT_ENABLE_<STEP>``,
``INTENT_SECRET_<PARAM>``, ``INTENT_OUTPUT`` for a step's outputs) and are read where they apply.
A malformed number is a one-line UsageError naming the variable, except for the webhook knobs,
whose typo must not cost an alert (they fall back to their defaults and say so in the log).
"""

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from intent_pipelines import secrets
from intent_pipelines.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"


@dataclass(frozen=True)
class Settings:
    """The environment as the product understands it (see docs/cli.md, "Environment")."""

    home: Path  # INTENT_HOME
    fleet: Path | None  # INTENT_FLEET
    store_url: str  # INTENT_STORE_URL ("" = the embedded SQLite store)
    intents_path: tuple[Path, ...]  # INTENTS_PATH
    dagster_url: str  # INTENT_DAGSTER_URL
    debug: bool  # INTENT_DEBUG
    heartbeat: bool  # INTENT_HEARTBEAT=off (benchmarks only)
    webhook_url: str  # INTENT_ALERT_WEBHOOK_URL
    webhook_timeout_s: float  # INTENT_ALERT_WEBHOOK_TIMEOUT
    webhook_attempts: int  # INTENT_ALERT_WEBHOOK_ATTEMPTS
    webhook_deadline_s: float  # INTENT_ALERT_WEBHOOK_DEADLINE: one delivery, attempts and backoff together
    alert_sensor_interval_s: int  # INTENT_ALERT_SENSOR_INTERVAL_S
    watchdog_stale_s: float  # INTENT_WATCHDOG_STALE_S
    watchdog_grace_s: float  # INTENT_WATCHDOG_GRACE_S
    lock_ttl_s: float  # INTENT_LOCK_TTL_S: the lease on a target, renewed every quarter of it
    audit_anchor_dir: Path | None  # INTENT_AUDIT_ANCHOR_DIR

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ

        def text(name: str, default: str = "") -> str:
            return env.get(name, "").strip() or default

        def path(name: str) -> Path | None:
            value = text(name)
            return Path(value).expanduser().resolve() if value else None

        return cls(
            home=Path(text("INTENT_HOME", ".intent_home")).expanduser().resolve(),
            fleet=path("INTENT_FLEET"),
            store_url=text("INTENT_STORE_URL"),
            intents_path=tuple(Path(p).expanduser() for p in env.get("INTENTS_PATH", "").split(os.pathsep) if p),
            dagster_url=text("INTENT_DAGSTER_URL", DEFAULT_DAGSTER_URL).rstrip("/"),
            debug=bool(text("INTENT_DEBUG")),
            heartbeat=text("INTENT_HEARTBEAT", "on").lower() != "off",
            webhook_url=text("INTENT_ALERT_WEBHOOK_URL"),
            webhook_timeout_s=max(0.1, _lenient(env, "INTENT_ALERT_WEBHOOK_TIMEOUT", 5.0)),
            webhook_attempts=max(1, int(_lenient(env, "INTENT_ALERT_WEBHOOK_ATTEMPTS", 3))),
            webhook_deadline_s=max(0.1, _lenient(env, "INTENT_ALERT_WEBHOOK_DEADLINE", 20.0)),
            alert_sensor_interval_s=max(1, int(_number(env, "INTENT_ALERT_SENSOR_INTERVAL_S", 10, integer=True))),
            watchdog_stale_s=_number(env, "INTENT_WATCHDOG_STALE_S", 900.0),
            watchdog_grace_s=_number(env, "INTENT_WATCHDOG_GRACE_S", 10.0),
            lock_ttl_s=max(1.0, _number(env, "INTENT_LOCK_TTL_S", 60.0)),
            audit_anchor_dir=path("INTENT_AUDIT_ANCHOR_DIR"),
        )


def settings() -> Settings:
    """The settings of the current environment (read afresh: tests and the CLI change it).

    Secret-bearing settings (the webhook URL, the store's password) and variables whose names mark
    them as secrets are registered for masking on the way.
    """
    current = Settings.from_env()
    secrets.register_environment(os.environ)
    secrets.register(current.webhook_url, _password(current.store_url))
    return current


def _password(url: str) -> str | None:
    if not url:
        return None
    from sqlalchemy.engine import make_url  # only when a store URL is set: SQLAlchemy is slow to import
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password
    except ArgumentError:
        return None  # the store reports a malformed URL itself


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise UsageError(f"{name}={raw!r} is not {kind}",
                         hint=f"Set it to {kind} >= 0 (default {default:g}) or unset it.") from None
    if value < 0:
        raise UsageError(f"{name}={raw!r} is negative", hint=f"Set it to a number >= 0 (default {default:g}).")
    return value


def _lenient(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return _number(env, name, default)
    except UsageError as exc:
        log.warning("%s; using %g", exc.one_line(), default)
        return default
