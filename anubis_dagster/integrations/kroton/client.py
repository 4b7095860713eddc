"""Kroton's HTTP endpoints (reference §2) over the shared `ApiClient`.

Two quotas: the API (token calls included) and the catalog. The OAuth token is cached in
`integration_tokens` for every process and renewed on expiry or on a 401 (`resources.py`).
"""

from __future__ import annotations

from anubis_dagster.clients.http import HttpResult
from anubis_dagster.clients.quota import Priority
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.kroton.mapping import registration_refusal
from anubis_dagster.integrations.partner_api import PartnerClients, send_registration

REGISTER_PATH = "/ms/inscricao/v4/captacao/inscricao"
CPF_PATH = "/ms/inscricao/v4/captacao/inscricao/cpf/{cpf}"
CPF_CQRS_PATH = "/ms/inscricaocqrs/captacao/v5/inscricao/cpf/{cpf}"
INSCRIPTION_PATH = "/ms/inscricao/v4/captacao/inscricao/{inscricao}/sistema/{sistema}"
CATALOG_PATH = "/elasticlayer/middleware/oferta/_search"


class KrotonClient:
    """Kroton's endpoints over the run's ready clients of its API and its catalog (built on
    first use, with their quotas and the OAuth token cache, by `resources.py`)."""

    def __init__(self, clients: PartnerClients) -> None:
        self._clients = clients

    # --- endpoints ----------------------------------------------------------------------------
    def search_offers(self, query: dict, subscription: Subscription) -> HttpResult:
        return self._clients["kroton_catalog"].request(
            "catalog_search",
            "POST",
            CATALOG_PATH,
            subscription=subscription,
            json_body=query,
            reads_only=True,  # an Elasticsearch search: a read, allowed in a shadow run
        )

    def register(self, body: dict, subscription: Subscription) -> HttpResult:
        return send_registration(
            self._clients["kroton_api"],
            REGISTER_PATH,
            body,
            subscription,
            refusal=registration_refusal,
        )

    def inscriptions_by_cpf(
        self, cpf: str, subscription: Subscription, *, priority: Priority, cqrs: bool = False
    ) -> HttpResult:
        path = (CPF_CQRS_PATH if cqrs else CPF_PATH).format(cpf=cpf)
        operation = "check_cpf" if priority is Priority.LOW else "find_by_cpf"
        return self._clients["kroton_api"].request(
            operation, "GET", path, subscription=subscription, priority=priority
        )

    def inscription(self, inscricao: str, sistema: str, subscription: Subscription) -> HttpResult:
        path = INSCRIPTION_PATH.format(inscricao=inscricao, sistema=sistema)
        return self._clients["kroton_api"].request(
            "check_inscription", "GET", path, subscription=subscription, priority=Priority.LOW
        )

    # --- circuit breaker probes (issue 21): one try each, reads only ---------------------------
    def probe_by_cpf(self, cpf: str, subscription: Subscription) -> HttpResult:
        return self._clients["kroton_api"].request(
            "breaker_probe",
            "GET",
            CPF_PATH.format(cpf=cpf),
            subscription=subscription,
            priority=Priority.LOW,
            tries=1,
        )

    def probe_catalog(self, query: dict, subscription: Subscription) -> HttpResult:
        return self._clients["kroton_catalog"].request(
            "breaker_probe",
            "POST",
            CATALOG_PATH,
            subscription=subscription,
            json_body=query,
            priority=Priority.LOW,
            tries=1,
        )
