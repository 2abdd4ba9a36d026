"""Fail on any finding of a refreshed detect-secrets baseline that was not reviewed as a false positive.

`make lint` refreshes a copy of .secrets.baseline (`detect-secrets scan --baseline COPY`): findings
whose secret and file match a reviewed entry keep its label wherever their line moved, so only a
new finding is unlabelled. The repository's baseline is never rewritten by CI.
"""

import json
import sys


def main(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        results = json.load(fh)["results"]
    new = [(name, s["line_number"], s["type"]) for name, found in results.items() for s in found
           if s.get("is_secret") is not False]
    for name, line, kind in new:
        print(f"{name}:{line}: unreviewed {kind}: remove it, or review it into .secrets.baseline "
              "(detect-secrets scan --baseline .secrets.baseline, then mark it is_secret: false)")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
