"""The contract every IES adapter implements, and the registry of adapters by type.

An integration's `type` (configuration file) names its adapter. The generic delivery code
(`anubis_dagster.delivery`) talks to adapters only through this module: it claims due
subscriptions, calls the adapter for one step of one subscription, and turns the `Outcome` the
adapter returns into a status change or a scheduled retry. Adapters never set a status.

Adding an IES = one package with a subclass of `IESAdapter` decorated with `register_adapter`
(and, for each partner API it calls, a `PartnerApiResource` named in `apis`), plus an entry in
the integrations file. See "Adding an IES" in the README.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import dagster as dg
from pydantic import BaseModel

from anubis_dagster.clients.http import CallContext, HttpResult
from anubis_dagster.clients.probes import Probe
from anubis_dagster.core.states import Status
from anubis_dagster.core.validation import UsedFields
from anubis_dagster.db.models import Integration, Subscription
from anubis_dagster.integrations.base_settings import IntegrationSettings
from anubis_dagster.integrations.partner_api import (
    PartnerApiResource,
    PartnerClients,
    locked_resource,
)


class ResendGuard(StrEnum):
    """How a registration whose answer was lost can be settled before anything is resent."""

    #: `find_existing` asks the partner (e.g. Kroton's inscriptions by CPF)
    ASK = "ask"
    #: the partner refuses a second registration of a CPF and says so (Estácio's ATL016), so
    #: the resend itself is the question: it cannot register the student twice
    PARTNER_REFUSES_DUPLICATES = "partner_refuses_duplicates"
    #: no way to know: the subscription is held as `unknown` for an operator, never resent
    NONE = "none"


@dataclass(frozen=True)
class Outcome:
    """What one step did to one subscription, for the generic code to record (immutable: use
    `with_(...)` for a changed copy).

    - `status`: the status to move to (None = stays where it is);
    - `transient`: the step failed for a reason that may pass (retry on the schedule);
    - `error`: what went wrong, in the partner's words when it gave any (masked before storage);
    - `unknown`: the adapter's own view that a registration may have reached the partner
      without a usable answer. The delivery layer decides this for every adapter anyway, from
      the write requests it saw (`delivery.outcomes.settle_write`);
    - `external_id`, `follow_up`: the partner's id for the registration and its full answer;
    - `ies_data`: adapter working data to merge into `subscription.ies_data`;
    - `note`: a remark for the event row when nothing failed (e.g. "CPF already registered").
    """

    status: Status | None = None
    transient: bool = False
    error: str | None = None
    unknown: bool = False
    external_id: str | None = None
    follow_up: Any = None
    ies_data: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    label: str = ""  # short outcome name for counts, e.g. "registered", "http_5xx"
    #: not now, and not a failure: come back at this time (e.g. outside a partner's daily
    #: window); no attempt is counted
    defer_until: datetime | None = None

    @classmethod
    def move(cls, status: Status, **kwargs: Any) -> Outcome:
        return cls(status=status, label=kwargs.pop("label", status.value), **kwargs)

    @classmethod
    def defer(cls, until: datetime, note: str) -> Outcome:
        return cls(defer_until=until, note=note, label="deferred")

    @classmethod
    def retry(cls, error: str, **kwargs: Any) -> Outcome:
        return cls(transient=True, error=error, label=kwargs.pop("label", "retry"), **kwargs)

    def with_(self, **changes: Any) -> Outcome:
        return replace(self, **changes)

    @property
    def definite(self) -> bool:
        """The partner gave an answer that settles the step (a move that is not a retry)."""
        return self.status is not None and not self.transient


class PayloadError(ValueError):
    """The subscription's data cannot make a valid request (permanent; message is masked)."""


class AdapterStore(Protocol):
    """What an adapter may ask of the app database (the delivery layer answers:
    `delivery/adapter_store.py`). Adapters never open database sessions themselves."""

    def gender_hint(self, first_name: str, exclude_id: int) -> tuple[str, str] | None:
        """(gender M/F, where it came from) for a first name, or None when nothing knows it."""
        ...

    def cached_answer(self, key: str, max_age_seconds: float) -> Any | None:
        """A partner answer remembered under `key` less than `max_age_seconds` ago."""
        ...

    def remember_answer(self, key: str, answer: Any) -> None: ...


@dataclass
class AdapterContext:
    """What an adapter may use: the integration row and its settings, the run's call context,
    the ready clients of its partner APIs (by resource key) and the store for what it needs of
    our database."""

    integration: Integration
    call: CallContext
    clients: PartnerClients
    store: AdapterStore
    dry_run: bool = False
    log: Callable[[str], None] = print

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.integration.settings or {}

    def origin_settings(self, origin: str | None) -> Mapping[str, Any]:
        return (self.settings.get("origins") or {}).get(origin or "", {}) or {}


