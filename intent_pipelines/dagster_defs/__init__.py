"""The Dagster layer: intents as jobs (jobs), the launchpad (launchpad), the runtime resource (runtime)."""
