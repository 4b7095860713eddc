"""One partner API as a Dagster resource that yields its ready client.

Every partner API (Kroton's API, Captação and catalog, Estácio's API, OneTrust, the CEP lookup,
a test's partner) is a `PartnerApiResource` subclass that only declares what differs: its
environment variables, the settings of its quota and timeout, its headers and, when it has one,
how it issues tokens. The client itself is built here the same way for every partner
(`PartnerApiResource.client`): the quota shared by every run and process through the app DB,
the token cached in `integration_tokens`, and the HTTP machinery that reports every attempt.

Adapters and health probes receive `PartnerClients`, the ready clients of one integration for
one call context: they never build a client, read the environment or the settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

import dagster as dg
import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from anubis_dagster.clients.errors import PartnerUnreachable
from anubis_dagster.clients.http import (
    ApiClient,
    AttemptSubject,
    CallContext,
    HttpResult,
    RefusalReader,
)
from anubis_dagster.clients.probes import Level, ProbeResult
from anubis_dagster.clients.quota import Quota
from anubis_dagster.db.rate_limit import RateLimiter
from anubis_dagster.db.tokens import TokenStore
from anubis_dagster.settings import Settings, get_settings

#: a failing token endpoint stops the whole batch, so it gets a few more quick tries than a
#: student's call (a 401 is still one call: refused credentials are not retried)
TOKEN_TRIES = 5
#: lifetime assumed when a token answer does not say (seconds)
DEFAULT_TOKEN_LIFETIME = 300.0

#: one environment variable, or several where the first one set wins (e.g. a URL of its own,
#: else the main API's)
Variables = str | tuple[str, ...]


class AdapterNotConfigured(RuntimeError):
    """The partner's settings are missing from the environment: the run fails at once (no
    retries), with the message naming the variables to set."""


@dataclass(frozen=True)
class TokenGrant:
    """How a partner API issues access tokens: one POST whose answer carries the token and
    its lifetime (OAuth2's `access_token`/`expires_in`, or a login's own names)."""

    key: str  # the token's key in `integration_tokens`
    operation: str  # the attempt's operation, e.g. `oauth_token`
    path: str
    token_field: str
    lifetime_field: str
    form: Mapping[str, str] | None = None
    json_body: Mapping[str, str] | None = None

    def call(self) -> dict[str, Any]:
        """The request's arguments for `ApiClient.request` (after the operation)."""
        body = dict(self.json_body) if self.json_body is not None else None
        return {
            "method": "POST",
            "path": self.path,
            "form": self.form,
            "json_body": body,
            "use_auth": False,
            "reads_only": True,  # a token changes nothing of the students' at the partner
        }


def credential(variables: Variables, meaning: str = "") -> Any:
    """A field read from the setting(s) `variables` (the first one set), unset = None. Left
    out of `repr`: a credential's value is never shown."""
    names = _names(variables)
    shown = " or ".join(names) + (f" ({meaning})" if meaning else "")
    return Field(
        default=None, description=shown, repr=False, json_schema_extra={"env": list(names)}
    )


