"""Estácio's three HTTP endpoints (reference §3) over the ready clients of its APIs.

Three quotas (buckets `<integration>:api`, `:onetrust`, `:cep`), shared by every run and
process through the app database; the clients are built by `resources.py`.
"""

from __future__ import annotations

from typing import Any

from anubis_dagster.clients.http import HttpResult
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.partner_api import PartnerClients, send_registration

REGISTER_PATH = "/inscricao"
CONSENT_PATH = "/consentimento"
CEP_PATH = "/cep/{cep}"


class EstacioClient:
    """Estácio's endpoints over the run's ready clients (each built on first use)."""

    def __init__(self, clients: PartnerClients) -> None:
        self._clients = clients

    def register(self, body: dict[str, Any], subscription: Subscription) -> HttpResult:
        return send_registration(self._clients["estacio_api"], REGISTER_PATH, body, subscription)

    def record_consent(self, body: dict[str, Any], subscription: Subscription) -> HttpResult:
        # OneTrust keeps one receipt per CPF: repeating the call is harmless
        return self._clients["estacio_onetrust"].request(
            "consent", "POST", CONSENT_PATH, subscription=subscription, json_body=body
        )

    def lookup_cep(self, cep: str, subscription: Subscription) -> HttpResult:
        return self._clients["estacio_cep"].request(
            "cep_lookup", "GET", CEP_PATH.format(cep=cep), subscription=subscription
        )
