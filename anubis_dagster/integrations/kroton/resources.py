"""Kroton's three APIs as Dagster resources, each yielding its ready client
(`anubis_dagster.integrations.partner_api`).

Environment names are the current Node service's, so operators move over without renaming
anything. Quotas and timeouts come from the settings validated at load.
"""

from __future__ import annotations

from typing import ClassVar

from anubis_dagster.integrations.partner_api import PartnerApiResource, TokenGrant, credential

#: the OAuth2 token of the inscription API, in `integration_tokens`
OAUTH_TOKEN_KEY = "oauth2"  # nosec B105: the token's key in integration_tokens, not a password
#: assumption: the Captação API's e-mail/password login (seed 001 gives the variables and the
#: body `{email, password}`, not the path or the answer); it answers `{token, expiresIn}`
CAPTACAO_LOGIN_PATH = "/auth/login"


class KrotonApiResource(PartnerApiResource):
    """Kroton's inscription API: OAuth2 client credentials, plus the APIM subscription key on
    every call. Token calls count in its quota."""

    base_url: str | None = credential("API_KROTON_BASE_URL")
    client_id: str | None = credential("API_KROTON_CLIENT_ID")
    secret: str | None = credential("API_KROTON_SECRET")
    subscription: str | None = credential("API_KROTON_SUBSCRIPTION", "scope and APIM key")

    client_name: ClassVar[str] = "kroton"
    settings_prefix: ClassVar[str] = "api_kroton"

    def token_grant(self) -> TokenGrant:
        return TokenGrant(
            key=OAUTH_TOKEN_KEY,
            operation="oauth_token",
            path="/oauth2/token",
            token_field="access_token",  # nosec B106: the answer's field name, not a password
            lifetime_field="expires_in",
            form={
                "grant_type": "client_credentials",
                "client_id": str(self.client_id),
                "client_secret": str(self.secret),
                "scope": str(self.subscription),
            },
        )

    def headers(self, token: str | None) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Ocp-Apim-Subscription-Key": self.subscription or "",
        }


class KrotonCaptacaoResource(PartnerApiResource):
    """Kroton's Captação API (e-mail/password login). No flow uses it yet: its settings are
    accepted so the same environment works unchanged, and its health check logs in."""

    base_url: str | None = credential("API_KROTON_BASE_URL_CAPTACAO")
    email: str | None = credential("API_KROTON_EMAIL")
    password: str | None = credential("API_KROTON_PASSWORD")

    client_name: ClassVar[str] = "kroton-captacao"
    bucket: ClassVar[str] = "captacao"
    # assumption: no quota is documented for the Captação API; the API's is kept
    settings_prefix: ClassVar[str] = "api_kroton"
    optional: ClassVar[bool] = True

    def token_grant(self) -> TokenGrant:
        return TokenGrant(
            key="captacao",
            operation="captacao_token",
            path=CAPTACAO_LOGIN_PATH,
            token_field="token",  # nosec B106: the answer's field name, not a password
            lifetime_field="expiresIn",
            json_body={"email": str(self.email), "password": str(self.password)},
        )

    def headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


class KrotonCatalogResource(PartnerApiResource):
    """Kroton's offer catalog (Elasticsearch middleware, `Authorization: apiKey`)."""

    base_url: str | None = credential("CATALOG_KROTON_BASE_URL")
    api_key: str | None = credential("CATALOG_KROTON_API_KEY")

    client_name: ClassVar[str] = "kroton-catalog"
    bucket: ClassVar[str] = "catalog"
    settings_prefix: ClassVar[str] = "catalog_kroton"

    def headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"apiKey {self.api_key or ''}"}


#: resource key → resource, as the Kroton adapter reads them
KROTON_APIS: dict[str, type[PartnerApiResource]] = {
    "kroton_api": KrotonApiResource,
    "kroton_captacao": KrotonCaptacaoResource,
    "kroton_catalog": KrotonCatalogResource,
}