class PartnerApiResource(BaseModel):
    """A partner API: its URL, credentials, quota and read timeout. Subclasses declare their
    `credential` fields (`base_url` included), the class variables below and, when the API
    needs them, `headers` and `token_grant`.

    Not a configurable Dagster resource: Dagster gets `locked_resource(cls)`, a resource with
    no config fields that builds the API from the validated settings when the run starts, so a
    run config (Launchpad, GraphQL, `dagster job execute`) cannot point it at another host,
    swap its credentials or lift its quota (refused at launch as an unexpected config entry).

    Every integration's resources are built for every run of the shared delivery ops, so an
    unset variable is not an error here (an Estácio run must not need Kroton's secrets):
    `missing_settings()` names what is unset, and a run of this partner refuses to start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str | None = Field(default=None, description="base URL")
    rate_limit: str = Field(description="quota, REQUESTS/SECONDS")
    timeout_seconds: float = Field(default=20.0, description="read timeout per request")

    #: the client's name in attempt rows, logs and error messages, e.g. `kroton-catalog`
    client_name: ClassVar[str]
    #: its quota's bucket under the integration's key: `<integration>:<bucket>`
    bucket: ClassVar[str] = "api"
    #: its tunables are the settings `<settings_prefix>_<field>` of the integration's
    #: environment model, validated at load (e.g. `api_kroton_rate_limit`)
    settings_prefix: ClassVar[str]
    tunables: ClassVar[tuple[str, ...]] = ("rate_limit", "timeout_seconds")
    #: an API no flow needs yet: leaving all of its variables unset is fine
    optional: ClassVar[bool] = False
    #: the variables named when the partner refuses us or cannot be reached (default: all)
    credentials: ClassVar[tuple[str, ...]] = ()

    @field_validator("rate_limit")
    @classmethod
    def _quota(cls, value: str) -> str:
        Quota.parse(value, name=cls.rate_limit_variable())
        return value

    # --- built from the environment ---------------------------------------------------------
    @classmethod
    def env(cls) -> dict[str, tuple[str, ...]]:
        """field → its environment variables, for every `credential` field."""
        found = {}
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and isinstance(extra.get("env"), list):
                found[name] = tuple(str(v) for v in extra["env"])  # type: ignore[union-attr]
        return found

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Self:
        """Credentials (an unset one stays None) and tunables from the validated settings, where
        the integration's environment model (`integrations/<name>/environment.py`) put them."""
        settings = settings or get_settings()
        values: dict[str, Any] = {
            name: settings.value(f"{cls.settings_prefix}_{name}") for name in cls.tunables
        }
        for name, variables in cls.env().items():
            found = next((v for v in variables if settings.is_set(v)), None)
            values[name] = _plain(settings.value(found)) if found else None
        return cls(**values)

    @classmethod
    def rate_limit_variable(cls) -> str:
        return f"{cls.settings_prefix}_rate_limit".upper()

    def missing_settings(self) -> list[str]:
        """The variables still to set (the last of each alternative: the main one)."""
        env = self.env()
        unset = [variables[-1] for name, variables in env.items() if not getattr(self, name)]
        if self.optional and len(unset) == len(env):
            return []
        return unset

    def configured(self) -> bool:
        """False for an optional API none of whose variables is set."""
        return any(getattr(self, name) for name in self.env())

    def credential_settings(self) -> tuple[str, ...]:
        return self.credentials or tuple(v for vs in self.env().values() for v in vs)

    # --- what differs between partners -------------------------------------------------------
    def headers(self, token: str | None) -> dict[str, str]:
        """Headers sent with every call (`token`: the current access token, if any)."""
        return {}

    def token_grant(self) -> TokenGrant | None:
        """How this API issues tokens; None = no token, static headers only."""
        return None

    # --- the one factory ----------------------------------------------------------------------
    def client(
        self,
        call: CallContext,
        integration_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> ApiClient:
        """A ready client for `call`: quota bucket `<integration_key>:<bucket>`, token cache,
        connect timeout 5 s (at most the read timeout)."""
        missing = self.missing_settings()
        if missing or not self.base_url:
            raise AdapterNotConfigured(f"{self.client_name}: set {', '.join(missing)}")
        quota = Quota.parse(self.rate_limit, name=self.rate_limit_variable())
        settings = get_settings()
        grant = self.token_grant()
        tokens = _Tokens(self, grant, call) if grant is not None else None
        client = ApiClient(
            name=self.client_name,
            base_url=self.base_url,
            limiter=RateLimiter(call.db_url, f"{integration_key}:{self.bucket}", quota),
            ctx=call,
            timeout=httpx.Timeout(self.timeout_seconds, connect=min(5.0, self.timeout_seconds)),
            auth_headers=tokens.headers if tokens else lambda: self.headers(None),
            on_unauthorized=tokens.drop if tokens else None,
            transport=transport,
            credential_settings=self.credential_settings(),
            max_body_bytes=settings.anubis_partner_max_body_bytes,
            deadline_seconds=settings.anubis_partner_deadline_seconds,
        )
        if tokens is not None:
            tokens.client = client
        return client


class _Tokens:
    """An API's access token, cached in `integration_tokens` for every process; a 401 drops it
    and the client asks for a fresh one once."""

    def __init__(self, resource: PartnerApiResource, grant: TokenGrant, call: CallContext):
        self.resource = resource
        self.grant = grant
        self.client: ApiClient | None = None
        self.store = TokenStore(call.db_url, call.integration_id or 0, grant.key, self._fetch)
        self.current: str | None = None

    def headers(self) -> dict[str, str]:
        self.current = self.store.get()
        return self.resource.headers(self.current)

    def drop(self) -> None:
        self.store.invalidate(self.current)

    def _fetch(self) -> tuple[str, float]:
        """A new token. A 401/403 raises `CredentialsRefused` (from the client); an endpoint
        that keeps failing is the partner being down for us: `PartnerUnreachable`, so the batch
        stops instead of every student paying for it."""
        assert self.client is not None
        result = self.client.request(self.grant.operation, **self.grant.call(), tries=TOKEN_TRIES)
        token, lifetime = read_token(result.body, self.grant)
        if not result.ok or token is None:
            raise PartnerUnreachable(
                f"{self.client.name}'s token endpoint gave no token ({result.describe()})",
                partner=self.client.name,
                settings=self.resource.credential_settings(),
            )
        return token, lifetime if lifetime is not None else DEFAULT_TOKEN_LIFETIME


def read_token(body: Any, grant: TokenGrant) -> tuple[str | None, float | None]:
    """(token, lifetime in seconds) of a token answer; None for what it lacks."""
    body = body if isinstance(body, dict) else {}
    token, lifetime = body.get(grant.token_field), body.get(grant.lifetime_field)
    if not isinstance(token, str) or not token:
        token = None
    try:
        seconds = float(lifetime) if lifetime is not None else None
    except (TypeError, ValueError):
        seconds = None
    return token, seconds


R = TypeVar("R", bound=PartnerApiResource)


@dataclass
class PartnerClients:
    """The ready clients of one integration for one call context (one op or asset): each
    built by its resource on first use, once, and closed together at the end."""

    resources: Mapping[str, PartnerApiResource]
    call: CallContext
    integration_key: str
    transport: httpx.BaseTransport | None = None
    _built: dict[str, ApiClient] = field(default_factory=dict)

    @classmethod
    def of(
        cls, resources: Any, keys: Sequence[str] | frozenset[str], call: CallContext, key: str
    ) -> PartnerClients:
        """The clients of the resources named `keys` among a run's Dagster `resources`."""
        found: dict[str, PartnerApiResource] = {}
        for name in sorted(keys):
            resource = getattr(resources, name)
            if not isinstance(resource, PartnerApiResource):
                raise TypeError(f"resource {name!r} is not a partner API")
            found[name] = resource
        return cls(found, call, key)

    def __getitem__(self, key: str) -> ApiClient:
        if key not in self._built:
            self._built[key] = self.resources[key].client(
                self.call, self.integration_key, transport=self.transport
            )
        return self._built[key]

    def config(self, key: str, kind: type[R]) -> R:
        """The resource behind `key`, typed (for partner values such as consent ids)."""
        resource = self.resources[key]
        if not isinstance(resource, kind):
            raise TypeError(f"resource {key!r} is a {type(resource).__name__}, not {kind}")
        return resource

    def require(self, partner: str) -> None:
        """Refuse a run of `partner` whose needed variables are unset, naming each once (the
        whole run fails, not every student one by one)."""
        missing: list[str] = []
        for resource in self.resources.values():
            if resource.optional:
                continue  # no flow needs it: the doctor and the health check name what is unset
            missing += [v for v in resource.missing_settings() if v not in missing]
        if missing:
            raise AdapterNotConfigured(
                f"{partner} is not configured: set {', '.join(missing)} (see the README)"
            )

    def unprobed(self, key: str) -> ProbeResult | None:
        """Why the API behind `key` cannot be probed (variables unset), or None."""
        resource = self.resources[key]
        if resource.optional and not resource.configured():
            names = ", ".join(resource.credential_settings())
            return ProbeResult(
                Level.OK,
                f"not configured (no flow uses it yet): set {names} to check it",
                {"probed": False},
            )
        unset = resource.missing_settings()
        if not unset:
            return None
        verb = "is" if len(unset) == 1 else "are"
        return ProbeResult(Level.ERROR, f"not configured: {', '.join(unset)} {verb} not set")

    def close(self) -> None:
        for client in self._built.values():
            client.close()
        self._built.clear()


def _names(variables: Variables) -> tuple[str, ...]:
    return (variables,) if isinstance(variables, str) else variables


def _plain(value: Any) -> str | None:
    if value is None:
        return None
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


#: what a run config trying to configure a locked resource is told (Dagster prefixes it with
#: the unexpected entry and its path)
LOCKED_DESCRIPTION = (
    "{title}: URL, credentials, quota and timeout come from the settings ({variables}), "
    "never from run config"
)


def locked_resource(api: type[PartnerApiResource]) -> dg.ResourceDefinition:
    """The Dagster resource of `api`: an empty config schema (Dagster refuses any entry under
    `resources.<key>.config` when the run is launched, before a run exists), its value built
    from the validated settings when the run starts."""

    def build(_context: dg.InitResourceContext) -> PartnerApiResource:
        return api.from_settings()

    variables = ", ".join(dict.fromkeys(v for vs in api.env().values() for v in vs))
    return dg.ResourceDefinition(
        resource_fn=build,
        config_schema={},
        description=LOCKED_DESCRIPTION.format(title=api.client_name, variables=variables),
    )


def send_registration(
    client: ApiClient,
    path: str,
    body: dict[str, Any],
    subscription: AttemptSubject,
    refusal: RefusalReader | None = None,
) -> HttpResult:
    """POST a registration. Never repeated within the call: a lost answer goes back to the
    adapter as an unknown outcome, for the delivery layer to settle before any resend.
    `refusal` finds the partner's refusal in its answer (the attempt row says `refused`)."""
    return client.request(
        "register",
        "POST",
        path,
        subscription=subscription,
        json_body=body,
        idempotent=False,
        refusal=refusal,
    )
