"""Tiny IES: register only (no prepare step, no status checks), one resource, one endpoint.

Everything Anubis needs to deliver to this partner is in this module and in one entry of the
integrations file (`type: tiny_ies`); importing the module registers the adapter and its
environment variables (`TinyEnvironment`), its resource (`tiny_api`, yielding a ready client)
comes with it. Nothing overrides the generic code: the resource is built from the settings like
Kroton's and Estácio's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from anubis_dagster.core.orders import digits, get_path
from anubis_dagster.core.states import Status
from anubis_dagster.core.validation import UsedFields
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.base import (
    IESAdapter,
    Outcome,
    PayloadError,
    register_adapter,
)
from anubis_dagster.integrations.base_settings import IntegrationSettings
from anubis_dagster.integrations.partner_api import (
    PartnerApiResource,
    credential,
    send_registration,
)
from anubis_dagster.settings import (
    EnvironmentSettings,
    register_environment,
    seconds_setting,
    setting,
)


@register_environment
class TinyEnvironment(EnvironmentSettings):
    """Tiny IES's variables, composed into the settings like a built-in partner's: validated
    at load, shown and checked for typos by `anubis doctor`."""

    prefixes: ClassVar[tuple[str, ...]] = ("TINY_IES_",)

    tiny_ies_url: str | None = setting(None, "Tiny IES API", group="tiny")
    tiny_ies_rate_limit: str = setting("1000/1", "Tiny IES quota, `REQUESTS/SECONDS`", group="tiny")
    tiny_ies_timeout_seconds: float = seconds_setting(2.0, "read timeout", group="tiny")


class TinyApiResource(PartnerApiResource):
    """Tiny IES's API: a base URL and a quota, no credentials."""

    base_url: str | None = credential("TINY_IES_URL")

    client_name: ClassVar[str] = "tiny"
    settings_prefix: ClassVar[str] = "tiny_ies"  # TinyEnvironment's tiny_ies_rate_limit, …


TINY_APIS: dict[str, type[PartnerApiResource]] = {"tiny_api": TinyApiResource}


@register_adapter
class TinyAdapter(IESAdapter):
    type = "tiny_ies"
    title = "Tiny IES"
    settings_model = IntegrationSettings  # only the shared keys (retry_schedule)
    initial_status = Status.TO_REGISTER  # no prepare step: registered straight away
    apis = TINY_APIS
    order_fields = UsedFields.of(required=["offer.course.name"])  # and the CPF (intake's)

    def build_payload(self, subscription: Subscription) -> dict[str, Any]:
        course = get_path(subscription.payload, "offer.course.name")
        if not course:
            raise PayloadError("offer.course.name is required by Tiny IES")
        return {"cpf": digits(subscription.cpf), "course": course}

    def register(self, subscription: Subscription, payload: dict[str, Any]) -> Outcome:
        result = send_registration(self.ctx.clients["tiny_api"], "/students", payload, subscription)
        body = result.body if isinstance(result.body, dict) else {}
        if result.status == 201 and body.get("id"):
            return Outcome.move(Status.REGISTERED, external_id=str(body["id"]), follow_up=body)
        if result.outcome == "http_4xx":
            return Outcome.move(
                Status.REGISTER_FAILED, error=str(body.get("error") or result.describe())
            )
        return Outcome.retry(
            result.describe(), unknown=result.unknown_outcome, label=result.outcome
        )
