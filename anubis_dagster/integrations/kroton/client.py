"""Kroton's HTTP endpoints (reference §2) over the shared `ApiClient`.

Two quotas: the API (token calls included) and the catalog. The OAuth token is cached in
`integration_tokens` for every process and renewed on expiry or on a 401.
"""

from __future__ import annotations

import httpx

from anubis_dagster.clients.errors import PartnerUnreachable
from anubis_dagster.clients.http import ApiClient, CallContext, HttpResult
from anubis_dagster.clients.rate_limit import Priority
from anubis_dagster.clients.tokens import TokenStore
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.kroton.resources import KrotonApiResource, KrotonCatalogResource

REGISTER_PATH = "/ms/inscricao/v4/captacao/inscricao"
CPF_PATH = "/ms/inscricao/v4/captacao/inscricao/cpf/{cpf}"
CPF_CQRS_PATH = "/ms/inscricaocqrs/captacao/v5/inscricao/cpf/{cpf}"
INSCRIPTION_PATH = "/ms/inscricao/v4/captacao/inscricao/{inscricao}/sistema/{sistema}"
CATALOG_PATH = "/elasticlayer/middleware/oferta/_search"
#: assumption: the Captação API's e-mail/password login (seed 001 gives the variables and the
#: body `{email, password}`, not the path or the answer); it answers `{token, expiresIn}`
CAPTACAO_LOGIN_PATH = "/auth/login"


API_CREDENTIALS = ("API_KROTON_CLIENT_ID", "API_KROTON_SECRET", "API_KROTON_SUBSCRIPTION")
CAPTACAO_CREDENTIALS = ("API_KROTON_BASE_URL_CAPTACAO", "API_KROTON_EMAIL", "API_KROTON_PASSWORD")
CATALOG_CREDENTIALS = ("CATALOG_KROTON_BASE_URL", "CATALOG_KROTON_API_KEY")
#: a failing token endpoint stops the whole batch, so it gets a few more quick tries than a
#: student's call (a 401 is still one call: refused credentials are not retried)
TOKEN_TRIES = 5


def api_bucket(prefix: str) -> str:
    """The quota of Kroton's API (token calls included), shared by every process."""
    return f"{prefix}:api"


def catalog_bucket(prefix: str) -> str:
    return f"{prefix}:catalog"


def captacao_bucket(prefix: str) -> str:
    return f"{prefix}:captacao"


class KrotonClient:
    def __init__(
        self,
        api: KrotonApiResource,
        catalog: KrotonCatalogResource,
        ctx: CallContext,
        *,
        bucket_prefix: str = "kroton",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        assert api.base_url and catalog.base_url, "checked by KrotonAdapter (missing_settings)"
        self._api_settings = api
        self.api = ApiClient.for_partner(
            name="kroton",
            base_url=api.base_url,
            ctx=ctx,
            bucket=api_bucket(bucket_prefix),
            quota=api.rate_limit,
            quota_setting="API_KROTON_RATE_LIMIT",
            timeout_seconds=api.timeout_seconds,
            auth_headers=self._auth_headers,
            on_unauthorized=self._drop_token,
            transport=transport,
            credential_settings=("API_KROTON_BASE_URL", *API_CREDENTIALS),
        )
        self.catalog = ApiClient.for_partner(
            name="kroton-catalog",
            base_url=catalog.base_url,
            ctx=ctx,
            bucket=catalog_bucket(bucket_prefix),
            quota=catalog.rate_limit,
            quota_setting="CATALOG_KROTON_RATE_LIMIT",
            timeout_seconds=catalog.timeout_seconds,
            auth_headers=lambda: {"Authorization": f"apiKey {catalog.api_key or ''}"},
            transport=transport,
            credential_settings=CATALOG_CREDENTIALS,
        )
        self.tokens = TokenStore(ctx.db_url, ctx.integration_id or 0, "oauth2", self._fetch_token)
        self._token: str | None = None

    def close(self) -> None:
        self.api.close()
        self.catalog.close()

    # --- auth ---------------------------------------------------------------------------------
    def _fetch_token(self) -> tuple[str, float]:
        """A new OAuth token. A 401/403 raises `CredentialsRefused` (from the client); a token
        endpoint that keeps failing is Kroton being down for us: `PartnerUnreachable`, so the
        batch stops instead of every student paying for it."""
        settings = self._api_settings
        assert settings.client_id and settings.secret and settings.subscription
        result = self.api.request(
            "oauth_token",
            "POST",
            "/oauth2/token",
            form={
                "grant_type": "client_credentials",
                "client_id": settings.client_id,
                "client_secret": settings.secret,
                "scope": settings.subscription,
            },
            use_auth=False,
            tries=TOKEN_TRIES,
        )
        body = result.body if isinstance(result.body, dict) else {}
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not result.ok or not isinstance(token, str) or not token:
            raise PartnerUnreachable(
                f"Kroton's token endpoint gave no token ({result.describe()})",
                partner="kroton",
                settings=("API_KROTON_BASE_URL", *API_CREDENTIALS),
            )
        try:
            return token, float(lifetime or 300)
        except (TypeError, ValueError):
            return token, 300.0

    def _auth_headers(self) -> dict[str, str]:
        self._token = self.tokens.get()
        return {
            "Authorization": f"Bearer {self._token}",
            "Ocp-Apim-Subscription-Key": self._api_settings.subscription or "",
        }

    def _drop_token(self) -> None:
        self.tokens.invalidate(self._token)

    # --- endpoints ----------------------------------------------------------------------------
    def search_offers(self, query: dict, subscription: Subscription) -> HttpResult:
        return self.catalog.request(
            "catalog_search", "POST", CATALOG_PATH, subscription=subscription, json_body=query
        )

    def register(self, body: dict, subscription: Subscription) -> HttpResult:
        return self.api.request(
            "register",
            "POST",
            REGISTER_PATH,
            subscription=subscription,
            json_body=body,
            idempotent=False,
        )

    def inscriptions_by_cpf(
        self, cpf: str, subscription: Subscription, *, priority: Priority, cqrs: bool = False
    ) -> HttpResult:
        path = (CPF_CQRS_PATH if cqrs else CPF_PATH).format(cpf=cpf)
        operation = "check_cpf" if priority is Priority.LOW else "find_by_cpf"
        return self.api.request(
            operation, "GET", path, subscription=subscription, priority=priority
        )

    def inscription(self, inscricao: str, sistema: str, subscription: Subscription) -> HttpResult:
        path = INSCRIPTION_PATH.format(inscricao=inscricao, sistema=sistema)
        return self.api.request(
            "check_inscription", "GET", path, subscription=subscription, priority=Priority.LOW
        )
