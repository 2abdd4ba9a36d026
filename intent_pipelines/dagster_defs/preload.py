"""Modules the forkserver imports once, so each parallel step process starts without importing them."""

import importlib

from intent_pipelines.actions import registry

# What a step worker imports on its own otherwise (measured: ~500 modules, ~1 s per step on 2 cores):
# the instance's SQLite storages with their alembic migrations, the engine and every action.
_MODULES = (
    "intent_pipelines.dagster_defs.jobs",
    "intent_pipelines.engine",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
    "dagster._core.storage.local_compute_log_manager",
    "alembic.command",
    "alembic.config",
    "alembic.runtime.migration",
)

for _module in _MODULES:
    importlib.import_module(_module)
registry()
