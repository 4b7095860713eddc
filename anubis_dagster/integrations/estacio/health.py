"""Estácio's connectivity probes: the registration API and OneTrust's consent API.

Neither API offers a harmless read of its own, so each probe asks a question that changes
nothing and spends little: the Estácio API's credentials are proven on its CEP lookup (same
host and headers by default, and a quota of its own, not the 40 registrations an hour), and
OneTrust's by a consent request with an empty body, which it refuses as invalid after accepting
our credentials: no consent is recorded.
"""

from __future__ import annotations

from anubis_dagster.clients.http import HttpOutcome
from anubis_dagster.clients.probes import Probe, ProbeResult, probe_request
from anubis_dagster.integrations.estacio.client import CEP_PATH, CONSENT_PATH
from anubis_dagster.integrations.partner_api import PartnerClients

#: a CEP that exists (Avenida Paulista, São Paulo); a 404 for it still proves the API answers
#: and accepted our headers
PROBE_CEP = "01310100"
#: a refusal of the request itself (not of us): what an empty or unknown question gets
ANSWERED = (HttpOutcome.OK, HttpOutcome.HTTP_4XX)


def probe_api(clients: PartnerClients) -> ProbeResult:
    """One CEP lookup with Estácio's `x-canal`/`x-api-key` headers."""
    path = CEP_PATH.format(cep=PROBE_CEP)
    client = clients["estacio_cep"]
    return probe_request(client, "health_estacio", "GET", path, accept=ANSWERED)[0]


def probe_onetrust(clients: PartnerClients) -> ProbeResult:
    """One empty consent request: refused as invalid (HTTP 4xx) once our client id and secret
    are accepted; 401/403 when they are not."""
    client = clients["estacio_onetrust"]
    return probe_request(
        client, "health_onetrust", "POST", CONSENT_PATH, json_body={}, accept=ANSWERED
    )[0]


PROBES = (
    Probe(
        "estacio_api",
        "Estácio API reachable and our x-canal/x-api-key accepted: one CEP lookup with those "
        "headers (API_ESTACIO_NEW_BASE_URL, API_ESTACIO_CLIENT_ID, API_ESTACIO_NEW_TOKEN).",
        probe_api,
        api="estacio_cep",
    ),
    Probe(
        "onetrust_api",
        "OneTrust consent API reachable and our client id/secret accepted: one empty consent "
        "request, refused as invalid without recording anything (API_ONETRUST_BASE_URL, "
        "API_ONETRUST_CLIENT_ID, API_ONETRUST_CLIENT_SECRET).",
        probe_onetrust,
        api="estacio_onetrust",
    ),
)
