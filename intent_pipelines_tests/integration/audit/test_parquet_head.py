from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from intent_pipelines.audit.export import export_day, parquet_files
from intent_pipelines.audit.integrity import checkpoint_dir, take_checkpoint, verify_parquet
from intent_pipelines.audit.verify import BreakKind
from intent_pipelines.home import IntentHome
from intent_pipelines.store import StateStore


def test_deleting_the_head_of_exported_files_is_caught_with_explicit_checkpoints(tmp_path: Path) -> None:
    """Files whose first records were removed fail when checkpoints were given to check against."""
    home = IntentHome(tmp_path / "home").ensure()
    store = StateStore(home.store_url())
    for i in range(6):
        store.append_audit("t", request_id="r", run_id="u", body={"i": i})
    take_checkpoint(store, home)
    root = tmp_path / "export"
    export_day(store, datetime.now(UTC).date(), root)
    (path,) = parquet_files(root)
    table = pq.read_table(path)
    pq.write_table(table.filter(pc.greater_equal(table.column("seq"), 2)), path)

    lenient = verify_parquet(root, checkpoint_dir(home))
    assert lenient.ok and lenient.checkpoints_checked == [], "a partial export alone still verifies its links"
    strict = verify_parquet(root, checkpoint_dir(home), require_checkpoints=True)
    assert strict.first_break is not None
    assert (strict.first_break.seq, strict.first_break.kind) == (0, BreakKind.SEQ_GAP)
