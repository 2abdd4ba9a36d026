"""hello-api: a tiny dependency-free HTTP service to deploy, break, roll back, scale and observe."""

import argparse
import contextlib
import json
import os
import sqlite3
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log(level: str, message: str) -> None:
    """Write one timestamped line to stdout, which the platform sends to the replica's log."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"{stamp} {level} {message}", flush=True)


def broken() -> str:
    """Say why this release is broken, or "" when it is fine."""
    if os.environ.get("HELLO_BROKEN") == "1":
        return "HELLO_BROKEN=1 is set"
    if (HERE / "BROKEN").exists():
        return "this release contains a BROKEN file"
    return ""


def database_path() -> str:
    """Turn APP_DATABASE (a SQLAlchemy sqlite URL or a plain path) into a file path."""
    url = os.environ.get("APP_DATABASE", "")
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url


class Handler(BaseHTTPRequestHandler):
    """Routes: / greeting, /health, /version, /items."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server looks for
        routes = {
            "/": self.greeting,
            "/health": self.health,
            "/version": self.version,
            "/items": self.items,
        }
        route = routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.reply(404, {"error": f"no route {self.path}"})
            return
        route()

    def greeting(self) -> None:
        release = os.environ.get("APP_RELEASE", "")
        self.reply(200, {"message": "hello from hello-api", "release": release})

    def health(self) -> None:
        reason = broken()
        status = "broken" if reason else "ok"
        self.reply(503 if reason else 200, {"status": status, "reason": reason})

    def version(self) -> None:
        version_file = HERE / "VERSION"
        version = version_file.read_text().strip() if version_file.exists() else "unknown"
        self.reply(200, {"version": version, "release": os.environ.get("APP_RELEASE", "")})

    def items(self) -> None:
        path = database_path()
        if not path:
            self.reply(500, {"error": "APP_DATABASE is not set"})
            return
        try:
            with sqlite3.connect(path) as db:
                db.row_factory = sqlite3.Row
                rows = [dict(row) for row in db.execute("SELECT * FROM items ORDER BY id")]
        except sqlite3.Error as exc:
            self.reply(500, {"error": f"{exc} (run the migrate-schema intent?)"})
            return
        self.reply(200, {"items": rows})

    def reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        level = "ERROR" if status >= 500 else "INFO"
        detail = f" {body.get('error') or body.get('reason')}" if status >= 500 else ""
        log(level, f"{self.command} {self.path} {status}{detail}")

    def log_message(self, format: str, *args: object) -> None:
        """Silence http.server's own access log: reply() writes one line per request."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    release = os.environ.get("APP_RELEASE", "")
    log("INFO", f"hello-api listening on 127.0.0.1:{args.port} release {release}")
    if broken():
        log("ERROR", f"starting broken: {broken()}")
    with contextlib.suppress(KeyboardInterrupt), server:
        server.serve_forever()


if __name__ == "__main__":
    main()
