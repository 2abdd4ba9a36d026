"""Actions a step can `use`; importing the modules below registers them."""

import importlib

from intent_pipelines.actions.base import REGISTRY, ActionDef

_MODULES = ("app", "db", "gate", "http", "scaffold")


def registry() -> dict[str, ActionDef]:
    """Every registered action by name (imports the action modules on first use)."""
    for module in _MODULES:
        importlib.import_module(f"intent_pipelines.actions.{module}")
    return REGISTRY
