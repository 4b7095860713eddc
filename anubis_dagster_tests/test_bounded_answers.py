"""Partner answers are bounded in bytes (after decompression) and in time (issue 22, item 3).

A local server plays the hostile partner: a gzip bomb (51 KB that inflate to 52 MB), a 20 MB
body, an answer that drips a byte at a time. The real HTTP client reads each through the real
quota and attempt log (the app DB on both backends): peak memory stays near the cap, the
request ends by its deadline, and the outcome is an unknown one, as for a malformed answer,
with the stored answer cut and masked.
"""

from __future__ import annotations

import gzip
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from anubis_dagster.clients.http import ApiClient, HttpOutcome
from anubis_dagster.clients.quota import Quota
from anubis_dagster.db.models import SubscriptionEvent
from anubis_dagster.db.rate_limit import RateLimiter
from anubis_dagster.db.session import session_scope
from anubis_dagster.delivery.attempts import call_context

CAP = 1_000_000
MB = 1024 * 1024
PERSONAL = b'{"erro": "CPF 529.982.247-25 de maria.silva@example.com ja inscrito", "pad": "'
BOMB = gzip.compress(PERSONAL + b"0" * (52 * 1000 * 1000), compresslevel=9)


class Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/bomb":
            self._head(200, len(BOMB), gzip=True)
            self.wfile.write(BOMB)
        elif self.path == "/big":
            self._head(200, 20 * MB)
            self.wfile.write(PERSONAL)
            chunk = b"1" * 65536
            sent = len(PERSONAL)
            while sent < 20 * MB:
                piece = chunk[: 20 * MB - sent]
                try:
                    self.wfile.write(piece)
                except OSError:
                    return  # the client hung up at its cap
                sent += len(piece)
        elif self.path == "/drip":
            self._head(200, 10_000)
            self.wfile.write(b'{"a": "')
            try:
                for _ in range(10_000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                return
        elif self.path == "/small-gzip":
            body = gzip.compress(b'{"ok": true}')
            self._head(200, len(body), gzip=True)
            self.wfile.write(body)
        elif self.path == "/refused-big":
            self._head(422, 3 * CAP)
            self.wfile.write(PERSONAL + b"2" * (3 * CAP - len(PERSONAL)))

    def _head(self, status: int, length: int, *, gzip: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length))
        if gzip:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def partner() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def client(db_url: str, base_url: str, *, deadline: float = 30.0) -> ApiClient:
    ctx = call_context(db_url, None, "run-bounded", log=lambda _line: None)
    return ApiClient(
        name="hostile",
        base_url=base_url,
        limiter=RateLimiter(db_url, "hostile:api", Quota.parse("1000/1", name="test")),
        ctx=ctx,
        quick_retries=1,
        max_body_bytes=CAP,
        deadline_seconds=deadline,
    )


def register(db_url: str, base_url: str, path: str, **kwargs: Any) -> tuple[Any, int, float]:
    """(result, peak traced bytes, seconds) of one registration POST to `path`."""
    api = client(db_url, base_url, **kwargs)
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = api.request("register", "POST", path, json_body={"x": 1}, idempotent=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        api.close()
    return result, peak, time.monotonic() - started


def stored(db_url: str) -> SubscriptionEvent:
    with session_scope(db_url) as session:
        event = session.scalars(
            select(SubscriptionEvent).order_by(SubscriptionEvent.id.desc()).limit(1)
        ).one()
        session.expunge(event)
        return event


def assert_cut_and_masked(event: SubscriptionEvent) -> None:
    text = str(event.response)
    assert len(text) < 5000  # cut, not 1 MB and certainly not 52
    assert "529.982.247-25" not in text and "maria.silva@example.com" not in text
    assert "***.982.247-**" in text  # the start of the answer is kept, masked


def test_a_gzip_bomb_inflates_no_further_than_the_cap(db_url: str, partner: str) -> None:
    assert len(BOMB) < 60_000
    result, peak, _ = register(db_url, partner, "/bomb")
    assert result.outcome is HttpOutcome.MALFORMED and result.unknown_outcome
    assert "cut" in (result.error or "")
    assert peak < 6 * MB, f"peak {peak / MB:.1f} MB"  # 52 MB inflated whole before
    event = stored(db_url)
    assert event.outcome == "malformed"
    assert_cut_and_masked(event)


def test_a_20_mb_answer_is_cut_while_streaming(db_url: str, partner: str) -> None:
    result, peak, _ = register(db_url, partner, "/big")
    assert result.outcome is HttpOutcome.MALFORMED and result.unknown_outcome
    assert peak < 6 * MB, f"peak {peak / MB:.1f} MB"
    assert_cut_and_masked(stored(db_url))


def test_a_slow_drip_ends_at_the_deadline_as_an_unknown_outcome(db_url: str, partner: str) -> None:
    # each byte comes well within the read timeout (20 s): only the deadline can stop it
    result, _, seconds = register(db_url, partner, "/drip", deadline=1.5)
    assert result.outcome is HttpOutcome.TIMEOUT and result.unknown_outcome
    assert 1.4 <= seconds < 3.5, seconds
    assert stored(db_url).outcome == "timeout"


def test_a_refusal_stays_a_refusal_when_its_text_is_too_long(db_url: str, partner: str) -> None:
    """The registration rules are unchanged: a 4xx is a definite answer, only its text is cut."""
    result, _, _ = register(db_url, partner, "/refused-big")
    assert result.outcome is HttpOutcome.HTTP_4XX and not result.unknown_outcome
    assert_cut_and_masked(stored(db_url))


def test_a_small_compressed_answer_reads_as_before(db_url: str, partner: str) -> None:
    result, _, _ = register(db_url, partner, "/small-gzip")
    assert result.outcome is HttpOutcome.OK and result.body == {"ok": True}
