"""A local Slack-compatible webhook sink, so the demo shows its alerts without Slack.

`anubis-sandbox webhook-sink --port 8790` prints each message it receives and appends it to
`$ANUBIS_HOME/alerts.log`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from anubis_dagster.db.session import anubis_home


class _Handler(BaseHTTPRequestHandler):
    server: WebhookSink

    def do_POST(self) -> None:  # http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        try:
            text = json.loads(self.rfile.read(length) or b"{}").get("text", "")
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        self.server.received.append(text)
        if self.server.log_path is not None:
            with self.server.log_path.open("a", encoding="utf-8") as handle:
                handle.write(text + "\n---\n")
        if self.server.echo:
            print(f"[alert]\n{text}\n", flush=True)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


class WebhookSink(ThreadingHTTPServer):
    def __init__(
        self,
        port: int = 0,
        log_path: Path | None = None,
        echo: bool = False,
        host: str = "127.0.0.1",  # 0.0.0.0 in a container, so other containers can post
    ) -> None:
        super().__init__((host, port), _Handler)
        self.received: list[str] = []
        self.log_path = log_path
        self.echo = echo

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def start(self) -> str:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self.url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anubis-sandbox webhook-sink")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    args = parser.parse_args(argv)
    sink = WebhookSink(args.port, log_path=anubis_home() / "alerts.log", echo=True, host=args.host)
    print(f"webhook sink listening on {sink.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sink.serve_forever()
    return 0
