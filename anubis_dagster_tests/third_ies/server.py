"""Tiny IES's partner, on the shared sandbox kit (rate limit, fault injection, request log).

One endpoint, `POST /students`: 201 `{"id": "T-<n>"}` for a new CPF, 409 `{"error": ...}` for a
CPF it already has, 400 when `cpf` or `course` is missing. No way to ask about a student: after
a lost answer Anubis must hold the registration for a person (`ResendGuard.NONE`).
`received` keeps every request it processed, for the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anubis_sandboxes.server import (
    Reply,
    Route,
    SandboxRequest,
    SandboxServer,
    SandboxSettings,
)


@dataclass
class TinySettings(SandboxSettings):
    rate_limits: dict[str, str] = field(default_factory=lambda: {"api": "100000/1"})


class TinyServer(SandboxServer):
    name = "Tiny"
    default_port = 0
    settings_class = TinySettings
    default_bucket = "api"

    def routes(self) -> list[Route]:
        return [Route("POST", "/students", "register", self._register, "api")]

    def reset_state(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.students: dict[str, str] = {}  # CPF → id

    def body_cpf(self, request: SandboxRequest) -> str | None:
        body = request.json_object() or {}
        return str(body.get("cpf") or "") or None

    def _register(self, request: SandboxRequest) -> Reply:
        body = request.json_object()
        self.received.append({"path": request.path, "body": body})
        if not isinstance(body, dict) or not body.get("cpf") or not body.get("course"):
            return Reply(400, {"error": "cpf and course are required"})
        cpf = str(body["cpf"])
        if cpf in self.students:
            return Reply(409, {"error": "student already registered"})
        self.students[cpf] = f"T-{len(self.students) + 1}"
        return Reply(201, {"id": self.students[cpf]})
