"""No secret on disk or screen: real runs that use secrets every way a step can, then a grep of everything."""

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from intent_pipelines.home import IntentHome
from intent_pipelines.testing import http_answering, invoke_cli, run_intent
from intent_pipelines_tests.support.secret_scan import AWS, KEY, LEAKY, TOKEN, WEBHOOK, file_hits, hits


@pytest.fixture
def probe_port() -> Iterator[int]:
    """A loopback HTTP server answering 404 to everything."""
    with http_answering(404) as port:
        yield port


@pytest.fixture
def leaky(sample_home: IntentHome, tmp_path: Path, probe_port: int, monkeypatch: pytest.MonkeyPatch) -> IntentHome:
    """The leaky intent on INTENTS_PATH, its secrets and the operator's secrets in the environment."""
    intents = tmp_path / "intents"
    intents.mkdir()
    (intents / "leaky.yaml").write_text(LEAKY.replace("@PORT@", str(probe_port)))
    monkeypatch.setenv("INTENTS_PATH", str(intents))
    monkeypatch.setenv("INTENT_SECRET_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_SIGNING_KEY", KEY)
    monkeypatch.setenv("INTENT_ALERT_WEBHOOK_URL", WEBHOOK)
    monkeypatch.setenv("INTENT_ALERT_WEBHOOK_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS)
    return sample_home


def test_no_secret_reaches_any_file_or_any_output(leaky: IntentHome) -> None:
    """CLI run, dry run, replay, launchpad run, export and every read command leave no secret form anywhere."""
    outputs: list[str] = []

    def cli(*args: str) -> tuple[int, str]:
        code, out, err = invoke_cli(*args)
        outputs.extend([out, err])
        return code, out

    code, out = cli("run", "leaky", "--json")
    failed = json.loads(out)
    assert code == 10 and failed["status"] == "FAILED", out  # the probe answered 404
    assert "token=***" in failed["error"]
    code, _ = cli("run", "leaky", "--dry-run")
    assert code == 0
    code, out = cli("replay", failed["request_id"], "--json")
    assert code == 10 and json.loads(out)["status"] == "FAILED", out
    with dg.DagsterInstance.get() as instance:
        result, row = run_intent("leaky", {}, instance)  # the launchpad's path: a job run with run config
        assert not result.success and row["status"] == "FAILED"
    today = datetime.now(UTC).date().isoformat()
    for args in (("audit", "export", "--date", today), ("audit", "show", failed["request_id"]),
                 ("explain", failed["request_id"]), ("status", "--all"), ("failures",), ("metrics", "--json"),
                 ("audit", "verify")):
        cli(*args)

    assert (leaky.root / "reports").is_dir() and any((leaky.root / "reports").iterdir()), "a report was written"
    assert list(leaky.root.rglob("*.parquet")), "the export wrote Parquet"
    assert file_hits(leaky.root) == {}
    assert file_hits(leaky.dagster_home) == {}
    assert [h for text in outputs for h in hits(text)] == []


def test_a_step_sees_only_the_base_environment_and_what_it_declares(leaky: IntentHome, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's secrets are not in a step's environment; a name opted in with inherit_env is, and audited."""
    dump = tmp_path / "env.json"  # run by this interpreter itself: a pyenv shim or a shell would add variables
    (tmp_path / "intents" / "envdump.yaml").write_text(f"""\
name: envdump
summary: write the environment the step sees
inherit_env: [OPTED_IN]
steps:
  - id: dump
    env: {{DECLARED: "yes"}}
    run: ["{sys.executable}", -c, "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))",
          "{dump}"]
""")
    monkeypatch.setenv("OPTED_IN", "visible")
    code, out, err = invoke_cli("run", "envdump", "--json")
    assert code == 0, err
    seen = json.loads(dump.read_text())
    assert seen["OPTED_IN"] == "visible" and seen["DECLARED"] == "yes" and "INTENT_OUTPUT" in seen
    assert not {"AWS_SECRET_ACCESS_KEY", "INTENT_SECRET_TOKEN", "TEST_SIGNING_KEY", "INTENT_ALERT_WEBHOOK_URL",
                "INTENT_HOME", "DAGSTER_HOME", "INTENTS_PATH"} & set(seen)
    assert set(seen) <= {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
                         "OPTED_IN", "DECLARED", "INTENT_OUTPUT"} | {k for k in seen if k.startswith("LC_")}
    request_id = json.loads(out)["request_id"]
    code, out, _ = invoke_cli("audit", "show", request_id, "--json")
    assert code == 0
    starts = [e for e in json.loads(out) if e["kind"] == "step.start"]
    assert len(starts) == 1
    assert starts[0]["env"] == ["DECLARED", "INTENT_OUTPUT", "OPTED_IN"]
    assert "visible" not in json.dumps(starts[0]), "names are audited, never values"
