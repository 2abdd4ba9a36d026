"""Secrets for leak tests, the forms they take once encoded, and a search of files and outputs for them."""

import base64
import html
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, quote_plus

import pyarrow.parquet as pq

# A quote, URL-special characters and shell metacharacters in one; a multi-line key.
TOKEN = "zq'x9QUOTE-t&k=1 $(id)"
KEY = "-----BEGIN TEST KEY-----\nMIIsecretLINEone4242\nMIIsecretLINEtwo4343\n-----END TEST KEY-----"
# Secrets of the operator's environment that no step declares.
WEBHOOK = "http://127.0.0.1:9/hook?key=WEBHOOKsecret77"
AWS = "awsLEAKvalue9911"
# What a caller of `intent run --submit` has set: never sent, never written.
CALLER_TOKEN = "callerONLYtoken5150"

LEAKY = """\
name: leaky
summary: uses two secrets every way a step can, then fails on a probe whose URL holds one
params:
  token: {type: string, secret: true, required: true}
  key: {type: string, secret: true, required: true, env: TEST_SIGNING_KEY}
context:
  keyline: {run: [sh, -c, 'printf "%s\\n" "$1"', --, "{{ params.key }}"]}
steps:
  - id: shell
    shell: true
    run: "echo {{ params.token }} && printf '%s\\n' {{ params.key }}"
  - id: out
    needs: [shell]
    run: [sh, -c, 'printf "leak=%s\\n" "$1" >> "$INTENT_OUTPUT"; printf "%s" "$1" | base64', --,
          "{{ params.token }}"]
  - id: probe
    needs: [out]
    uses: http.check
    with: {url: "http://127.0.0.1:@PORT@/health?token={{ params.token }}"}
"""


def encodings(secret: str) -> set[str]:
    """The forms a secret takes once quoted, escaped or encoded (written here, not taken from the product)."""
    found = {secret, shlex.quote(secret), secret.replace("'", "'\"'\"'"), json.dumps(secret)[1:-1],
             repr(secret)[1:-1], quote(secret, safe=""), quote(secret), quote_plus(secret), html.escape(secret),
             base64.b64encode(secret.encode()).decode().rstrip("=")}
    found |= {line for line in secret.splitlines() if len(line) >= 8}
    return found


SECRET_FORMS = sorted(set().union(*(encodings(s) for s in (TOKEN, KEY, WEBHOOK, AWS, CALLER_TOKEN))), key=len)


def hits(text: str, forms: Sequence[str] = SECRET_FORMS) -> list[str]:
    """The secret forms (of ``forms``) found in ``text``."""
    return [form for form in forms if form in text]


def file_hits(root: Path, forms: Sequence[str] = SECRET_FORMS) -> dict[str, list[str]]:
    """Every file under ``root`` (SQLite files and WALs as bytes, Parquet decoded) that holds one of ``forms``."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            text = json.dumps(pq.read_table(path).to_pylist(), default=str)
        else:
            text = path.read_bytes().decode("utf-8", "replace")
        if found_here := hits(text, forms):
            found[str(path.relative_to(root))] = found_here
    return found
