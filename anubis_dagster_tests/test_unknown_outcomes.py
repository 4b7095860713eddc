"""What a failed request proves (clients/http) and what the delivery layer makes of a step's
writes (delivery/outcomes). Transport errors are raised by an httpx MockTransport at the client
boundary; the attempt rows go to a real SQLite/PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from anubis_dagster.clients.errors import CredentialsRefused, PartnerUnreachable
from anubis_dagster.clients.http import ApiClient, HttpOutcome
from anubis_dagster.clients.quota import Quota
from anubis_dagster.db.rate_limit import RateLimiter
from anubis_dagster.delivery.attempts import call_context
from anubis_dagster.delivery.outcomes import still_unknown

Raise = Callable[[httpx.Request], httpx.Response]


def raising(error: type[Exception]) -> Raise:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)  # type: ignore[call-arg]

    return handler


def answering(status: int, content: bytes) -> Raise:
    return lambda request: httpx.Response(status, content=content)


def client(db_url: str, handler: Raise, calls: list[int]) -> ApiClient:
    def counted(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return handler(request)

    ctx = call_context(db_url, integration_id=None)
    return ApiClient(
        name="partner",
        base_url="http://partner.test",
        limiter=RateLimiter(db_url, "test:api", Quota(1000, 1)),
        ctx=ctx,
        transport=httpx.MockTransport(counted),
        quick_retries=3,
        credential_settings=("PARTNER_KEY",),
    )


CASES = [
    # error or answer, outcome, may have acted
    (raising(httpx.ReadTimeout), HttpOutcome.TIMEOUT, True),
    (raising(httpx.WriteTimeout), HttpOutcome.TIMEOUT, True),
    (raising(httpx.RemoteProtocolError), HttpOutcome.LOST_ANSWER, True),
    (raising(httpx.ReadError), HttpOutcome.LOST_ANSWER, True),
    (raising(httpx.WriteError), HttpOutcome.LOST_ANSWER, True),
    (answering(502, b"bad gateway"), HttpOutcome.HTTP_5XX, True),
    (answering(200, b'{"success": true, "sta'), HttpOutcome.MALFORMED, True),
    (answering(200, b"<html>ok</html>"), HttpOutcome.MALFORMED, True),
    (answering(201, b'{"id": "T-1"}'), HttpOutcome.OK, True),
    (answering(400, b'{"error": "cpf"}'), HttpOutcome.HTTP_4XX, False),
]


@pytest.mark.parametrize(("handler", "outcome", "acted"), CASES)
def test_a_write_is_sent_once_and_says_whether_the_partner_may_have_acted(
    db_url: str, handler: Raise, outcome: HttpOutcome, acted: bool
) -> None:
    calls: list[int] = []
    api = client(db_url, handler, calls)
    result = api.request("register", "POST", "/students", json_body={}, idempotent=False)
    assert result.outcome is outcome
    assert result.may_have_acted is acted
    assert calls == [1]  # a write is never repeated inside the call
    assert api.ctx.writes_since(0) == [result]


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_an_error_before_sending_is_retried_then_reported_as_unreachable(
    db_url: str, error: type[Exception]
) -> None:
    calls: list[int] = []
    api = client(db_url, raising(error), calls)
    with pytest.raises(PartnerUnreachable, match="partner cannot be reached") as raised:
        api.request("register", "POST", "/students", json_body={}, idempotent=False)
    assert calls == [1, 1, 1]  # provably never sent: safe to try again, even for a write
    assert "PARTNER_KEY" in raised.value.describe()
    assert not any(r.may_have_acted for r in api.ctx.writes_since(0))


def test_reads_are_retried_after_a_lost_answer(db_url: str) -> None:
    calls: list[int] = []
    api = client(db_url, raising(httpx.RemoteProtocolError), calls)
    result = api.request("lookup", "GET", "/students/1")
    assert result.outcome is HttpOutcome.LOST_ANSWER and calls == [1, 1, 1]


def test_refused_credentials_raise_once(db_url: str) -> None:
    calls: list[int] = []
    api = client(db_url, answering(401, b'{"message": "no"}'), calls)
    with pytest.raises(CredentialsRefused):
        api.request("register", "POST", "/students", json_body={}, idempotent=False)
    assert calls == [1]  # no token to refresh: one call


@dataclass
class W:
    may_have_acted: bool


@pytest.mark.parametrize(
    ("definite", "writes", "adapter", "before", "unknown"),
    [
        (True, [W(True)], False, True, False),  # the partner's answer settles it
        (False, [W(True)], False, False, True),  # a write may have acted: unknown
        (False, [W(False), W(True)], False, False, True),
        (False, [W(False)], False, False, False),  # refused / never left: settled
        (False, [], True, False, False),  # the adapter's word alone, nothing written
        (False, [W(False)], True, False, True),  # the adapter read something we did not
        (False, [W(False)], False, True, True),  # an earlier unknown the resend did not settle
        (False, [], False, True, True),
    ],
)
def test_the_marker_stays_unless_something_settled_it(
    definite: bool, writes: list[W], adapter: bool, before: bool, unknown: bool
) -> None:
    assert (
        still_unknown(
            definite=definite, writes=writes, adapter_says_unknown=adapter, unresolved_before=before
        )
        is unknown
    )
