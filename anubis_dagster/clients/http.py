"""One HTTP call to a partner, done the same way for every IES.

Each attempt: wait for the shared quota, write exactly one `subscription_events` attempt row
(masked request, run id; outcome `in_flight`) in its own transaction, send with explicit
timeouts, complete the row (outcome, HTTP status, duration, masked response) and write one
masked line in the run log. Then decide:

- 2xx with a JSON body, or a 4xx: a definite answer, returned to the adapter;
- 401 with token auth: drop the token and try once more with a new one;
- 429: block the bucket for `Retry-After` (every process waits) and retry;
- connection refused / connect timeout: nothing reached the partner, retry;
- read timeout, 5xx, or a 2xx that is not JSON: retried only for calls that are safe to repeat
  (`idempotent=True`); for a registration the outcome is unknown and goes back to the caller,
  which asks the partner before sending again.

At most `quick_retries` attempts per call (tenacity); after that the last result is returned
with `transient=True` and the persisted retry schedule takes over.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
)

from anubis_dagster.clients.rate_limit import Priority, Quota, RateLimiter, retry_after_seconds
from anubis_dagster.core.masking import mask_text, mask_url_path
from anubis_dagster.db.models import Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster.db.transitions import finish_attempt, record_attempt

MAX_STORED_TEXT = 2000
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=20.0, write=10.0, pool=5.0)


@dataclass
class CallContext:
    """Who is calling: where attempt rows go and which run they belong to."""

    db_url: str
    integration_id: int | None
    run_id: str | None = None
    log: Callable[[str], None] = field(default=logging.getLogger("anubis.http").info)
    stats: dict[str, float] = field(default_factory=dict)  # calls, quota waits… for metadata

    def count(self, key: str, amount: float = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + amount


@dataclass
class HttpResult:
    operation: str
    status: int | None
    body: Any
    outcome: str  # ok, http_4xx, http_5xx, rate_limited, unauthorized, timeout, …
    duration_ms: float
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    delivered: bool = True  # False when the request certainly never reached the partner

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def transient(self) -> bool:
        """A failure worth trying again later (the partner's side, not our data)."""
        return self.outcome in {
            "http_5xx",
            "rate_limited",
            "timeout",
            "connection_error",
            "malformed",
            "unauthorized",
        }

    @property
    def unknown_outcome(self) -> bool:
        """The partner may have acted on the request although we got no usable answer."""
        return self.delivered and self.outcome in {"http_5xx", "timeout", "malformed"}

    def describe(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else self.outcome
        return f"{self.operation}: {where}" + (f" ({self.error})" if self.error else "")


class ApiClient:
    """HTTP to one partner API (one base URL, one quota)."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        limiter: RateLimiter,
        ctx: CallContext,
        auth_headers: Callable[[], dict[str, str]] | None = None,
        on_unauthorized: Callable[[], None] | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        quick_retries: int = 3,
        max_quota_wait: float = 900,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.limiter = limiter
        self.ctx = ctx
        self._auth_headers = auth_headers
        self._on_unauthorized = on_unauthorized
        self.quick_retries = quick_retries
        self.max_quota_wait = max_quota_wait
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )

    @classmethod
    def for_partner(
        cls,
        *,
        name: str,
        base_url: str,
        ctx: CallContext,
        bucket: str,
        quota: str,
        quota_setting: str,
        timeout_seconds: float,
        **options: Any,
    ) -> ApiClient:
        """The usual construction: a quota read from `quota` ("REQUESTS/SECONDS"; a bad value
        is reported under the setting's name) and a read timeout, connect timeout 5 s."""
        return cls(
            name=name,
            base_url=base_url,
            limiter=RateLimiter(ctx.db_url, bucket, Quota.parse(quota, name=quota_setting)),
            ctx=ctx,
            timeout=httpx.Timeout(timeout_seconds, connect=5.0),
            **options,
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        subscription: Subscription | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: Priority = Priority.HIGH,
        idempotent: bool = True,
        use_auth: bool = True,
    ) -> HttpResult:
        # a 401 is retried once, right after dropping the token; a second 401 is an answer
        auth = {"refreshed": False, "retry_now": False}

        def attempt() -> HttpResult:
            result = self._send_once(
                operation,
                method,
                path,
                subscription,
                json_body,
                form,
                headers,
                priority,
                use_auth,
            )
            auth["retry_now"] = False
            if result.outcome == "unauthorized" and self._on_unauthorized and not auth["refreshed"]:
                auth["refreshed"] = auth["retry_now"] = True
                self._on_unauthorized()
            return result

        def should_retry(result: HttpResult) -> bool:
            if result.outcome in ("rate_limited", "connection_error"):
                return True
            if result.outcome == "unauthorized":
                return auth["retry_now"]
            return idempotent and result.outcome in ("http_5xx", "timeout", "malformed")

        def wait(state: RetryCallState) -> float:
            result = state.outcome.result() if state.outcome else None
            if result is not None and result.outcome == "rate_limited":
                return 0.0  # the limiter itself waits out the block
            if result is not None and result.outcome == "unauthorized":
                return 0.0
            return min(4.0, 0.5 * 2 ** (state.attempt_number - 1))

        retrying = Retrying(
            stop=stop_after_attempt(self.quick_retries),
            wait=wait,
            retry=retry_if_result(should_retry),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
            reraise=True,
        )
        return retrying(attempt)

    def _send_once(
        self,
        operation: str,
        method: str,
        path: str,
        subscription: Subscription | None,
        json_body: Any,
        form: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        priority: Priority,
        use_auth: bool,
    ) -> HttpResult:
        acquired = self.limiter.acquire(priority, max_wait=self.max_quota_wait)
        if acquired.waited > 0.01:
            self.ctx.count("quota_wait_seconds", acquired.waited)
            self.ctx.count("quota_waits")
        all_headers = dict(headers or {})
        if use_auth and self._auth_headers is not None:
            all_headers.update(self._auth_headers())
        attempt_id = self._record_start(operation, subscription, method, path, json_body, form)
        started = time.perf_counter()
        status: int | None = None
        body: Any = None
        response_headers: Mapping[str, str] = {}
        error: str | None = None
        delivered = True
        try:
            response = self._http.request(
                method, path, json=json_body, data=form, headers=all_headers
            )
            status = response.status_code
            response_headers = response.headers
            body, outcome, error = _classify(response)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            outcome, error, delivered = "connection_error", type(exc).__name__, False
        except httpx.TimeoutException as exc:
            outcome, error = "timeout", type(exc).__name__
        except httpx.HTTPError as exc:
            outcome, error = "transport_error", f"{type(exc).__name__}: {mask_text(str(exc))}"
        duration_ms = (time.perf_counter() - started) * 1000
        result = HttpResult(
            operation, status, body, outcome, duration_ms, response_headers, error, delivered
        )
        if outcome == "rate_limited":
            self.limiter.block_for(retry_after_seconds(response_headers.get("retry-after")))
            self.ctx.count("http_429")
        self.ctx.count("calls")
        self.ctx.count(f"calls_{operation}")
        self._record_end(attempt_id, result, subscription)
        return result

    def _record_start(
        self,
        operation: str,
        subscription: Subscription | None,
        method: str,
        path: str,
        json_body: Any,
        form: Mapping[str, str] | None,
    ) -> int:
        """Write the attempt row before the request leaves (outcome `in_flight`): a process
        killed mid-request still leaves a trace of what it sent."""
        request: dict[str, Any] = {"method": method, "url": f"{self.name}{_mask_path(path)}"}
        if json_body is not None:
            request["body"] = json_body
        if form is not None:
            request["form"] = dict(form)
        with session_scope(self.ctx.db_url) as session:
            event = record_attempt(
                session,
                subscription=subscription,
                integration_id=self.ctx.integration_id,
                operation=operation,
                outcome="in_flight",
                run_id=self.ctx.run_id,
                request=request,
            )
            session.flush()
            return event.id

    def _record_end(
        self, attempt_id: int, result: HttpResult, subscription: Subscription | None
    ) -> None:
        with session_scope(self.ctx.db_url) as session:
            finish_attempt(
                session,
                attempt_id,
                outcome=result.outcome,
                http_status=result.status,
                duration_ms=round(result.duration_ms, 1),
                response=_stored_body(result.body),
                error=result.error,
            )
        who = f"subscription #{subscription.id}" if subscription is not None else self.name
        status = result.status if result.status is not None else "-"
        self.ctx.log(
            mask_text(
                f"{result.operation} {who}: {status} {result.outcome} "
                f"in {result.duration_ms:.0f} ms" + (f" ({result.error})" if result.error else "")
            )
        )


def _classify(response: httpx.Response) -> tuple[Any, str, str | None]:
    """(parsed body, outcome, error) of a response that arrived."""
    status = response.status_code
    text = response.text
    try:
        body: Any = json.loads(text) if text.strip() else None
        parsed = True
    except ValueError:
        body, parsed = text[:MAX_STORED_TEXT], False
    if status == 429:
        return body, "rate_limited", "partner quota exceeded"
    if status == 401 or status == 403:
        return body, "unauthorized", f"HTTP {status}"
    if status >= 500:
        return body, "http_5xx", f"HTTP {status}"
    if status >= 400:
        return body, "http_4xx", None
    if not parsed or (body is None and status != 204):
        return body, "malformed", "answer is not JSON"
    return body, "ok", None


def _stored_body(body: Any) -> Any:
    if isinstance(body, str):
        return {"text": body[:MAX_STORED_TEXT]}
    return body


def _mask_path(path: str) -> str:
    return mask_url_path(path)
