"""`post_json` against a real HTTP server on a free loopback port that answers a scripted sequence of statuses:
retries on 503 until delivered, no retry on a 400 (the receiver rejects the body), and errors without the URL."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from freqcap.adapters.webhook import post_json

SECRET = "xoxb-SECRET-token-123"


@pytest.fixture
def scripted():
    statuses: list[int] = []
    hits: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = SecretStr(f"http://127.0.0.1:{server.server_address[1]}/services/{SECRET}")
    yield url, statuses, hits
    server.shutdown()
    server.server_close()


def test_retries_a_503_with_backoff_until_delivered(scripted):
    url, statuses, hits = scripted
    statuses += [503, 503]
    waits: list[float] = []
    d = post_json(url, {"text": "x"}, timeout=2, attempts=4, backoff=0.25, backoff_max=0.4, sleep=waits.append)
    assert d.ok and d.attempts == 3 and d.status == 200 and len(hits) == 3
    assert waits == [0.25, 0.4]  # 0.25 · 2^k, at most 0.4
    assert hits[0] == b'{"text": "x"}'


def test_a_400_is_not_retried_and_the_error_names_no_url(scripted):
    url, statuses, hits = scripted
    statuses += [400]
    d = post_json(url, {"text": "x"}, timeout=2, attempts=4, backoff=0.0, backoff_max=0.0, sleep=lambda s: None)
    assert not d.ok and d.attempts == 1 and d.status == 400 and d.error == "HTTP 400" and len(hits) == 1


def test_an_unreachable_receiver_fails_after_every_attempt_without_leaking_the_url():
    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = SecretStr(f"http://127.0.0.1:{port}/hooks/{SECRET}")
    d = post_json(url, {"text": "x"}, timeout=1, attempts=2, backoff=0.0, backoff_max=0.0, sleep=lambda s: None)
    assert not d.ok and d.attempts == 2 and d.status is None
    assert SECRET not in (d.error or "") and "/hooks" not in (d.error or "")
