"""The one Definitions the workspace loads: intent jobs, audit assets, sensors and the runtime resource."""

import logging
from pathlib import Path

import dagster as dg

from intent_pipelines.dagster_defs.audit_assets import audit_definitions
from intent_pipelines.dagster_defs.failure_sensor import alert_definitions
from intent_pipelines.dagster_defs.jobs import RUNTIME_KEY, make_intent_job
from intent_pipelines.dagster_defs.metrics_assets import metrics_definitions
from intent_pipelines.dagster_defs.runtime import IntentRuntime
from intent_pipelines.dagster_defs.watchdog import watchdog_definitions
from intent_pipelines.errors import SpecError
from intent_pipelines.spec.loader import IntentCatalog

_log = logging.getLogger(__name__)


def make_definitions(*, intent_dirs: list[Path] | None = None, strict: bool = False) -> dg.Definitions:
    """Build every intent's job; a broken user intent file is reported and skipped, not fatal.

    ``intent_dirs`` defaults to INTENTS_PATH then the bundled intents; ``strict`` raises a broken
    file's SpecError instead (the dg component: `dg check defs` is where a team wants to hear of it).
    """
    problems: list[SpecError] | None = None if strict else []
    catalog = IntentCatalog.discover(dirs=intent_dirs, problems=problems)
    for problem in problems or []:
        # One bad file must not take the whole code location (and every other intent) down.
        _log.warning("skipping intent file: %s (run `intent validate`)", problem.one_line())
    intents = dg.Definitions(
        jobs=[make_intent_job(loaded) for loaded in catalog],
        resources={RUNTIME_KEY: IntentRuntime()},
    )
    return dg.Definitions.merge(intents, audit_definitions(), alert_definitions(), watchdog_definitions(),
                                metrics_definitions())


defs = make_definitions()
