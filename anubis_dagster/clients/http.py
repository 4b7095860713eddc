"""One HTTP call to a partner, done the same way for every IES.

Each attempt: wait for the shared quota, report it to the context's `AttemptRecorder` before
it leaves (the delivery layer's writes one `subscription_events` row, outcome `in_flight`, see
`delivery/attempts.py`), send with explicit timeouts, report its result (outcome, HTTP status,
duration, masked response) and write one masked line in the run log. This module knows nothing
of the database.

What a failure proves decides what may happen next (DESIGN.md, "Unknown outcome"):

- only an error that proves the request never left (connection refused, DNS, connect or pool
  timeout: `HttpOutcome.CONNECTION_ERROR`) is safe to send again blindly;
- any other failure after the request left (read timeout, connection closed or reset before the
  answer, truncated or unreadable body, 5xx) may hide an action the partner took: for a write
  (`idempotent=False`) it goes back to the caller as an *unknown outcome*, and the delivery layer
  asks the partner before any resend; reads are retried here;
- 429 blocks the bucket for `Retry-After` (every process waits) and retries; a 401 drops the
  token and retries once; a second 401/403 means our credentials are refused: `CredentialsRefused`
  stops the integration's batch instead of failing every student one by one;
- a partner that cannot be reached at all (only connection errors, after the quick retries)
  raises `PartnerUnreachable`, for the same reason.

At most `quick_retries` attempts per call (`retrying.py`: which failures may be tried again
now); after that the last result is returned and the persisted retry schedule takes over.

An answer is bounded (issue 22, `answers.py`): its body is streamed and decompressed a chunk at
a time, and cut at `max_body_bytes` after decompression (a gzip bomb never inflates past the
cap), and the whole request has a deadline (`deadline_seconds`; every read waits at most what is
left of it), so a slow drip cannot outlive the run's lease. An answer cut at the cap is
unreadable (`MALFORMED` for a 2xx, the status decides otherwise), one past the deadline a
`TIMEOUT`: both unknown outcomes for a write, as the delivery rules say; only its first
`MAX_STORED_TEXT` characters are kept, and masked like every stored answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from anubis_dagster.clients.answers import ACCEPT_ENCODING, classify, limit_reads, read_bounded
from anubis_dagster.clients.errors import CredentialsRefused, PartnerUnreachable
from anubis_dagster.clients.quota import Limiter, Priority, retry_after_seconds
from anubis_dagster.clients.results import UNKNOWN_OUTCOMES, HttpOutcome, HttpResult, RefusalReader
from anubis_dagster.clients.retrying import with_quick_retries
from anubis_dagster.core.masking import mask_text, mask_url_path

#: with the outcome vocabulary of `results.py`, which many callers import from here
__all__ = [
    "UNKNOWN_OUTCOMES",
    "ApiClient",
    "AttemptRecorder",
    "AttemptSubject",
    "CallContext",
    "CallGuard",
    "HttpOutcome",
    "HttpResult",
    "RefusalReader",
    "changes_partner",
]

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=20.0, write=10.0, pool=5.0)
#: longest wait for a quota slot inside a run; beyond it the subscription is deferred (no
#: attempt counted). Below the lease, so a waiting run keeps its claims.
MAX_QUOTA_WAIT_SECONDS = 300.0
#: an answer's largest body, after decompression (`ANUBIS_PARTNER_MAX_BODY_BYTES`)
MAX_BODY_BYTES = 1_000_000
#: a request's longest life, answer included (`ANUBIS_PARTNER_DEADLINE_SECONDS`)
DEADLINE_SECONDS = 60.0


class AttemptSubject(Protocol):
    """What the client needs of the subscription a request is about."""

    @property
    def id(self) -> int: ...


class CallGuard(Protocol):
    """The partner API's circuit breaker, seen from the client (the delivery layer's
    `delivery.breaker.BreakerGuard` keeps it in the app DB). Only calls about a subscription
    pass through it: token requests and health probes are neither stopped nor counted."""

    def before(self, api: str, subject: AttemptSubject) -> None:
        """Raise `PartnerDown` when the API's breaker is open: nothing is sent."""
        ...

    def after(self, api: str, result: HttpResult, subject: AttemptSubject) -> None:
        """Count the result; raise `PartnerDown` when it opened the breaker."""
        ...


