"""`intent validate` and `intent lint` refuse literal secrets with one line per finding and the documented exit code."""

from pathlib import Path

from intent_pipelines.home import IntentHome
from intent_pipelines.spec.loader import BUNDLED_DIR
from intent_pipelines.spec.secret_lint import FLEET_HINT, INTENT_HINT
from intent_pipelines.testing import invoke_cli

REPO = Path(__file__).resolve().parents[3]

LEAKY_INTENT = """\
name: leaky
summary: migrates with a password written into the file
steps:
  - id: migrate
    run: [psql, -c, "select 1"]
    env:
      PGPASSWORD: hunter2
"""

LEAKY_FLEET = """\
apps:
  shop:
    source: apps/shop
    database: postgresql://shop:s3cr3t-value@db.internal/shop
"""


def assert_one_error_line(err: str, fragment: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err


def test_validate_fails_on_a_literal_secret(sample_home: IntentHome, tmp_path: Path) -> None:
    """A valid intent with a password in a step's env fails validate with exit 3 and file:line, never the value."""
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text(LEAKY_INTENT)
    code, out, err = invoke_cli("validate", str(leaky))
    assert code == 3
    assert out.splitlines() == [f"FAIL  {leaky}:7: literal secret (password) in steps[0].env.PGPASSWORD; "
                                f"{INTENT_HINT}."]
    assert_one_error_line(err, "1 of 1 intent files are invalid")
    assert "hunter2" not in out + err and "Traceback" not in out + err


def test_lint_passes_the_install_and_the_shipped_files(sample_home: IntentHome) -> None:
    """By default lint checks every intent and INTENT_HOME's fleet file; the shipped files are clean."""
    code, out, err = invoke_cli("lint")
    assert code == 0, out + err
    assert f"ok    {sample_home.fleet_file}" in out and "8 files valid, no literal secrets" in out
    code, out, err = invoke_cli("lint", str(BUNDLED_DIR), str(REPO / "intent_pipelines" / "bundled" / "sample" / "fleet.yaml"))
    assert code == 0 and "8 files valid, no literal secrets" in out, out + err


def test_lint_fails_on_a_secret_in_the_fleet_file_with_the_fleet_exit_code(sample_home: IntentHome,
                                                                           tmp_path: Path) -> None:
    """A password in a fleet file's database URL is a FleetError (exit 4) naming file:line and field."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(LEAKY_FLEET)
    code, out, err = invoke_cli("lint", str(fleet))
    assert code == 4
    assert out.splitlines() == [f"FAIL  {fleet}:4: literal secret (password in URL) in apps.shop.database; "
                                f"{FLEET_HINT}."]
    assert_one_error_line(err, "1 of 1 files are invalid or hold literal secrets")
    assert "s3cr3t-value" not in out + err and "Traceback" not in out + err


def test_lint_of_a_directory_reports_every_file_and_exits_with_the_intent_code(sample_home: IntentHome,
                                                                              tmp_path: Path) -> None:
    """A directory with a leaky intent, a leaky fleet.yaml and a clean intent: two FAIL lines, one ok, exit 3."""
    (tmp_path / "fleet.yaml").write_text(LEAKY_FLEET)
    (tmp_path / "leaky.yaml").write_text(LEAKY_INTENT)
    (tmp_path / "tidy.yaml").write_text(LEAKY_INTENT.replace("leaky", "tidy")
                                        .replace("hunter2", "'{{ params.pw }}'")
                                        .replace("steps:", "params:\n  pw: {type: string, secret: true}\nsteps:"))
    code, out, err = invoke_cli("lint", str(tmp_path))
    assert code == 3, out + err
    lines = out.splitlines()
    assert f"FAIL  {tmp_path / 'leaky.yaml'}:7: literal secret (password) in steps[0].env.PGPASSWORD; " \
           f"{INTENT_HINT}." in lines
    assert f"ok    {tmp_path / 'tidy.yaml'}" in lines
    assert any(line.startswith(f"FAIL  {tmp_path / 'fleet.yaml'}:4: literal secret") for line in lines)
    assert_one_error_line(err, "2 of 3 files are invalid or hold literal secrets")


def test_lint_reports_an_invalid_file_and_a_missing_path_in_one_line(sample_home: IntentHome, tmp_path: Path) -> None:
    """An intent that does not validate and a path that does not exist end in one error line, not a trace."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsummary: x\nsteps:\n  - id: a\n    run: [true]\n    need: [b]\n")
    code, out, err = invoke_cli("lint", str(bad))
    assert code == 3 and f"FAIL  {bad}:6: steps[0].need: unknown key 'need'" in out
    assert_one_error_line(err, "1 of 1 files are invalid")
    code, out, err = invoke_cli("lint", str(tmp_path / "nope.yaml"))
    assert code == 3
    assert_one_error_line(err, "nope.yaml: no such file or directory")
    assert "Traceback" not in out + err
