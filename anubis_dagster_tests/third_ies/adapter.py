"""Tiny IES: register only (no prepare step, no status checks), one resource, one endpoint.

Everything Anubis needs to deliver to this partner is in this module and in one entry of the
integrations file (`type: tiny_ies`); importing the module registers the adapter.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field

from anubis_dagster.clients.http import ApiClient
from anubis_dagster.config.integrations import IntegrationSettings
from anubis_dagster.core.orders import digits, get_path
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.base import (
    AdapterContext,
    IESAdapter,
    Outcome,
    PayloadError,
    register_adapter,
)


class TinyApiResource(dg.ConfigurableResource):
    """Tiny IES's API: a base URL and a quota."""

    base_url: str = Field(description="TINY_IES_URL")
    rate_limit: str = Field(default="50/1", description="TINY_IES_RATE_LIMIT")
    timeout_seconds: float = Field(default=2.0, description="TINY_IES_TIMEOUT_SECONDS")


@register_adapter
class TinyAdapter(IESAdapter):
    type = "tiny_ies"
    settings_model = IntegrationSettings  # only the shared keys (retry_schedule)
    initial_status = Status.TO_REGISTER  # no prepare step: registered straight away
    resource_keys: ClassVar[frozenset[str]] = frozenset({"tiny_api"})

    def __init__(self, ctx: AdapterContext) -> None:
        super().__init__(ctx)
        settings: TinyApiResource = ctx.resources.tiny_api
        self.api = ApiClient.for_partner(
            name="tiny",
            base_url=settings.base_url,
            ctx=ctx.call,
            bucket=f"{ctx.integration.key}:api",
            quota=settings.rate_limit,
            quota_setting="TINY_IES_RATE_LIMIT",
            timeout_seconds=settings.timeout_seconds,
            credential_settings=("TINY_IES_URL",),
        )

    @classmethod
    def resources(cls) -> dict[str, dg.ConfigurableResource]:
        # test-only partner: its two tunables are read here rather than in the settings model
        return {
            "tiny_api": TinyApiResource(
                base_url=dg.EnvVar("TINY_IES_URL"),
                rate_limit=os.environ.get("TINY_IES_RATE_LIMIT", "1000/1"),
                timeout_seconds=float(os.environ.get("TINY_IES_TIMEOUT_SECONDS", "2")),
            )
        }

    def close(self) -> None:
        self.api.close()

    def build_payload(self, subscription: Subscription) -> dict[str, Any]:
        course = get_path(subscription.payload, "offer.course.name")
        if not course:
            raise PayloadError("offer.course.name is required by Tiny IES")
        return {"cpf": digits(subscription.cpf), "course": course}

    def register(self, subscription: Subscription, payload: dict[str, Any]) -> Outcome:
        result = self.api.request(
            "register",
            "POST",
            "/students",
            subscription=subscription,
            json_body=payload,
            idempotent=False,
        )
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
