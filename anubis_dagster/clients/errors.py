"""Failures that belong to the integration, not to one student.

A partner that refuses our credentials or cannot be reached fails every student the same way:
charging each of them an attempt (and dead-lettering them after the schedule) would punish the
students for our problem. The HTTP client raises these; the delivery layer stops the
integration's batch at the first one, leaves every student where it was, and fails the run once
with a message naming the integration and the settings to look at.
"""

from __future__ import annotations

from collections.abc import Sequence


class PartnerProblem(RuntimeError):
    """The whole integration is blocked (credentials, outage): stop the batch, charge nobody."""

    def __init__(self, message: str, *, partner: str, settings: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.partner = partner
        self.settings = tuple(settings)

    def describe(self) -> str:
        hint = f" (check {', '.join(self.settings)})" if self.settings else ""
        return f"{self}{hint}"


class CredentialsRefused(PartnerProblem):
    """The partner answered 401/403 to our credentials, even with a fresh token."""


class PartnerUnreachable(PartnerProblem):
    """No request reached the partner (connection refused, DNS, connect timeouts), or its token
    endpoint is failing: nothing can be sent until it is back."""


class PartnerDown(PartnerProblem):
    """The partner API's circuit breaker is open (issue 21, `core/breaker.py`): a run of
    failures only the partner can cause, across different students. Nothing more is sent to
    it until a probe succeeds; `opened_here` when the call that raised this opened it (that
    run gives the streak's students their attempts back and sends the one alert)."""

    def __init__(
        self,
        message: str,
        *,
        partner: str,
        opened_here: bool = False,
        streak_ids: Sequence[int] = (),
    ) -> None:
        super().__init__(message, partner=partner)
        self.opened_here = opened_here
        self.streak_ids = tuple(streak_ids)


class SendCancelled(RuntimeError):
    """The caller withdrew its permission to send a write just before it left (e.g. the run's
    claim on the subscription expired and another run may own it now). Nothing was sent."""


class WriteWithheld(RuntimeError):
    """A request that would change something at the partner was stopped before it left (the
    integration runs in shadow, `legacy/shadow.py`): nothing was sent and no quota spent.
    `request` is what would have been sent (method, url, body), for the "would send" record;
    it holds personal data: mask it before it is stored or shown."""

    def __init__(self, message: str, *, operation: str, request: dict[str, object]) -> None:
        super().__init__(message)
        self.operation = operation
        self.request = request
