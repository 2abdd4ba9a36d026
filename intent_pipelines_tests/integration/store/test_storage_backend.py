"""The fixtures really run on the storage INTENT_TEST_STORAGE names (PostgreSQL or SQLite), or nothing is proven."""

import dagster as dg

from intent_pipelines.engine import Engine
from intent_pipelines.home import IntentHome
from intent_pipelines_tests.conftest import ON_POSTGRES


def test_the_state_store_and_dagster_storage_are_on_the_named_backend(sample_home: IntentHome,
                                                                     instance: dg.DagsterInstance) -> None:
    expected = "Postgres" if ON_POSTGRES else "Sqlite"
    assert Engine(sample_home).store.is_postgres is ON_POSTGRES
    assert type(instance.run_storage).__name__.startswith(expected)
    assert type(instance.event_log_storage).__name__.startswith(expected)
    with dg.DagsterInstance.get() as cli_instance:  # the instance the CLI opens from DAGSTER_HOME
        if ON_POSTGRES:
            assert type(cli_instance.run_storage).__name__.startswith("Postgres")
            assert type(cli_instance.schedule_storage).__name__.startswith("Postgres")