class AttemptRecorder(Protocol):
    """Where attempts are reported (the delivery layer's `AttemptLog` writes them to the DB)."""

    def started(self, operation: str, subject: AttemptSubject | None, request: Any) -> int:
        """Before the request leaves; returns the attempt's id."""
        ...

    def finished(self, attempt_id: int, result: HttpResult) -> None:
        """Once its result is known (an answer, a timeout, a lost answer)."""
        ...


@dataclass
class CallContext:
    """Who is calling: where attempt rows go and which run they belong to.

    `results` keeps every request's result in order, so the delivery layer can tell, for one
    step, whether a write may have reached the partner (see `writes_since`). `before_write`, when
    set, is called right before a write leaves (after the quota wait): it may raise
    `SendCancelled` to stop it, e.g. when the run's claim on the subscription has expired.
    `recorder` receives every attempt (`delivery.attempts.call_context` builds the usual one).
    `before_change`, when set, is called before any request that changes something at the
    partner (`changes_partner`: every method but GET/HEAD/OPTIONS unless the call says it only
    reads, idempotent or not) leaves, even before the quota wait: it may raise `WriteWithheld`
    (the delivery layer's shadow gate, `legacy/shadow.py`).
    """

    db_url: str
    integration_id: int | None
    run_id: str | None = None
    log: Callable[[str], None] = field(default=logging.getLogger("anubis.http").info)
    stats: dict[str, float] = field(default_factory=dict)  # calls, quota waits… for metadata
    results: list[HttpResult] = field(default_factory=list)
    before_write: Callable[[AttemptSubject], None] | None = None
    before_change: Callable[[str, AttemptSubject | None, dict[str, Any]], None] | None = None
    recorder: AttemptRecorder = field(kw_only=True)
    #: the partner APIs' circuit breaker (issue 21); None: no breaker (probes, tools)
    guard: CallGuard | None = None

    def count(self, key: str, amount: float = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + amount

    def mark(self) -> int:
        """A position in `results`, to ask later what happened since."""
        return len(self.results)

    def writes_since(self, mark: int) -> list[HttpResult]:
        return [r for r in self.results[mark:] if r.write]


@dataclass(frozen=True)
class _Call:
    """One request as its caller asked for it: the same for each of its attempts."""

    operation: str
    method: str
    path: str
    subscription: AttemptSubject | None
    json_body: Any
    form: Mapping[str, str] | None
    headers: Mapping[str, str] | None
    priority: Priority
    use_auth: bool
    write: bool
    refusal: RefusalReader | None


@dataclass(frozen=True)
class _Answer:
    """What one exchange came to, before it is counted and recorded."""

    outcome: HttpOutcome
    status: int | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    #: when the answer was read to its end (or cut by us); None: no answer
    answered_at: float | None = None


class ApiClient:
    """HTTP to one partner API (one base URL, one quota).

    `credential_settings` names the settings behind this API's credentials, for the message of
    a `CredentialsRefused`/`PartnerUnreachable` (e.g. `API_KROTON_SECRET`).
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        limiter: Limiter,
        ctx: CallContext,
        auth_headers: Callable[[], dict[str, str]] | None = None,
        on_unauthorized: Callable[[], None] | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        quick_retries: int = 3,
        max_quota_wait: float | None = None,
        transport: httpx.BaseTransport | None = None,
        credential_settings: tuple[str, ...] = (),
        max_body_bytes: int = MAX_BODY_BYTES,
        deadline_seconds: float = DEADLINE_SECONDS,
    ) -> None:
        self.name = name
        self.limiter = limiter
        self.ctx = ctx
        self._auth_headers = auth_headers
        self._on_unauthorized = on_unauthorized
        self.quick_retries = quick_retries
        self.max_quota_wait = MAX_QUOTA_WAIT_SECONDS if max_quota_wait is None else max_quota_wait
        self.credential_settings = credential_settings
        self.max_body_bytes = max_body_bytes
        self.deadline_seconds = deadline_seconds
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        subscription: AttemptSubject | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: Priority = Priority.HIGH,
        idempotent: bool = True,
        use_auth: bool = True,
        tries: int | None = None,
        reads_only: bool = False,
        refusal: RefusalReader | None = None,
    ) -> HttpResult:
        """Send with quick retries (`tries` attempts in all; default `quick_retries`); returns
        the last result. `refusal` reads an answer (2xx or 4xx) for the partner's own refusal,
        recorded as the attempt's outcome `refused` with its code and message. Raises
        `CredentialsRefused` when the partner still refuses us after a fresh token,
        `PartnerUnreachable` when no attempt reached it, `QuotaWaitTooLong` when the quota is
        spent for longer than we wait."""
        call = _Call(
            operation,
            method,
            path,
            subscription,
            json_body,
            form,
            headers,
            priority,
            use_auth,
            write=not idempotent,
            refusal=refusal,
        )
        if self.ctx.before_change is not None and changes_partner(method, reads_only=reads_only):
            # the shadow gate: raises WriteWithheld before anything leaves or is spent
            self.ctx.before_change(
                operation,
                subscription,
                {
                    "method": method,
                    "url": f"{self.name}{_mask_path(path)}",
                    "body": json_body or form,
                },
            )
        result = with_quick_retries(
            lambda: self._send_once(call),
            tries=tries or self.quick_retries,
            write=call.write,
            on_unauthorized=self._on_unauthorized if call.use_auth else None,
        )
        self._stop_the_batch_on(result)
        return result

    def _stop_the_batch_on(self, result: HttpResult) -> None:
        """Raise when the last result says no call to this partner can succeed now."""
        if result.outcome is HttpOutcome.UNAUTHORIZED:
            raise CredentialsRefused(
                f"{self.name} refused our credentials ({result.describe()})",
                partner=self.name,
                settings=self.credential_settings,
            )
        if result.outcome is HttpOutcome.CONNECTION_ERROR:
            raise PartnerUnreachable(
                f"{self.name} cannot be reached ({result.describe()}, {self.quick_retries} tries)",
                partner=self.name,
                settings=self.credential_settings,
            )

    def _send_once(self, call: _Call) -> HttpResult:
        """One attempt: the breaker, the quota, the attempt's record, the exchange, its result."""
        subscription = call.subscription
        guard = self.ctx.guard if subscription is not None else None
        if guard is not None:
            guard.before(self.name, subscription)  # type: ignore[arg-type]
        acquired = self.limiter.acquire(call.priority, max_wait=self.max_quota_wait)
        if acquired.waited > 0.01:
            self.ctx.count("quota_wait_seconds", acquired.waited)
            self.ctx.count("quota_waits")
        try:
            all_headers = {"Accept-Encoding": ACCEPT_ENCODING, **(call.headers or {})}
            if call.use_auth and self._auth_headers is not None:
                all_headers.update(self._auth_headers())
            if call.write and subscription is not None and self.ctx.before_write is not None:
                self.ctx.before_write(subscription)  # may raise SendCancelled: nothing sent
            attempt_id = self._record_start(call)
        except BaseException:
            self.limiter.finish(acquired.slot, answered_at=None, sent=False)
            raise
        started = time.perf_counter()
        answer = self._exchange(call, all_headers)
        duration_ms = (time.perf_counter() - started) * 1000
        # the quota counts this request from its answer (see db/rate_limit.py)
        self.limiter.finish(
            acquired.slot,
            answered_at=answer.answered_at,
            sent=answer.outcome is not HttpOutcome.CONNECTION_ERROR,
        )
        result = HttpResult(
            call.operation,
            answer.status,
            answer.body,
            answer.outcome,
            duration_ms,
            answer.headers,
            answer.error,
            call.write,
        )
        if call.refusal is not None and answer.outcome in (HttpOutcome.OK, HttpOutcome.HTTP_4XX):
            result.refusal = call.refusal(answer.body)
        if answer.outcome is HttpOutcome.RATE_LIMITED:
            self.limiter.block_for(retry_after_seconds(answer.headers.get("retry-after")))
            self.ctx.count("http_429")
        self.ctx.count("calls")
        self.ctx.count(f"calls_{call.operation}")
        self.ctx.results.append(result)
        self._record_end(attempt_id, result, subscription)
        if guard is not None:
            guard.after(self.name, result, subscription)  # type: ignore[arg-type]
        return result

    def _exchange(self, call: _Call, headers: dict[str, str]) -> _Answer:
        """Send the request and read its answer, bounded in size and time; what a failure
        proves about whether it left decides its outcome."""
        try:
            request = self._http.build_request(
                call.method, call.path, json=call.json_body, data=call.form, headers=headers
            )
            deadline = time.monotonic() + self.deadline_seconds
            limit_reads(request, deadline)
            response = self._http.send(request, stream=True)
            try:
                raw, cut = read_bounded(response, request, self.max_body_bytes, deadline)
            finally:
                response.close()
            # only an answer read to its end (or cut by us) has a status, as before streaming
            answered_at = time.monotonic()
            body, outcome, error = classify(response, raw, cut)
            return _Answer(
                outcome, response.status_code, body, response.headers, error, answered_at
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # raised before a byte of the request is written: provably not sent
            return _Answer(HttpOutcome.CONNECTION_ERROR, error=type(exc).__name__)
        except httpx.TimeoutException as exc:  # read or write timeout: it may have arrived
            return _Answer(HttpOutcome.TIMEOUT, error=type(exc).__name__)
        except httpx.HTTPError as exc:  # closed, reset, cut short, garbled: it may have arrived
            error = f"{type(exc).__name__}: {mask_text(str(exc))}"[:300]
            return _Answer(HttpOutcome.LOST_ANSWER, error=error)

    def _record_start(self, call: _Call) -> int:
        """Report the attempt before the request leaves (its row says `in_flight`): a process
        killed mid-request still leaves a trace of what it sent."""
        request: dict[str, Any] = {
            "method": call.method,
            "url": f"{self.name}{_mask_path(call.path)}",
        }
        if call.json_body is not None:
            request["body"] = call.json_body
        if call.form is not None:
            request["form"] = dict(call.form)
        return self.ctx.recorder.started(call.operation, call.subscription, request)

    def _record_end(
        self, attempt_id: int, result: HttpResult, subscription: AttemptSubject | None
    ) -> None:
        self.ctx.recorder.finished(attempt_id, result)
        who = f"subscription #{subscription.id}" if subscription is not None else self.name
        status = result.status if result.status is not None else "-"
        self.ctx.log(
            mask_text(
                f"{result.operation} {who}: {status} {result.recorded_outcome} "
                f"in {result.duration_ms:.0f} ms"
                + (f" ({result.recorded_error})" if result.recorded_error else "")
            )
        )


#: methods that never change anything at a partner (RFC 9110's safe methods)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def changes_partner(method: str, *, reads_only: bool = False) -> bool:
    """Whether a request may change something at the partner: every method but the safe ones,
    unless the caller declares a POST that only reads (a search, a token grant). A new
    partner's POST is a change until its adapter says otherwise: the shadow gate fails safe."""
    return not reads_only and method.upper() not in SAFE_METHODS


def _mask_path(path: str) -> str:
    return mask_url_path(path)
