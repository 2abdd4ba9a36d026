"""Operational runbooks declared in YAML and run as Dagster jobs; ``IntentsComponent`` plugs them into dg."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from intent_pipelines.component import IntentsComponent

__all__ = ["IntentsComponent"]


def __getattr__(name: str) -> Any:
    # Lazy: every `intent` CLI start imports this package and must not pay for importing dagster.
    if name == "IntentsComponent":
        from intent_pipelines.component import IntentsComponent

        return IntentsComponent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # dg finds a registry module's components with dir(module): without this the lazy class is invisible.
    return sorted({*globals(), *__all__})
