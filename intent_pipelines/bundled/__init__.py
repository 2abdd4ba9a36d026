"""Files the product ships and installs: dagster.yaml and the sample fleet (hello-api)."""

import contextlib
import shutil
from collections.abc import Iterator
from importlib.resources import as_file, files
from pathlib import Path

# The dagster-postgres storage block `intent init --postgres` adds to dagster.yaml. The URL, with
# its password, is read from the environment when an instance starts: never written to the file.
POSTGRES_STORAGE = """
# Runs, event logs and schedules in PostgreSQL (dagster-postgres), on the server and database of
# the state store. The URL comes from the environment of every process that opens the instance.
storage:
  postgres:
    postgres_url:
      env: INTENT_STORE_URL
"""


def write_dagster_yaml(target: Path, *, postgres: bool = False) -> None:
    """Write the instance settings (SQLite under DAGSTER_HOME, or PostgreSQL) to ``target``."""
    text = files(__name__).joinpath("dagster.yaml").read_text()
    target.write_text(text + POSTGRES_STORAGE if postgres else text)


@contextlib.contextmanager
def sample_dir() -> Iterator[Path]:
    """The sample fleet: ``fleet.yaml`` and ``apps/hello-api`` (path valid inside the block)."""
    with as_file(files(__name__).joinpath("sample")) as path:
        yield path


def copy_sample_app(name: str, target: Path) -> None:
    """Copy the sample app ``name`` to ``target``."""
    with sample_dir() as sample:
        shutil.copytree(sample / "apps" / name, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
