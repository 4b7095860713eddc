"""What one HTTP call to a partner came to, in the words the rest of Anubis uses: its
`HttpOutcome` (what a failure proves about whether the partner acted), its `HttpResult`, and a
partner's refusal in its own words. Values only, read by the delivery layer, the adapters and the
health probes without the client's machinery."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_STORED_TEXT = 2000


class HttpOutcome(StrEnum):
    """What one request came to. A `StrEnum`, so it is stored and logged as its value."""

    OK = "ok"  # 2xx with a readable body
    HTTP_4XX = "http_4xx"  # the partner refused the request: a definite answer
    HTTP_5XX = "http_5xx"
    RATE_LIMITED = "rate_limited"  # 429: not processed
    UNAUTHORIZED = "unauthorized"  # 401/403: not processed
    TIMEOUT = "timeout"  # read/write timeout after the request left
    LOST_ANSWER = "lost_answer"  # connection closed or reset, or protocol error, after sending
    MALFORMED = "malformed"  # an answer we cannot read (not JSON, cut short)
    CONNECTION_ERROR = "connection_error"  # never left: refused, DNS, connect or pool timeout


#: the attempt outcome of an answer in which the partner refused the request in its own words
#: (`HttpResult.refusal`): not an outcome of the transport, which saw an answer (ok, http_4xx)
REFUSED = "refused"
#: reads a partner's answer body for a refusal: its code and message, or None
RefusalReader = Callable[[Any], str | None]

#: outcomes that prove the partner did nothing with the request
NOT_PROCESSED = frozenset(
    {
        HttpOutcome.HTTP_4XX,
        HttpOutcome.RATE_LIMITED,
        HttpOutcome.UNAUTHORIZED,
        HttpOutcome.CONNECTION_ERROR,
    }
)
#: failures after which the partner may have acted without us knowing
UNKNOWN_OUTCOMES = frozenset(
    {HttpOutcome.HTTP_5XX, HttpOutcome.TIMEOUT, HttpOutcome.LOST_ANSWER, HttpOutcome.MALFORMED}
)


@dataclass
class HttpResult:
    operation: str
    status: int | None
    body: Any
    outcome: HttpOutcome
    duration_ms: float
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    write: bool = False  # a request that changes something at the partner (not repeatable)
    #: the partner answered and said no, in its own words (e.g. Estácio's `{"sucesso": false,
    #: "codigo": "MS004"}` inside an HTTP 200): its code and message, as the caller's
    #: `refusal` reader found them. `outcome` stays the transport's (ok, http_4xx).
    refusal: str | None = None

    @property
    def recorded_outcome(self) -> str:
        """The attempt row's outcome: `refused` for a partner's refusal, else `outcome`."""
        return REFUSED if self.refusal else self.outcome.value

    @property
    def recorded_error(self) -> str | None:
        """The attempt row's error: the partner's code and message for a refusal."""
        return self.refusal or self.error

    @property
    def ok(self) -> bool:
        return self.outcome is HttpOutcome.OK

    @property
    def delivered(self) -> bool:
        """False when the request certainly never reached the partner."""
        return self.outcome is not HttpOutcome.CONNECTION_ERROR

    @property
    def transient(self) -> bool:
        """A failure worth trying again later (the partner's side, not our data)."""
        return self.outcome not in (HttpOutcome.OK, HttpOutcome.HTTP_4XX)

    @property
    def unknown_outcome(self) -> bool:
        """The partner may have acted on the request although we got no usable answer."""
        return self.outcome in UNKNOWN_OUTCOMES

    @property
    def may_have_acted(self) -> bool:
        """Anything but a proof of nothing done: a 2xx counts (even one we cannot read)."""
        return self.outcome not in NOT_PROCESSED

    def describe(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else self.outcome.value
        return f"{self.operation}: {where}" + (f" ({self.error})" if self.error else "")


def stored_body(body: Any) -> Any:
    if isinstance(body, str):
        return {"text": body[:MAX_STORED_TEXT]}
    return body
