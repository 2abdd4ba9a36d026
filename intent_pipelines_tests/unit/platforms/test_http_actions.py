"""http.check and wait.until against a real loopback HTTP server."""

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from intent_pipelines.actions.base import Outputs
from intent_pipelines.actions.http import CheckInput
from intent_pipelines.errors import StepFailed


class Canned(BaseHTTPRequestHandler):
    """Answers /<status> with that status and the body "status <status>"."""

    def do_GET(self) -> None:  # noqa: N802
        status = int(self.path.strip("/") or 200)
        body = f"status {status}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


def serve(port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Canned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def base_url() -> Iterator[str]:
    server = serve(0)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_check_passes_on_expected_status_and_body(base_url: str, run_action: Callable[..., Outputs]) -> None:
    """http.check succeeds when the status and the expected text match."""
    result = run_action("http.check", url=f"{base_url}/200", contains="status 200")
    assert result["status"] == 200 and isinstance(result["elapsed_ms"], int)
    assert run_action("http.check", url=f"{base_url}/404", expect_status=404)["status"] == 404


@pytest.mark.parametrize(("status", "transient"), [(404, False), (429, True), (500, True), (503, True)])
def test_check_classifies_unexpected_status(
    base_url: str, run_action: Callable[..., Outputs], status: int, transient: bool
) -> None:
    """5xx and 429 are transient (worth a retry); other unexpected statuses are not."""
    with pytest.raises(StepFailed, match=f"returned {status}, expected 200") as failed:
        run_action("http.check", url=f"{base_url}/{status}")
    assert failed.value.transient is transient


def test_check_body_mismatch_and_refused_connection(
    free_ports: Callable[[int], int], base_url: str, run_action: Callable[..., Outputs]
) -> None:
    """A wrong body is deterministic; a refused connection is transient."""
    with pytest.raises(StepFailed, match="does not contain 'v2'") as wrong_body:
        run_action("http.check", url=f"{base_url}/200", contains="v2")
    assert not wrong_body.value.transient
    with pytest.raises(StepFailed, match="failed: ConnectionError") as refused:
        run_action("http.check", url=f"http://127.0.0.1:{free_ports(1)}/", timeout_s=2)
    assert refused.value.transient


def test_wait_until_returns_once_the_server_is_up(
    free_ports: Callable[[int], int], run_action: Callable[..., Outputs]
) -> None:
    """wait.until polls until a server that starts late answers."""
    port = free_ports(1)
    servers: list[ThreadingHTTPServer] = []
    timer = threading.Timer(0.5, lambda: servers.append(serve(port)))
    timer.start()
    try:
        result = run_action("wait.until", url=f"http://127.0.0.1:{port}/200", timeout_s=10, interval_s=0.1)
        assert result["status"] == 200 and result["waited_ms"] >= 400
    finally:
        timer.join()
        for server in servers:
            server.shutdown()
            server.server_close()


def test_wait_until_gives_up_with_a_transient_failure(
    free_ports: Callable[[int], int], run_action: Callable[..., Outputs]
) -> None:
    """wait.until fails (transient) after its timeout when nothing answers."""
    started = time.monotonic()
    with pytest.raises(StepFailed, match="still not up after 0.5s") as failed:
        run_action("wait.until", url=f"http://127.0.0.1:{free_ports(1)}/", timeout_s=0.5, interval_s=0.1)
    assert failed.value.transient and time.monotonic() - started < 5


def test_check_rejects_a_url_without_scheme() -> None:
    """http.check inputs must be an http(s) URL, caught before anything runs."""
    with pytest.raises(ValidationError):
        CheckInput(url="localhost:8080/health")
