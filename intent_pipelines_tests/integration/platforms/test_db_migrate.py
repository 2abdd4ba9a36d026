"""db.migrate on SQLite (and PostgreSQL when one is reachable): status, apply, down, preview."""

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, inspect, text

from intent_pipelines.actions.base import Outputs
from intent_pipelines.errors import StepFailed
from intent_pipelines.home import IntentHome

EXAMPLE_MIGRATIONS = Path(__file__).resolve().parents[3] / "intent_pipelines" / "bundled" / "sample" / "apps" / "hello-api" / "migrations"


def columns(url: str, table: str) -> list[str]:
    engine = create_engine(url)
    try:
        names = inspect(engine).get_table_names()
        return [c["name"] for c in inspect(engine).get_columns(table)] if table in names else []
    finally:
        engine.dispose()


@pytest.fixture
def db(tmp_path: Path) -> dict[str, str]:
    return {"url": f"sqlite:///{tmp_path / 'app.db'}", "dir": str(EXAMPLE_MIGRATIONS)}


def test_apply_then_status_then_down(
    db: dict[str, str], run_action: Callable[..., Outputs], step_lines: list[str]
) -> None:
    """Apply runs every pending migration in order; down reverts the newest one by default."""
    assert run_action("db.migrate", **db, action="status") == {
        "applied": [],
        "reverted": [],
        "current": "",
        "pending": ["0001_create_items", "0002_add_price"],
    }
    applied = run_action("db.migrate", **db, action="apply")
    assert applied["applied"] == ["0001_create_items", "0002_add_price"]
    assert applied["current"] == "0002" and applied["pending"] == []
    assert columns(db["url"], "items") == ["id", "name", "price_cents"]
    assert run_action("db.migrate", **db, action="apply")["applied"] == []

    reverted = run_action("db.migrate", **db, action="down")
    assert reverted["reverted"] == ["0002_add_price"] and reverted["current"] == "0001"
    assert columns(db["url"], "items") == ["id", "name"]
    run_action("db.migrate", **db, action="status")
    assert "applied  0001_create_items" in step_lines and "pending  0002_add_price" in step_lines


def test_targets_bound_apply_and_down(db: dict[str, str], run_action: Callable[..., Outputs]) -> None:
    """Apply stops at its target (inclusive) and down stops at its target (exclusive)."""
    assert run_action("db.migrate", **db, action="apply", target="0001")["current"] == "0001"
    run_action("db.migrate", **db, action="apply")
    result = run_action("db.migrate", **db, action="down", target="0")
    assert result["reverted"] == ["0002_add_price", "0001_create_items"]
    assert result["current"] == "" and columns(db["url"], "items") == []


def test_preview_lists_work_without_touching_the_database(
    db: dict[str, str], preview_action: Callable[..., str], run_action: Callable[..., Outputs]
) -> None:
    """The preview of apply/down names the migrations it would run and changes nothing."""
    text_apply = preview_action("db.migrate", **db, action="apply")
    assert "current none; would apply 0001_create_items, 0002_add_price" in text_apply
    assert not Path(db["url"].removeprefix("sqlite:///")).exists()
    run_action("db.migrate", **db, action="apply")
    assert "would revert 0002_add_price" in preview_action("db.migrate", **db, action="down")
    assert "nothing to apply" in preview_action("db.migrate", **db, action="apply")
    assert run_action("db.migrate", **db, action="status")["current"] == "0002"


def test_failed_migration_rolls_back_entirely(tmp_path: Path, run_action: Callable[..., Outputs]) -> None:
    """A migration that fails half-way leaves no trace; earlier migrations stay applied."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_a.up.sql").write_text("CREATE TABLE a (x INTEGER);\n")
    (migrations / "0002_b.up.sql").write_text("CREATE TABLE b (x INTEGER);\nINSERT INTO nope VALUES (1);\n")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(StepFailed, match="migration 0002_b .up. failed and was rolled back: no such table"):
        run_action("db.migrate", url=url, dir=str(migrations), action="apply")
    assert columns(url, "b") == []
    assert run_action("db.migrate", url=url, dir=str(migrations), action="status")["current"] == "0001"


def test_bad_migration_directories_give_clear_errors(
    tmp_path: Path, run_action: Callable[..., Outputs]
) -> None:
    """A missing directory, a misnamed file or a missing down file each fail with what to fix."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(StepFailed, match="migrations directory .* does not exist"):
        run_action("db.migrate", url=url, dir=str(tmp_path / "missing"), action="apply")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "1_init.sql").write_text("SELECT 1;")
    with pytest.raises(StepFailed, match="is not named NNNN_name.up.sql"):
        run_action("db.migrate", url=url, dir=str(bad), action="status")
    no_down = tmp_path / "nodown"
    no_down.mkdir()
    (no_down / "0001_a.up.sql").write_text("CREATE TABLE a (x INTEGER);")
    run_action("db.migrate", url=url, dir=str(no_down), action="apply")
    with pytest.raises(StepFailed, match="0001_a has no .down.sql file"):
        run_action("db.migrate", url=url, dir=str(no_down), action="down")


def test_inputs_need_an_app_or_a_url_and_dir() -> None:
    """db.migrate refuses inputs that name neither an app nor both a URL and a directory."""
    from intent_pipelines.actions.db import MigrateInput

    with pytest.raises(ValidationError, match="give `app`, or both `url` and `dir`"):
        MigrateInput(url="sqlite://", action="apply")
    with pytest.raises(ValidationError):
        MigrateInput(app="a", action="sideways")


def test_app_database_and_migrations_come_from_the_fleet(
    sample: Path, home: IntentHome, run_action: Callable[..., Outputs]
) -> None:
    """With only `app`, the database lives in fleet/<app>/data and migrations come from its source."""
    result = run_action("db.migrate", app="hello-api", action="apply")
    assert result["current"] == "0002"
    assert (home.fleet_dir / "hello-api" / "data" / "hello.db").exists()


def test_postgres_apply_and_down(run_action: Callable[..., Outputs], postgres_url: str) -> None:
    """The same migrations apply and revert on PostgreSQL, inside a throwaway schema."""
    base = postgres_url
    schema = f"intent_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    try:
        applied = run_action("db.migrate", url=url, dir=str(EXAMPLE_MIGRATIONS), action="apply")
        assert applied["current"] == "0002"
        reverted = run_action("db.migrate", url=url, dir=str(EXAMPLE_MIGRATIONS), action="down")
        assert reverted["current"] == "0001"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
