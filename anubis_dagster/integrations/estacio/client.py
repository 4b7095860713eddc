"""Estácio's three HTTP endpoints (reference §3) over the shared `ApiClient`.

Three quotas (buckets `<integration>:api`, `:onetrust`, `:cep`), shared by every run and
process through the app database. No tokens: static headers on every call.
"""

from __future__ import annotations

from typing import Any

import httpx

from anubis_dagster.clients.http import ApiClient, CallContext, HttpResult
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.base import AdapterNotConfigured
from anubis_dagster.integrations.estacio.resources import (
    CEP_RATE_ENV,
    ESTACIO_RATE_ENV,
    ONETRUST_RATE_ENV,
    EstacioApiResource,
    EstacioCepResource,
    OneTrustResource,
)

REGISTER_PATH = "/inscricao"
CONSENT_PATH = "/consentimento"
CEP_PATH = "/cep/{cep}"


class EstacioNotConfigured(AdapterNotConfigured):
    """Settings Estácio needs are not set; the message names the environment variables (the
    run fails at once, without op retries)."""


class EstacioClient:
    def __init__(
        self,
        api: EstacioApiResource,
        onetrust: OneTrustResource,
        cep: EstacioCepResource,
        ctx: CallContext,
        *,
        bucket_prefix: str = "estacio",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        missing = api.missing_settings() + onetrust.missing_settings()
        if missing:
            raise EstacioNotConfigured(
                "Estácio is not configured: set " + ", ".join(missing) + " (see the README)"
            )
        assert api.base_url and onetrust.base_url
        estacio_headers = {"x-canal": str(api.client_id), "x-api-key": str(api.token)}
        self.api = ApiClient.for_partner(
            name="estacio",
            base_url=api.base_url,
            ctx=ctx,
            bucket=f"{bucket_prefix}:api",
            quota=api.rate_limit,
            quota_setting=ESTACIO_RATE_ENV,
            timeout_seconds=api.timeout_seconds,
            auth_headers=lambda: dict(estacio_headers),
            transport=transport,
            credential_settings=(
                "API_ESTACIO_NEW_BASE_URL",
                "API_ESTACIO_CLIENT_ID",
                "API_ESTACIO_NEW_TOKEN",
            ),
        )
        self.onetrust = ApiClient.for_partner(
            name="onetrust",
            base_url=onetrust.base_url,
            ctx=ctx,
            bucket=f"{bucket_prefix}:onetrust",
            quota=onetrust.rate_limit,
            quota_setting=ONETRUST_RATE_ENV,
            timeout_seconds=onetrust.timeout_seconds,
            auth_headers=lambda: {
                "client_id": str(onetrust.client_id),
                "client_secret": str(onetrust.client_secret),
            },
            transport=transport,
            credential_settings=(
                "API_ONETRUST_BASE_URL",
                "API_ONETRUST_CLIENT_ID",
                "API_ONETRUST_CLIENT_SECRET",
            ),
        )
        # assumption: the CEP lookup takes the registration API's headers
        self.cep = ApiClient.for_partner(
            name="estacio-cep",
            base_url=cep.base_url or api.base_url,
            ctx=ctx,
            bucket=f"{bucket_prefix}:cep",
            quota=cep.rate_limit,
            quota_setting=CEP_RATE_ENV,
            timeout_seconds=cep.timeout_seconds,
            auth_headers=lambda: dict(estacio_headers),
            transport=transport,
            credential_settings=("API_ESTACIO_CEP_BASE_URL", "API_ESTACIO_NEW_TOKEN"),
        )

    def close(self) -> None:
        for client in (self.api, self.onetrust, self.cep):
            client.close()

    def register(self, body: dict[str, Any], subscription: Subscription) -> HttpResult:
        # not repeatable in the call: a lost answer goes back to the adapter (unknown outcome)
        return self.api.request(
            "register",
            "POST",
            REGISTER_PATH,
            subscription=subscription,
            json_body=body,
            idempotent=False,
        )

    def record_consent(self, body: dict[str, Any], subscription: Subscription) -> HttpResult:
        # OneTrust keeps one receipt per CPF: repeating the call is harmless
        return self.onetrust.request(
            "consent", "POST", CONSENT_PATH, subscription=subscription, json_body=body
        )

    def lookup_cep(self, cep: str, subscription: Subscription) -> HttpResult:
        return self.cep.request(
            "cep_lookup", "GET", CEP_PATH.format(cep=cep), subscription=subscription
        )
