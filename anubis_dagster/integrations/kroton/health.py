"""Kroton's connectivity probes (seed 001's health list): the API with a valid OAuth token, the
Captação API with its e-mail/password token, and the offer catalog. One request each, on the
same quota buckets as the deliveries (`KrotonClient`), so a probe is counted like any call.
"""

from __future__ import annotations

from typing import Any

from anubis_dagster.clients.http import ApiClient, CallContext, HttpOutcome
from anubis_dagster.clients.probes import Level, Probe, ProbeResult, missing, probe_request
from anubis_dagster.integrations.kroton.client import (
    API_CREDENTIALS,
    CAPTACAO_CREDENTIALS,
    CAPTACAO_LOGIN_PATH,
    CATALOG_CREDENTIALS,
    CATALOG_PATH,
    api_bucket,
    captacao_bucket,
    catalog_bucket,
)
from anubis_dagster.integrations.kroton.resources import KrotonApiResource, KrotonCatalogResource

#: counts the open offers without returning any: the cheapest question the catalog answers
CATALOG_PROBE_QUERY = {"size": 0, "query": {"term": {"ativa": True}}}


def probe_api(resources: Any, ctx: CallContext, key: str) -> ProbeResult:
    """A fresh OAuth2 token: proves the API answers and accepts our client credentials."""
    api: KrotonApiResource = resources.kroton_api
    unset = missing(
        {
            "API_KROTON_BASE_URL": api.base_url,
            "API_KROTON_CLIENT_ID": api.client_id,
            "API_KROTON_SECRET": api.secret,
            "API_KROTON_SUBSCRIPTION": api.subscription,
        }
    )
    if unset:
        return unset
    client = ApiClient.for_partner(
        name="kroton",
        base_url=str(api.base_url),
        ctx=ctx,
        bucket=api_bucket(key),
        quota=api.rate_limit,
        quota_setting="API_KROTON_RATE_LIMIT",
        timeout_seconds=api.timeout_seconds,
    )
    settings = ("API_KROTON_BASE_URL", *API_CREDENTIALS)
    try:
        probe, result = probe_request(
            client,
            "health_token",
            "POST",
            "/oauth2/token",
            form={
                "grant_type": "client_credentials",
                "client_id": str(api.client_id),
                "client_secret": str(api.secret),
                "scope": str(api.subscription),
            },
            use_auth=False,
            settings=settings,
        )
    finally:
        client.close()
    return _token_answer(probe, result, "access_token", "expires_in", settings)


def probe_captacao(resources: Any, ctx: CallContext, key: str) -> ProbeResult:
    """A Captação API token (e-mail/password login). No flow uses this API yet: when none of
    its variables is set there is nothing to check, and the check says so."""
    api: KrotonApiResource = resources.kroton_api
    values = {
        "API_KROTON_BASE_URL_CAPTACAO": api.base_url_captacao,
        "API_KROTON_EMAIL": api.email,
        "API_KROTON_PASSWORD": api.password,
    }
    if not any(values.values()):
        return ProbeResult(
            Level.OK,
            "not configured (no flow uses the Captação API yet): set "
            f"{', '.join(values)} to check it",
            {"probed": False},
        )
    unset = missing(values)
    if unset:
        return unset
    client = ApiClient.for_partner(
        name="kroton-captacao",
        base_url=str(api.base_url_captacao),
        ctx=ctx,
        bucket=captacao_bucket(key),
        # assumption: no quota is documented for the Captação API; the API's is kept
        quota=api.rate_limit,
        quota_setting="API_KROTON_RATE_LIMIT",
        timeout_seconds=api.timeout_seconds,
    )
    try:
        probe, result = probe_request(
            client,
            "health_captacao_token",
            "POST",
            CAPTACAO_LOGIN_PATH,
            json_body={"email": str(api.email), "password": str(api.password)},
            use_auth=False,
            settings=CAPTACAO_CREDENTIALS,
        )
    finally:
        client.close()
    return _token_answer(probe, result, "token", "expiresIn", CAPTACAO_CREDENTIALS)


