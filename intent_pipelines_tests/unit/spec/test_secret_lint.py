"""Tests of the literal-secret lint: which values of intent and fleet files are secrets, and where they are."""

import textwrap
from pathlib import Path

import pytest

from intent_pipelines.errors import SpecError
from intent_pipelines.spec.loader import BUNDLED_DIR, intent_files
from intent_pipelines.spec.secret_lint import FLEET_HINT, INTENT_HINT, find_literal_secrets

REPO = Path(__file__).resolve().parents[3]


def doc(body: str) -> str:
    return textwrap.dedent(body).lstrip("\n")


# (case id, YAML text, (line, kind, field) of the one finding, or None for a clean file)
CASES = [
    ("password-under-step-env", """
        name: demo
        summary: s
        steps:
          - id: migrate
            run: [psql]
            env:
              PGPASSWORD: hunter2
        """, (7, "password", "steps[0].env.PGPASSWORD")),
    ("pem-block-in-multiline-string", """
        steps:
          - id: push
            run: [deploy]
            env:
              KEY: |
                # the deploy key
                -----BEGIN OPENSSH PRIVATE KEY-----
                b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
                -----END OPENSSH PRIVATE KEY-----
        """, (7, "private key", "steps[0].env.KEY")),
    ("password-in-database-url", """
        apps:
          shop:
            database: postgresql://shop:s3cr3t-value@db.internal:5432/shop
        """, (3, "password in URL", "apps.shop.database")),
    ("token-query-in-url", """
        steps:
          - id: ping
            run: [curl, -fsS, "https://status.example.com/ping?token=8f2k1mZq0p&app=shop"]
        """, (3, "token", "steps[0].run[2]")),
    ("github-token-in-argv", """
        steps:
          - id: clone
            run: [git, clone, "https://ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8@github.com/o/r"]
        """, (3, "GitHub token", "steps[0].run[2]")),
    ("aws-key-in-shell-string", """
        steps:
          - id: sync
            run: "AWS_ACCESS_KEY_ID=AKIAQWERTYUIOPASDFGH aws s3 sync dist s3://bucket"
        """, (3, "AWS access key", "steps[0].run")),
    ("bearer-token-header", """
        steps:
          - id: notify
            uses: http.check
            with:
              url: https://api.example.com/health
              headers: {Authorization: "Bearer Zx81mQp0rT55vWq2"}
        """, (6, "token", "steps[0].with.headers.Authorization")),
    ("literal-default-of-a-plain-param", """
        params:
          db_password: {type: string, default: hunter2}
        steps: []
        """, (2, "password", "params.db_password.default")),
    ("password-flag-in-folded-string", """
        steps:
          - id: dump
            run: >
              mysqldump --single-transaction
              --password swordfish42 shop
        """, (5, "password", "steps[0].run")),
    ("template-is-a-reference", """
        steps:
          - id: ping
            run: [curl, -H, "Authorization: Bearer {{ params.token }}", "https://x/?token={{params.token}}"]
            env: {API_TOKEN: "{{ params.token or '' }}"}
        """, None),
    ("environment-references", """
        apps:
          shop:
            inherit_env: [GITHUB_TOKEN, PGPASSWORD]
            database: postgresql://shop@db/shop
            start: [sh, -c, "PGPASSWORD=$(cat /run/secrets/pg) API_TOKEN=${SHOP_TOKEN} ./serve --token $SHOP_TOKEN"]
        """, None),
    ("pointers-counts-and-flags", """
        params:
          token: {type: string, secret: true, help: "upload token: read from the environment"}
        steps:
          - id: a
            run: [upload]
            env: {TOKEN_FILE: /run/secrets/token, WEBHOOK_ATTEMPTS: "3", MAX_TOKENS: "4096", AUTH: "off"}
        """, None),
    ("ordinary-text", """
        summary: restart the author's app; passes its health check
        steps:
          - id: restart
            run: [systemctl, restart, shop]
            cwd: /srv/shop
        """, None),
    ("allowlist-pragma-silences-a-line", """
        steps:
          - id: a
            run: [true]
            env: {DEMO_PASSWORD: not-a-real-one}  # pragma: allowlist secret
        """, None),
]


@pytest.mark.parametrize(("text", "expected"), [(doc(t), e) for _, t, e in CASES], ids=[c[0] for c in CASES])
def test_literal_secrets_are_found_with_line_kind_and_field(text: str, expected: tuple[int, str, str] | None) -> None:
    """Each literal secret is reported once with its line, kind and field; references are not secrets."""
    found = [(s.line, s.kind, s.field) for s in find_literal_secrets(text, "f.yaml")]
    assert found == ([expected] if expected else [])


def test_every_secret_field_is_reported() -> None:
    """Several secrets in one file give one finding each, in file order."""
    text = doc("""
        steps:
          - id: a
            run: [true]
            env: {DB_PASSWORD: hunter2, SLACK_BOT: xoxb-1234567890-abcdefghij}
          - id: b
            run: [curl, "https://u:pw12345@example.com"]
        """)
    found = [(s.line, s.field, s.kind) for s in find_literal_secrets(text, "f.yaml")]
    assert found == [(4, "steps[0].env.DB_PASSWORD", "password"), (4, "steps[0].env.SLACK_BOT", "Slack token"),
                     (6, "steps[1].run[1]", "password in URL")]


def test_same_secret_twice_gets_the_line_of_each_copy() -> None:
    """A secret repeated in a block scalar is located at its own line, not the first copy's."""
    text = doc("""
        steps:
          - id: a
            run: |
              echo start
              curl -u x https://h/?token=aaaa1111
              curl -u x https://h/?token=bbbb2222
        """)
    [finding] = find_literal_secrets(text, "f.yaml")  # one finding per field: the first secret
    assert finding.line == 5


def test_message_is_one_line_with_file_line_field_and_what_to_do() -> None:
    """The message names file:line, the kind and field, and where the secret belongs."""
    [finding] = find_literal_secrets("env:\n  DB_PASSWORD: hunter2\n", "/x/fleet.yaml", hint=FLEET_HINT)
    assert finding.one_line() == ("/x/fleet.yaml:2: literal secret (password) in env.DB_PASSWORD; "
                                  f"{FLEET_HINT}.")
    error = finding.error()
    assert isinstance(error, SpecError) and error.exit_code == 3 and (error.path, error.line) == ("/x/fleet.yaml", 2)
    assert "\n" not in error.one_line() and "hunter2" not in error.one_line()
    assert INTENT_HINT in find_literal_secrets("env: {DB_PASSWORD: hunter2}\n")[0].one_line()


def test_text_that_is_not_yaml_has_no_findings() -> None:
    """Broken YAML is the loader's to report; the lint neither fails nor guesses."""
    assert find_literal_secrets("steps: [\n  password: hunter2\n") == []
    assert find_literal_secrets("") == []


@pytest.mark.parametrize("path", [*intent_files([BUNDLED_DIR]), REPO / "intent_pipelines" / "bundled" / "sample" / "fleet.yaml"],
                         ids=lambda p: p.name)
def test_shipped_files_hold_no_literal_secrets(path: Path) -> None:
    """The bundled intents and the example fleet pass the lint."""
    assert find_literal_secrets(path.read_text(encoding="utf-8"), str(path)) == []
