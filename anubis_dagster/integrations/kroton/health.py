"""Kroton's connectivity probes (seed 001's health list): the API with a valid OAuth token, the
Captação API with its e-mail/password token, and the offer catalog. One request each, on the
same quota buckets as the deliveries (`KrotonClient`), so a probe is counted like any call.
"""

from __future__ import annotations

from anubis_dagster.clients.http import HttpOutcome
from anubis_dagster.clients.probes import Level, Probe, ProbeResult, probe_request
from anubis_dagster.integrations.kroton.client import CATALOG_PATH
from anubis_dagster.integrations.kroton.resources import (
    KrotonApiResource,
    KrotonCaptacaoResource,
)
from anubis_dagster.integrations.partner_api import PartnerClients, TokenGrant, read_token

#: counts the open offers without returning any: the cheapest question the catalog answers
CATALOG_PROBE_QUERY = {"size": 0, "query": {"term": {"ativa": True}}}


def probe_api(clients: PartnerClients) -> ProbeResult:
    """A fresh OAuth2 token: proves the API answers and accepts our client credentials."""
    grant = clients.config("kroton_api", KrotonApiResource).token_grant()
    return _token_probe(clients, "kroton_api", "health_token", grant)


def probe_captacao(clients: PartnerClients) -> ProbeResult:
    """A Captação API token (e-mail/password login)."""
    grant = clients.config("kroton_captacao", KrotonCaptacaoResource).token_grant()
    return _token_probe(clients, "kroton_captacao", "health_captacao_token", grant)


def probe_catalog(clients: PartnerClients) -> ProbeResult:
    """A search that counts the open offers: proves the catalog answers our API key, and warns
    when it has no offer to sync a student to."""
    probe, result = probe_request(
        clients["kroton_catalog"],
        "health_catalog",
        "POST",
        CATALOG_PATH,
        json_body=CATALOG_PROBE_QUERY,
        reads_only=True,
    )
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


def _token_probe(
    clients: PartnerClients, key: str, operation: str, grant: TokenGrant
) -> ProbeResult:
    """One token request, outside the token cache; a 2xx without a token is a failure too."""
    client = clients[key]
    probe, result = probe_request(client, operation, **grant.call())
    if result is None or probe.level is not Level.OK:
        return probe
    token, lifetime = read_token(result.body, grant)
    if token is None or result.outcome is not HttpOutcome.OK:
        return ProbeResult(
            Level.ERROR,
            f"{probe.summary}, but gave no token (check {', '.join(client.credential_settings)})",
            probe.metadata,
        )
    metadata = dict(probe.metadata)
    if lifetime is not None:
        metadata["token_lifetime_s"] = lifetime
    return ProbeResult(Level.OK, f"{probe.summary}: token issued", metadata)


PROBES = (
    Probe(
        "kroton_api",
        "Kroton API reachable and our OAuth2 client credentials accepted: one token request "
        "(POST /oauth2/token; API_KROTON_BASE_URL, API_KROTON_CLIENT_ID, API_KROTON_SECRET, "
        "API_KROTON_SUBSCRIPTION).",
        probe_api,
        api="kroton_api",
    ),
    Probe(
        "kroton_captacao_api",
        "Kroton Captação API reachable and our e-mail/password accepted: one login "
        "(API_KROTON_BASE_URL_CAPTACAO, API_KROTON_EMAIL, API_KROTON_PASSWORD; passes as "
        "'not configured' while none is set).",
        probe_captacao,
        api="kroton_captacao",
    ),
    Probe(
        "kroton_catalog",
        "Kroton offer catalog (Elasticsearch middleware) reachable, our API key accepted and "
        "at least one open offer: one search that counts them (CATALOG_KROTON_BASE_URL, "
        "CATALOG_KROTON_API_KEY).",
        probe_catalog,
        api="kroton_catalog",
    ),
)
