"""The attempt log: one `subscription_events` row per HTTP request to a partner.

The HTTP clients (`clients/http.py`) know nothing of the database: they report each attempt to
an `AttemptRecorder`. This is the one the delivery layer gives them, writing each row in its own
transaction, before the request leaves (outcome `in_flight`, so a process killed mid-request
still leaves a trace) and after its answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from anubis_dagster.clients.http import AttemptSubject, CallContext, HttpResult
from anubis_dagster.clients.results import stored_body
from anubis_dagster.db.models import Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster.db.transitions import finish_attempt, record_attempt


@dataclass(frozen=True)
class AttemptLog:
    """`AttemptRecorder` writing the attempt rows of one run and integration."""

    db_url: str
    integration_id: int | None
    run_id: str | None = None

    def started(self, operation: str, subject: AttemptSubject | None, request: Any) -> int:
        with session_scope(self.db_url) as session:
            event = record_attempt(
                session,
                subscription=cast(Subscription | None, subject),
                integration_id=self.integration_id,
                operation=operation,
                outcome="in_flight",
                run_id=self.run_id,
                request=request,
            )
            session.flush()
            return event.id

    def finished(self, attempt_id: int, result: HttpResult) -> None:
        with session_scope(self.db_url) as session:
            finish_attempt(
                session,
                attempt_id,
                outcome=result.recorded_outcome,  # `refused` when the partner said no
                http_status=result.status,
                duration_ms=round(result.duration_ms, 1),
                response=stored_body(result.body),
                error=result.recorded_error,  # a refusal's code and message
            )


def call_context(
    db_url: str,
    integration_id: int | None,
    run_id: str | None = None,
    log: Callable[[str], None] | None = None,
) -> CallContext:
    """The `CallContext` of a run's partner calls, logging attempts to the app DB."""
    recorder = AttemptLog(db_url, integration_id, run_id)
    if log is None:
        return CallContext(db_url, integration_id, run_id, recorder=recorder)
    return CallContext(db_url, integration_id, run_id, log=log, recorder=recorder)
