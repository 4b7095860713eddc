"""Estácio's connectivity probes: the registration API and OneTrust's consent API.

Neither API offers a harmless read of its own, so each probe asks a question that changes
nothing and spends little: the Estácio API's credentials are proven on its CEP lookup (same
host and headers by default, and a quota of its own, not the 40 registrations an hour), and
OneTrust's by a consent request with an empty body, which it refuses as invalid after accepting
our credentials: no consent is recorded.
"""

from __future__ import annotations

from typing import Any

from anubis_dagster.clients.http import ApiClient, CallContext, HttpOutcome
from anubis_dagster.clients.probes import Probe, ProbeResult, missing, probe_request
from anubis_dagster.integrations.estacio.client import CEP_PATH, CONSENT_PATH
from anubis_dagster.integrations.estacio.resources import (
    CEP_RATE_ENV,
    ONETRUST_RATE_ENV,
    EstacioApiResource,
    EstacioCepResource,
    OneTrustResource,
)

#: a CEP that exists (Avenida Paulista, São Paulo); a 404 for it still proves the API answers
#: and accepted our headers
PROBE_CEP = "01310100"
#: a refusal of the request itself (not of us): what an empty or unknown question gets
ANSWERED = (HttpOutcome.OK, HttpOutcome.HTTP_4XX)
ONETRUST_SETTINGS = (
    "API_ONETRUST_BASE_URL",
    "API_ONETRUST_CLIENT_ID",
    "API_ONETRUST_CLIENT_SECRET",
)


def probe_api(resources: Any, ctx: CallContext, key: str) -> ProbeResult:
    """One CEP lookup with Estácio's `x-canal`/`x-api-key` headers."""
    api: EstacioApiResource = resources.estacio_api
    cep: EstacioCepResource = resources.estacio_cep
    unset = missing(
        {
            "API_ESTACIO_NEW_BASE_URL": api.base_url,
            "API_ESTACIO_CLIENT_ID": api.client_id,
            "API_ESTACIO_NEW_TOKEN": api.token,
        }
    )
    if unset:
        return unset
    headers = {"x-canal": str(api.client_id), "x-api-key": str(api.token)}
    client = ApiClient.for_partner(
        name="estacio",
        base_url=str(cep.base_url or api.base_url),
        ctx=ctx,
        bucket=f"{key}:cep",  # the CEP lookup's quota (EstacioClient's bucket)
        quota=cep.rate_limit,
        quota_setting=CEP_RATE_ENV,
        timeout_seconds=cep.timeout_seconds,
        auth_headers=lambda: dict(headers),
    )
    try:
        probe, _ = probe_request(
            client,
            "health_estacio",
            "GET",
            CEP_PATH.format(cep=PROBE_CEP),
            accept=ANSWERED,
            settings=("API_ESTACIO_NEW_BASE_URL", "API_ESTACIO_CLIENT_ID", "API_ESTACIO_NEW_TOKEN"),
        )
    finally:
        client.close()
    return probe


def probe_onetrust(resources: Any, ctx: CallContext, key: str) -> ProbeResult:
    """One empty consent request: refused as invalid (HTTP 4xx) once our client id and secret
    are accepted; 401/403 when they are not."""
    onetrust: OneTrustResource = resources.estacio_onetrust
    unset = missing(
        {
            "API_ONETRUST_BASE_URL": onetrust.base_url,
            "API_ONETRUST_CLIENT_ID": onetrust.client_id,
            "API_ONETRUST_CLIENT_SECRET": onetrust.client_secret,
        }
    )
    if unset:
        return unset
    client = ApiClient.for_partner(
        name="onetrust",
        base_url=str(onetrust.base_url),
        ctx=ctx,
        bucket=f"{key}:onetrust",  # EstacioClient's bucket
        quota=onetrust.rate_limit,
        quota_setting=ONETRUST_RATE_ENV,
        timeout_seconds=onetrust.timeout_seconds,
        auth_headers=lambda: {
            "client_id": str(onetrust.client_id),
            "client_secret": str(onetrust.client_secret),
        },
    )
    try:
        probe, _ = probe_request(
            client,
            "health_onetrust",
            "POST",
            CONSENT_PATH,
            json_body={},
            accept=ANSWERED,
            settings=(
                "API_ONETRUST_BASE_URL",
                "API_ONETRUST_CLIENT_ID",
                "API_ONETRUST_CLIENT_SECRET",
            ),
        )
    finally:
        client.close()
    return probe


PROBES = (
    Probe(
        "estacio_api",
        "Estácio API reachable and our x-canal/x-api-key accepted: one CEP lookup with those "
        "headers (API_ESTACIO_NEW_BASE_URL, API_ESTACIO_CLIENT_ID, API_ESTACIO_NEW_TOKEN).",
        probe_api,
    ),
    Probe(
        "onetrust_api",
        "OneTrust consent API reachable and our client id/secret accepted: one empty consent "
        "request, refused as invalid without recording anything (API_ONETRUST_BASE_URL, "
        "API_ONETRUST_CLIENT_ID, API_ONETRUST_CLIENT_SECRET).",
        probe_onetrust,
    ),
)