def probe_catalog(resources: Any, ctx: CallContext, key: str) -> ProbeResult:
    """A search that counts the open offers: proves the catalog answers our API key, and warns
    when it has no offer to sync a student to."""
    catalog: KrotonCatalogResource = resources.kroton_catalog
    unset = missing(
        {"CATALOG_KROTON_BASE_URL": catalog.base_url, "CATALOG_KROTON_API_KEY": catalog.api_key}
    )
    if unset:
        return unset
    client = ApiClient.for_partner(
        name="kroton-catalog",
        base_url=str(catalog.base_url),
        ctx=ctx,
        bucket=catalog_bucket(key),
        quota=catalog.rate_limit,
        quota_setting="CATALOG_KROTON_RATE_LIMIT",
        timeout_seconds=catalog.timeout_seconds,
        auth_headers=lambda: {"Authorization": f"apiKey {catalog.api_key or ''}"},
    )
    try:
        probe, result = probe_request(
            client,
            "health_catalog",
            "POST",
            CATALOG_PATH,
            json_body=CATALOG_PROBE_QUERY,
            settings=CATALOG_CREDENTIALS,
        )
    finally:
        client.close()
    if result is None or probe.level is not Level.OK:
        return probe
    hits = result.body.get("hits") if isinstance(result.body, dict) else None
    total = hits.get("total") if isinstance(hits, dict) else None
    count = total.get("value") if isinstance(total, dict) else total
    if not isinstance(count, int):
        return ProbeResult(Level.ERROR, f"{probe.summary}, but not a search answer (no hits)")
    metadata = {**probe.metadata, "open_offers": count}
    if count == 0:
        return ProbeResult(
            Level.WARN, f"{probe.summary}, but lists no open offer: no student can sync", metadata
        )
    return ProbeResult(Level.OK, f"{probe.summary}: {count} open offers", metadata)


def _token_answer(
    probe: ProbeResult,
    result: Any,
    token_field: str,
    lifetime_field: str,
    settings: tuple[str, ...],
) -> ProbeResult:
    """A token answer must carry a token: a 2xx without one is a failure too."""
    if result is None or probe.level is not Level.OK:
        return probe
    body = result.body if isinstance(result.body, dict) else {}
    token, lifetime = body.get(token_field), body.get(lifetime_field)
    if not isinstance(token, str) or not token or result.outcome is not HttpOutcome.OK:
        return ProbeResult(
            Level.ERROR,
            f"{probe.summary}, but gave no token (check {', '.join(settings)})",
            probe.metadata,
        )
    metadata = dict(probe.metadata)
    if isinstance(lifetime, int | float):
        metadata["token_lifetime_s"] = float(lifetime)
    return ProbeResult(Level.OK, f"{probe.summary}: token issued", metadata)


PROBES = (
    Probe(
        "kroton_api",
        "Kroton API reachable and our OAuth2 client credentials accepted: one token request "
        "(POST /oauth2/token; API_KROTON_BASE_URL, API_KROTON_CLIENT_ID, API_KROTON_SECRET, "
        "API_KROTON_SUBSCRIPTION).",
        probe_api,
    ),
    Probe(
        "kroton_captacao_api",
        "Kroton Captação API reachable and our e-mail/password accepted: one login "
        "(API_KROTON_BASE_URL_CAPTACAO, API_KROTON_EMAIL, API_KROTON_PASSWORD; passes as "
        "'not configured' while none is set).",
        probe_captacao,
    ),
    Probe(
        "kroton_catalog",
        "Kroton offer catalog (Elasticsearch middleware) reachable, our API key accepted and "
        "at least one open offer: one search that counts them (CATALOG_KROTON_BASE_URL, "
        "CATALOG_KROTON_API_KEY).",
        probe_catalog,
    ),
)
