"""Connectivity probes: one request to a partner API that proves it answers and accepts us.

The health assets run them every few minutes, so each probe spends at most one request of the
partner's quota, through the shared limiter, at low priority (a registration waiting for the
quota goes first) and without quick retries: a probe measures, it does not insist. The request
is recorded like any other (one `subscription_events` attempt row, one masked log line), so
attempt rows and the requests a partner received still match one for one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from anubis_dagster.clients.errors import CredentialsRefused, PartnerUnreachable
from anubis_dagster.clients.http import ApiClient, HttpOutcome, HttpResult
from anubis_dagster.clients.quota import Priority, QuotaWaitTooLong
from anubis_dagster.core.masking import mask_text

#: longest wait for a quota slot: a health run must not sit behind a busy partner's quota
PROBE_QUOTA_WAIT_SECONDS = 10.0


class Level(StrEnum):
    """A check's result: `ok` passes; `warn` and `error` fail with that severity."""

    OK = "ok"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True)
class ProbeResult:
    level: Level
    summary: str  # what was measured, masked; names the settings to check when it failed
    metadata: Mapping[str, Any] = field(default_factory=dict)


#: (the integration's ready clients, `integrations.partner_api.PartnerClients`) → result
ProbeRun = Callable[[Any], ProbeResult]


@dataclass(frozen=True)
class Probe:
    """One connectivity check of an integration, declared by its adapter (`health_probes`).
    The health asset runs it only when the API's variables are set (else the check says which
    are not)."""

    name: str  # the asset check's name, stable: e.g. `kroton_api`
    description: str  # what it proves and how, for the UI (the integration is prefixed)
    run: ProbeRun
    api: str = field(kw_only=True)  # the resource key of the API it sends its request to


def probe_request(
    client: ApiClient,
    operation: str,
    method: str,
    path: str,
    *,
    accept: Collection[HttpOutcome] = (HttpOutcome.OK,),
    settings: tuple[str, ...] = (),
    **options: Any,
) -> tuple[ProbeResult, HttpResult | None]:
    """Send one request as a probe: `accept` lists the outcomes that prove the API answers and
    accepts our credentials (e.g. a 4xx to a deliberately empty body). Never raises for the
    partner's behaviour; the result says what happened and which settings to check (default:
    the client's credential settings)."""
    name = client.name
    settings = settings or client.credential_settings
    check = f" (check {', '.join(settings)})" if settings else ""
    client.max_quota_wait = PROBE_QUOTA_WAIT_SECONDS
    try:
        result = client.request(operation, method, path, priority=Priority.LOW, tries=1, **options)
    except CredentialsRefused as exc:  # its message names the call and the HTTP status
        return ProbeResult(Level.ERROR, mask_text(f"{exc}{check}")), None
    except PartnerUnreachable:
        reason = "no connection (refused, DNS or connect timeout)"
        return ProbeResult(Level.ERROR, f"{name} cannot be reached: {reason}{check}"), None
    except QuotaWaitTooLong:
        return (
            ProbeResult(
                Level.WARN,
                f"{name} not probed: its quota is in use by deliveries for longer than "
                f"{PROBE_QUOTA_WAIT_SECONDS:.0f} s (try again later)",
            ),
            None,
        )
    metadata = {"http_status": result.status or 0, "duration_ms": round(result.duration_ms)}
    if result.outcome in accept:
        summary = f"{name} answered {result.describe()} in {result.duration_ms:.0f} ms"
        return ProbeResult(Level.OK, summary, metadata), result
    detail = _error_detail(result.body)
    summary = f"{name} did not answer as expected: {result.describe()}{detail}{check}"
    return ProbeResult(Level.ERROR, mask_text(summary), metadata), result


def _error_detail(body: Any) -> str:
    """The partner's own words, short (its error code and message, when it sent any)."""
    if isinstance(body, dict):
        keys = ("error", "codigo", "code", "message", "mensagem")
        words = [str(body[k]) for k in keys if k in body]
        if words:
            return ": " + " ".join(words)[:200]
    return ""