class IESAdapter:
    """Base class of an IES adapter. Override what your partner's flow needs."""

    type: ClassVar[str]
    #: the status a valid new subscription starts in
    initial_status: ClassVar[Status] = Status.TO_REGISTER
    #: statuses the `prepare` step works on (e.g. course sync, consent); empty = no such step
    prepare_statuses: ClassVar[frozenset[Status]] = frozenset()
    #: what `prepare` is called in this partner's flow, for logs and the README
    prepare_label: ClassVar[str] = "prepare"
    #: statuses the check job follows at the partner; empty = no status endpoint
    check_statuses: ClassVar[frozenset[Status]] = frozenset()
    #: the partner's name in messages, e.g. "Kroton is not configured"
    title: ClassVar[str] = ""
    #: the partner APIs it calls: Dagster resource key → resource class (each yields a client)
    apis: ClassVar[Mapping[str, builtins.type[PartnerApiResource]]] = {}
    #: the Dagster resource keys of `apis` (set for each subclass)
    resource_keys: ClassVar[frozenset[str]] = frozenset()
    #: connectivity checks of the partner's APIs for the integration's health asset, each
    #: spending at most one request of the quota (`anubis_dagster.clients.probes`)
    probes: ClassVar[Sequence[Probe]] = ()
    #: validates the integration's `settings` in the integrations file (`extra="forbid"`)
    settings_model: ClassVar[builtins.type[BaseModel]] = IntegrationSettings
    #: how a registration with a lost answer is settled before a resend (safe default: held)
    resend_guard: ClassVar[ResendGuard] = ResendGuard.NONE
    #: where a requeued registration resumes when the partner may no longer have what an
    #: earlier step gave it (Estácio: the LGPD consent, recorded again at OneTrust; recording
    #: it twice is harmless); None: at the registration
    requeue_register_at: ClassVar[Status | None] = None
    #: the order fields the adapter reads (its payload mapping, and the subscription columns
    #: intake fills from the order that it uses): the only ones intake validates for this
    #: integration, with routing's and intake's own (`core.validation.UsedFields`). `required`:
    #: absent, the order is refused. A field read but not declared is unchecked input: the
    #: tests trace each payload mapping and compare (`test_used_fields.py`).
    order_fields: ClassVar[UsedFields] = UsedFields()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.resource_keys = frozenset(cls.apis)
        cls.title = cls.title or cls.__dict__.get("type", cls.__name__)

    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx

    # --- Dagster wiring ---------------------------------------------------------------------
    @classmethod
    def resources(cls) -> dict[str, PartnerApiResource]:
        """The APIs of `apis` as the settings validated at load configure them."""
        return {key: api.from_settings() for key, api in cls.apis.items()}

    @classmethod
    def resource_definitions(cls) -> dict[str, dg.ResourceDefinition]:
        """The Dagster resources of `apis`: no config fields (a run config cannot redirect,
        re-credential or unthrottle them), built from the settings when a run starts."""
        return {key: locked_resource(api) for key, api in cls.apis.items()}

    @classmethod
    def health_probes(cls) -> Sequence[Probe]:
        return cls.probes

    # --- steps --------------------------------------------------------------------------------
    def fix_data(self, subscription: Subscription) -> dict[str, Any] | None:
        """Fill data the partner requires that the order lacks; returns the changes or None."""
        return None

    def prepare(self, subscription: Subscription) -> Outcome:
        raise NotImplementedError(f"{self.type} has no prepare step")

    def before_send(self, subscription: Subscription) -> Outcome | None:
        """A chance to hold a registration back before anything is sent (e.g. outside the
        partner's daily window: return `Outcome.defer(...)`). None = go ahead."""
        return None

    def build_payload(self, subscription: Subscription) -> dict[str, Any]:
        """The registration request body; raises `PayloadError` when the data can't make one."""
        raise NotImplementedError

    def register(self, subscription: Subscription, payload: dict[str, Any]) -> Outcome:
        raise NotImplementedError

    def find_existing(self, subscription: Subscription) -> Outcome | None:
        """Ask the partner whether this student is already registered (after an unknown
        outcome; only called when `resend_guard` is `ASK`). An Outcome moving the subscription
        on when found (or a transient one when the partner could not be asked); None when the
        partner certainly does not have it."""
        raise NotImplementedError(f"{self.type} cannot ask the partner about a registration")

    def check(self, subscription: Subscription) -> Outcome:
        raise NotImplementedError(f"{self.type} has no status check")

    def breaker_probe(self, api: str, subscription: Subscription) -> HttpResult | None:
        """The probe of an open circuit breaker (issue 21): ONE call to the partner API whose
        client is named `api`, that can change nothing at the partner (a read, a status check,
        a request it refuses as invalid), about `subscription` (a student waiting). None when
        the API has no such call: the breaker then closes and the next calls decide."""
        return None


_ADAPTERS: dict[str, type[IESAdapter]] = {}
BUILTIN_ADAPTER_MODULES = (
    "anubis_dagster.integrations.kroton.adapter",
    "anubis_dagster.integrations.estacio.adapter",
)


class UnknownIntegrationType(KeyError):
    pass


def register_adapter(adapter: type[IESAdapter]) -> type[IESAdapter]:
    """Class decorator: make `adapter` the one used for integrations of its `type`."""
    _ADAPTERS[adapter.type] = adapter
    return adapter


def adapter_class(integration_type: str) -> type[IESAdapter]:
    """The adapter of an integration type. By convention the adapter of type `x` lives in
    `anubis_dagster.integrations.x.adapter` and is imported on first use; an adapter living
    elsewhere (e.g. a test's) registers itself when its module is imported."""
    for module in BUILTIN_ADAPTER_MODULES:
        importlib.import_module(module)  # registers the built-in adapters
    if integration_type not in _ADAPTERS:
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(f"anubis_dagster.integrations.{integration_type}.adapter")
    try:
        return _ADAPTERS[integration_type]
    except KeyError:
        raise UnknownIntegrationType(
            f"no adapter registered for integration type {integration_type!r}: expected "
            f"anubis_dagster/integrations/{integration_type}/adapter.py, or import its module "
            "before building the definitions"
        ) from None


def initial_status_for(integration_type: str) -> Status:
    return adapter_class(integration_type).initial_status


def order_fields_for(integration_type: str) -> UsedFields:
    return adapter_class(integration_type).order_fields
