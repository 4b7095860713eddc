"""Tiny IES's partner: a stdlib HTTP server with one endpoint, `POST /students`.

Answers 201 `{"id": "T-<n>"}` for a new CPF, 409 `{"error": ...}` for a CPF it already has and
400 when `cpf` or `course` is missing. Keeps every request it received, for the tests.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TinyServer:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.students: dict[str, str] = {}  # CPF → id
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> str:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    body = None
                status, answer = server.answer(self.path, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Silent: request lines are not for the test output."""

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def answer(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.received.append({"path": path, "body": body})
            if path != "/students":
                return 404, {"error": "not found"}
            if not isinstance(body, dict) or not body.get("cpf") or not body.get("course"):
                return 400, {"error": "cpf and course are required"}
            if body["cpf"] in self.students:
                return 409, {"error": "student already registered"}
            self.students[body["cpf"]] = f"T-{len(self.students) + 1}"
            return 201, {"id": self.students[body["cpf"]]}
