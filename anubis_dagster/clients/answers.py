"""Reading a partner's answer, bounded (issue 22): its body streamed and decompressed a chunk
at a time and cut at the byte cap after decompression (a gzip bomb never inflates past it),
every read waiting at most what is left of the request's deadline; then classified into an
`HttpOutcome`. Apart from `http.py`, which decides when to send and what to retry."""

from __future__ import annotations

import json
import time
import zlib
from enum import StrEnum
from typing import Any

import httpx

from anubis_dagster.clients.results import MAX_STORED_TEXT, HttpOutcome

#: the encodings we accept (and can decompress a bounded piece at a time)
ACCEPT_ENCODING = "gzip, deflate"


class Cut(StrEnum):
    """Why a body was not read to its end."""

    TOO_BIG = "too_big"
    TOO_SLOW = "too_slow"
    UNREADABLE = "unreadable"


def limit_reads(request: httpx.Request, deadline: float) -> None:
    """Make the next read of `request` wait at most what is left until `deadline` (httpcore
    reads the request's `timeout` extension before each read of the answer)."""
    timeouts = request.extensions.get("timeout")
    if isinstance(timeouts, dict):
        left = max(0.001, deadline - time.monotonic())
        read = timeouts.get("read")
        timeouts["read"] = left if read is None else min(read, left)


class _Inflater:
    """A bounded decompressor of gzip or deflate: each call returns at most `limit` bytes and
    keeps the rest of its input for the next call."""

    def __init__(self, encoding: str) -> None:
        gzip = encoding in ("gzip", "x-gzip")
        # deflate: zlib-wrapped as the RFC says, else raw deflate as some servers send it
        self._raw_fallback = not gzip
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)

    def __call__(self, data: bytes, limit: int) -> bytes:
        try:
            return self._obj.decompress(self._obj.unconsumed_tail + data, limit)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._raw_fallback = False
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._obj.decompress(data, limit)


def _inflater(encoding: str) -> _Inflater | None:
    """None for identity; ValueError for an encoding we did not ask for."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ValueError(f"unsupported content-encoding {encoding!r}")
    return _Inflater(encoding)


def read_bounded(
    response: httpx.Response, request: httpx.Request, limit: int, deadline: float
) -> tuple[bytes, Cut | None]:
    """The answer's body, decompressed, at most `limit` bytes, read before `deadline`; and
    why it was cut, if it was. Never holds more than `limit` + one chunk."""
    try:
        return _read_decoded(response, request, limit, deadline)
    except (ValueError, zlib.error):  # an encoding we cannot read: the body is unreadable
        return b"", Cut.UNREADABLE
    except httpx.StreamConsumed:  # a response built in memory (a test transport): no stream
        content = response.content
        return (content[:limit], Cut.TOO_BIG) if len(content) > limit else (content, None)


def _read_decoded(
    response: httpx.Response, request: httpx.Request, limit: int, deadline: float
) -> tuple[bytes, Cut | None]:
    decode = _inflater(response.headers.get("content-encoding", ""))
    body = bytearray()
    for chunk in response.iter_raw():  # each network read (≤ 64 KB) as it arrives
        room = limit + 1 - len(body)
        body += decode(chunk, room) if decode is not None else chunk[:room]
        if len(body) > limit:
            return bytes(body[:limit]), Cut.TOO_BIG
        if time.monotonic() >= deadline:
            return bytes(body), Cut.TOO_SLOW
        limit_reads(request, deadline)
    if decode is not None:
        while len(body) <= limit:  # what the decompressor still holds
            more = decode(b"", limit + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > limit:
            return bytes(body[:limit]), Cut.TOO_BIG
    return bytes(body), None


def classify(
    response: httpx.Response, raw: bytes, cut: Cut | None = None
) -> tuple[Any, HttpOutcome, str | None]:
    """(parsed body, outcome, error) of a response that arrived (`raw`: its body, decoded,
    possibly `cut`)."""
    status = response.status_code
    text = raw.decode(response.charset_encoding or "utf-8", errors="replace")
    if cut is Cut.TOO_SLOW:
        return text[:MAX_STORED_TEXT], HttpOutcome.TIMEOUT, "answer not complete by the deadline"
    try:
        if cut is not None:
            raise ValueError("cut")
        body: Any = json.loads(text) if text.strip() else None
        parsed = True
    except ValueError:
        body, parsed = text[:MAX_STORED_TEXT], False
    if cut is Cut.TOO_BIG and 200 <= status < 300:
        return body, HttpOutcome.MALFORMED, f"answer over {len(raw)} bytes, cut"
    if cut is Cut.UNREADABLE and 200 <= status < 300:
        return body, HttpOutcome.MALFORMED, "answer in an encoding we cannot read"
    if status == 429:
        return body, HttpOutcome.RATE_LIMITED, "partner quota exceeded"
    if status == 401 or status == 403:
        return body, HttpOutcome.UNAUTHORIZED, f"HTTP {status}"
    if status >= 500:
        return body, HttpOutcome.HTTP_5XX, f"HTTP {status}"
    if status >= 400:
        return body, HttpOutcome.HTTP_4XX, None
    if not parsed or (body is None and status != 204):
        return body, HttpOutcome.MALFORMED, "answer is not JSON"
    return body, HttpOutcome.OK, None
