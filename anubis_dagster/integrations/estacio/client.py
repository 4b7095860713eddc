"""Estácio's three HTTP endpoints (reference §3) over the shared `ApiClient`.

Three quotas (buckets `<integration>:api`, `:onetrust`, `:cep`), shared by every run and
process through the app database. No tokens: static headers on every call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from anubis_dagster.clients.http import ApiClient, CallContext, HttpResult
from anubis_dagster.clients.rate_limit import Quota, RateLimiter
from anubis_dagster.core.masking import mask_value
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
_CEP_IN_PATH = re.compile(r"^/cep/.*$")


class EstacioNotConfigured(AdapterNotConfigured):
    """Settings Estácio needs are not set; the message names the environment variables (the
    run fails at once, without op retries)."""


class _MaskedApiClient(ApiClient):
    """An `ApiClient` whose attempt rows also hide what the shared masker cannot recognise by
    key: the values of OneTrust's `{atributo, valor}` pairs (a name under `valor`) and the
    CEP in the lookup's URL path. What is sent is unchanged; only the stored copy differs."""

    def _record_start(
        self,
        operation: str,
        subscription: Subscription | None,
        method: str,
        path: str,
        json_body: Any,
        form: Mapping[str, str] | None,
    ) -> int:
        return super()._record_start(
            operation,
            subscription,
            method,
            _CEP_IN_PATH.sub("/cep/***", path),
            _mask_attributes(json_body),
            form,
        )


def _mask_attributes(body: Any) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("atributos"), list):
        return body
    masked = []
    for item in body["atributos"]:
        if isinstance(item, dict) and "valor" in item:
            value = item["valor"]
            hidden = mask_value(str(item.get("atributo") or ""), value)
            item = {**item, "valor": hidden if hidden != value or value is None else "***"}
        masked.append(item)
    return {**body, "atributos": masked}


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
        self.api = _MaskedApiClient(
            name="estacio",
            base_url=api.base_url,
            limiter=RateLimiter(
                ctx.db_url,
                f"{bucket_prefix}:api",
                Quota.parse(api.rate_limit, name=ESTACIO_RATE_ENV),
            ),
            ctx=ctx,
            auth_headers=lambda: dict(estacio_headers),
            timeout=httpx.Timeout(api.timeout_seconds, connect=5.0),
            transport=transport,
        )
        self.onetrust = _MaskedApiClient(
            name="onetrust",
            base_url=onetrust.base_url,
            limiter=RateLimiter(
                ctx.db_url,
                f"{bucket_prefix}:onetrust",
                Quota.parse(onetrust.rate_limit, name=ONETRUST_RATE_ENV),
            ),
            ctx=ctx,
            auth_headers=lambda: {
                "client_id": str(onetrust.client_id),
                "client_secret": str(onetrust.client_secret),
            },
            timeout=httpx.Timeout(onetrust.timeout_seconds, connect=5.0),
            transport=transport,
        )
        # assumption: the CEP lookup takes the registration API's headers
        self.cep = _MaskedApiClient(
            name="estacio-cep",
            base_url=cep.base_url or api.base_url,
            limiter=RateLimiter(
                ctx.db_url,
                f"{bucket_prefix}:cep",
                Quota.parse(cep.rate_limit, name=CEP_RATE_ENV),
            ),
            ctx=ctx,
            auth_headers=lambda: dict(estacio_headers),
            timeout=httpx.Timeout(cep.timeout_seconds, connect=5.0),
            transport=transport,
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
