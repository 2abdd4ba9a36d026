from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from intent_pipelines.audit.export import export_day, parquet_files
from intent_pipelines.audit.integrity import checkpoint_dir, take_checkpoint, verify_parquet
from intent_pipelines.audit.verify import BreakKind
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore

DAYS = [date(2026, 3, 1) + timedelta(days=i) for i in range(4)]


@pytest.fixture
def exported(tmp_path: Path) -> tuple[IntentHome, Path]:
    """Four days of five records each, exported to four Parquet files, with a checkpoint at 20."""
    home = IntentHome(tmp_path / "home").ensure()
    store = StateStore(home.store_url())
    for i in range(20):
        store.append_audit("t", request_id=f"r{i}", run_id="u", body={"i": i})
    # The ts column only decides the partition (the hashed body keeps its own copy).
    with store.engine.begin() as conn:
        for i, day in enumerate(DAYS):
            conn.execute(sa.text("UPDATE audit_events SET ts = :ts WHERE seq >= :a AND seq < :b"),
                         {"ts": f"{day.isoformat()}T12:00:00.000Z", "a": i * 5, "b": i * 5 + 5})
    take_checkpoint(store, home)
    root = tmp_path / "export"
    for day in DAYS:
        export_day(store, day, root)
    return home, root


def _rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


def test_parallel_verification_agrees_on_an_intact_chain(exported: tuple[IntentHome, Path]) -> None:
    """Split across processes, an intact export verifies with its checkpoint head checked."""
    home, root = exported
    result = verify_parquet(root, checkpoint_dir(home), workers=2)
    assert result.ok and result.records == 20 and result.checkpoints_checked == [1]
    assert result.head == verify_parquet(root, checkpoint_dir(home), workers=1).head


def test_parallel_verification_finds_a_body_flip_inside_a_group(exported: tuple[IntentHome, Path]) -> None:
    """A flipped body byte in a later file is reported at its seq by a worker."""
    home, root = exported
    path = parquet_files(root)[2]
    table = pq.read_table(path)
    bodies = table.column("body").to_pylist()
    bodies[1] = bodies[1].replace(b'"i":11', b'"i":12')
    _rewrite(path, table.set_column(table.schema.get_field_index("body"), "body", pa.array(bodies, pa.binary())))
    first = verify_parquet(root, checkpoint_dir(home), workers=2).first_break
    assert first is not None and (first.seq, first.kind) == (11, BreakKind.HASH_MISMATCH)


def test_parallel_verification_finds_a_gap_between_groups(exported: tuple[IntentHome, Path]) -> None:
    """A record deleted at the start of the second group is caught when the groups are stitched."""
    home, root = exported
    path = parquet_files(root)[2]
    table = pq.read_table(path)
    _rewrite(path, table.filter(pc.greater(table.column("seq"), 10)))
    first = verify_parquet(root, None, workers=2).first_break
    assert first is not None and (first.seq, first.kind) == (10, BreakKind.SEQ_GAP)


def test_parallel_verification_finds_truncation_against_the_checkpoint(exported: tuple[IntentHome, Path]) -> None:
    """Deleting the last day's file is truncation since the checkpoint."""
    home, root = exported
    parquet_files(root)[-1].unlink()
    first = verify_parquet(root, checkpoint_dir(home), workers=2).first_break
    assert first is not None and (first.seq, first.kind) == (15, BreakKind.TRUNCATED)
