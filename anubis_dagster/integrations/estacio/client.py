"""Estácio's three HTTP endpoints (reference §3) over the ready clients of its APIs.

Three quotas (buckets `<integration>:api`, `:onetrust`, `:cep`), shared by every run and
process through the app database; the clients are built by `resources.py`.
"""

from __future__ import annotations

from typing import Any

from anubis_dagster.clients.http import HttpResult
from anubis_dagster.clients.quota import Priority
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.estacio.mapping import registration_refusal
from anubis_dagster.integrations.partner_api import PartnerClients, send_registration

REGISTER_PATH = "/inscricao"
CONSENT_PATH = "/consentimento"
CEP_PATH = "/cep/{cep}"
#: a CEP that exists (Avenida Paulista, São Paulo): the health and breaker probes' question
PROBE_CEP = "01310100"


class EstacioClient:
    """Estácio's endpoints over the run's ready clients (each built on first use)."""

    def __init__(self, clients: PartnerClients) -> None:
        self._clients = clients

    def register(self, body: dict[str, Any], subscription: Subscription) -> HttpResult:
        return send_registration(
            self._clients["estacio_api"],
            REGISTER_PATH,
            body,
            subscription,
            refusal=registration_refusal,
        )

    def record_consent(self, body: dict[str, Any], subscription: Subscription) -> HttpResult:
        # OneTrust keeps one receipt per CPF: repeating the call is harmless
        return self._clients["estacio_onetrust"].request(
            "consent", "POST", CONSENT_PATH, subscription=subscription, json_body=body
        )

    def lookup_cep(self, cep: str, subscription: Subscription) -> HttpResult:
        return self._clients["estacio_cep"].request(
            "cep_lookup", "GET", CEP_PATH.format(cep=cep), subscription=subscription
        )

    def breaker_probe(self, key: str, subscription: Subscription) -> HttpResult:
        """One request that changes nothing (issue 21): the registration or consent endpoint
        with an empty body, which the partner refuses as invalid (no CPF: nobody registered),
        or a CEP lookup. One try."""
        path = CEP_PATH.format(cep=PROBE_CEP) if key == "estacio_cep" else None
        method = "GET" if path else "POST"
        path = path or (CONSENT_PATH if key == "estacio_onetrust" else REGISTER_PATH)
        return self._clients[key].request(
            "breaker_probe",
            method,
            path,
            subscription=subscription,
            json_body=None if method == "GET" else {},
            priority=Priority.LOW,
            tries=1,
        )
