"""Estácio / Wyden (Yduqs): LGPD consent at OneTrust, then registration.

Flow (reference §3): `to_sync_lgpd` → consent recorded at OneTrust (`sync_lgpd`) →
`to_register` (or `sync_lgpd_failed`, retried on the schedule) → CEP lookup for the
municipality and district codes (cached on the subscription) → `POST /inscricao` →
`registered` or `register_failed`. Estácio has no status endpoint: the registration answer is
final, so nothing is checked afterwards.

Estácio's own rules (field mapping, what each answer means) are plain functions in
`payload.py` and `mapping.py`; this module only orders the calls and turns answers into
`Outcome`s. The contract is provisional: see `docs/estacio-assumptions.md`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from anubis_dagster.clients.errors import PartnerProblem, SendCancelled
from anubis_dagster.clients.http import HttpResult
from anubis_dagster.clients.quota import Quota, QuotaWaitTooLong
from anubis_dagster.core.adoption import Candidate, Sent, held_reason, is_ours, parse_time
from anubis_dagster.core.masking import mask_text
from anubis_dagster.core.orders import get_path
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.base import (
    AdapterContext,
    IESAdapter,
    Outcome,
    PayloadError,
    ResendGuard,
    register_adapter,
)
from anubis_dagster.integrations.estacio import health as estacio_health
from anubis_dagster.integrations.estacio.client import EstacioClient
from anubis_dagster.integrations.estacio.mapping import (
    CHECK_STATUSES,
    Answer,
    Lookup,
    RegisterWindow,
    RegistrationAnswer,
    classify_location,
    classify_registration,
    consent_receipt,
)
from anubis_dagster.integrations.estacio.payload import (
    PAYLOAD_FIELDS,
    alternate_campus,
    campus_candidates,
    cep_of,
    consent_body,
    next_campus,
    registration_body,
)
from anubis_dagster.integrations.estacio.resources import (
    ESTACIO_APIS,
    WINDOW_ENV,
    EstacioApiResource,
    EstacioCepResource,
    OneTrustResource,
)
from anubis_dagster.integrations.estacio.settings import EstacioSettings

ATL016_NOTE = "CPF already registered at Estácio (ATL016): treated as registered"


def _now() -> datetime:
    return datetime.now(UTC)


@register_adapter
class EstacioAdapter(IESAdapter):
    type = "estacio"
    settings_model = EstacioSettings
    initial_status = Status.TO_SYNC_LGPD
    prepare_statuses: ClassVar[frozenset[Status]] = frozenset(
        {Status.TO_SYNC_LGPD, Status.SYNC_LGPD_FAILED}
    )
    prepare_label = "sync_lgpd"
    check_statuses: ClassVar[frozenset[Status]] = CHECK_STATUSES  # no status endpoint
    title = "Estácio"
    apis = ESTACIO_APIS
    probes = estacio_health.PROBES
    #: no way to ask Estácio about a CPF, but it answers ATL016 to a CPF it already registered
    #: (reference §3): after a lost answer the resend is the question, never a second inscription
    resend_guard = ResendGuard.PARTNER_REFUSES_DUPLICATES
    #: a requeue comes after a final failure, maybe days later: Estácio may no longer know the
    #: consent (it refuses a CPF without one, MS002), so it is recorded again first
    requeue_register_at = Status.TO_SYNC_LGPD
    order_fields = PAYLOAD_FIELDS

    def __init__(self, ctx: AdapterContext) -> None:
        super().__init__(ctx)
        self._api = ctx.clients.config("estacio_api", EstacioApiResource)
        self._onetrust = ctx.clients.config("estacio_onetrust", OneTrustResource)
        self._cep = ctx.clients.config("estacio_cep", EstacioCepResource)
        self.window = _window(self._api, ctx.settings)
        self.client = EstacioClient(ctx.clients)
        self._locations: dict[str, dict[str, str]] = {}  # CEP → lookup answer, this run

    # --- sync_lgpd: consent at OneTrust ----------------------------------------------------------
    def prepare(self, subscription: Subscription) -> Outcome:
        """Estácio refuses a registration whose consent OneTrust has not recorded."""
        try:
            body = consent_body(
                subscription.payload,
                collection_token=str(self._onetrust.token),
                purpose_id=str(self._onetrust.finalidade_id),
                topic_id=str(self._onetrust.topico_id),
            )
        except PayloadError as exc:
            return Outcome.move(Status.FAILED, error=str(exc), label="invalid_consent_data")
        try:
            result = self.client.record_consent(body, subscription)
        except QuotaWaitTooLong:
            return self._quota_spent("OneTrust", self._onetrust.rate_limit)
        receipt = consent_receipt(result.outcome, result.body)
        if receipt:
            return Outcome.move(
                Status.TO_REGISTER, ies_data={"consent_receipt": receipt}, label="consent_recorded"
            )
        return Outcome(
            status=Status.SYNC_LGPD_FAILED,
            transient=True,
            error=f"OneTrust did not record the consent: {_describe(result)}",
            label=f"consent_{result.outcome}",
        )

    # --- before sending: daily window, CEP codes ----------------------------------------------
    def before_send(self, subscription: Subscription) -> Outcome | None:
        """Hold the registration outside Estácio's daily window (no attempt counted), and
        fetch the municipality/district codes of the student's CEP once: they are kept in
        `ies_data["location"]`, so a retried registration does not ask again."""
        if self.window is not None and not self.ctx.dry_run:
            opening = self.window.next_start(_now())
            if opening is not None:
                return Outcome.defer(
                    opening,
                    note=f"outside Estácio's registration window ({self.window.describe()}); "
                    f"next try at {opening:%Y-%m-%d %H:%M} local time",
                )
        try:
            return self._ensure_location(subscription)
        except (PartnerProblem, SendCancelled):
            raise  # the whole integration's problem: the delivery layer stops the batch
        except Exception as exc:  # garbage from the CEP lookup: this student only
            if self.ctx.dry_run:
                return None
            message = mask_text(f"{type(exc).__name__}: {exc}")[:500]
            return Outcome.retry(f"CEP lookup: {message}", label="error")

    def _ensure_location(self, subscription: Subscription) -> Outcome | None:
        cep = cep_of(subscription.payload)
        if len(cep) != 8:
            return None  # build_payload refuses it, with the reason
        location = self._location(subscription, cep)
        if location is None:
            try:
                result = self.client.lookup_cep(cep, subscription)
            except QuotaWaitTooLong:
                if self.ctx.dry_run:
                    return None
                return self._quota_spent("Estácio CEP lookup", self._cep.rate_limit)
            answer = classify_location(result.outcome, result.status, result.body, cep)
            if answer.kind is not Lookup.FOUND:
                if self.ctx.dry_run:
                    return None
                if answer.kind is Lookup.NOT_FOUND:
                    return Outcome.move(
                        Status.REGISTER_FAILED, error=answer.message, label="cep_not_found"
                    )
                return Outcome.retry(
                    f"{answer.message} ({_describe(result)})", label=f"cep_{result.outcome}"
                )
            location = answer.location or {}
            self._locations[cep] = location
        else:
            self.ctx.call.count("cep_cache_hits")
        if not self.ctx.dry_run and (subscription.ies_data or {}).get("location") != location:
            # committed with the "sending" marker, before the request leaves
            subscription.ies_data = {**(subscription.ies_data or {}), "location": location}
        return None

    def _location(self, subscription: Subscription, cep: str) -> dict[str, str] | None:
        cached = (subscription.ies_data or {}).get("location")
        if isinstance(cached, dict) and cached.get("cep") == cep:
            return cached
        return self._locations.get(cep)

    # --- register -----------------------------------------------------------------------------
    def build_payload(self, subscription: Subscription) -> dict[str, Any]:
        order = subscription.payload
        metadata = get_path(order, "offer.metadata")
        if not isinstance(metadata, dict):
            raise PayloadError("offer metadata is missing")
        refused = list((subscription.ies_data or {}).get("campus_refused") or [])
        return registration_body(
            order,
            campus=next_campus(metadata, refused),
            location=self._location(subscription, cep_of(order)) or {},
        )

    def register(self, subscription: Subscription, payload: dict[str, Any]) -> Outcome:
        """Send; after an offer-not-found (MS004) send once more under the other campus code
        (codCampusPai ↔ codCampus) in the same step, so the event rows show both attempts."""
        metadata = get_path(subscription.payload, "offer.metadata") or {}
        refused = list((subscription.ies_data or {}).get("campus_refused") or [])
        try:
            result, answer = self._send(payload, subscription)
            note = None
            if answer.kind is Answer.OFFER_NOT_FOUND:
                refused.append(payload["codCampus"])
                alternate = alternate_campus(metadata, refused)
                if alternate is not None:
                    self.ctx.log(
                        f"register #{subscription.id}: offer not found (MS004) under campus "
                        f"{payload['codCampus']}; trying {alternate}"
                    )
                    note = (
                        f"offer not found (MS004) under campus {payload['codCampus']}; "
                        f"sent under {alternate}"
                    )
                    payload = {**payload, "codCampus": alternate}
                    result, answer = self._send(payload, subscription)
                    if answer.kind is Answer.OFFER_NOT_FOUND:
                        refused.append(alternate)
        except QuotaWaitTooLong:
            # nothing left in this call (quota waits happen before sending)
            held = self._quota_spent("Estácio", self._api.rate_limit)
            return held.with_(ies_data={"campus_refused": refused})
        outcome = self._outcome(answer, result, payload, metadata, refused, note)
        if answer.kind is Answer.ALREADY_REGISTERED:
            return self._adopt_only_ours(outcome, subscription, result, payload, metadata)
        return outcome

    def _adopt_only_ours(
        self,
        outcome: Outcome,
        subscription: Subscription,
        result: HttpResult,
        payload: dict[str, Any],
        metadata: dict[str, Any],
    ) -> Outcome:
        """ATL016 names the CPF's registration: ours only if it matches what we sent, as far
        as the answer shows it (`core/adoption.py`), else the student is held as `unknown`."""
        body = result.body if isinstance(result.body, dict) else {}
        candidate = Candidate(
            id=outcome.external_id,
            course=_text_or_none(body.get("codCurso")),
            campus=_text_or_none(body.get("codCampus")),
            created_at=parse_time(body.get("dataInscricao")),
        )
        sent = Sent.of(
            courses=[payload.get("codCurso")],
            campuses=[payload.get("codCampus"), *campus_candidates(metadata)],
            send_began=subscription.sending_since,  # the earlier unknown send, if any
        )
        if is_ours(candidate, sent):
            return outcome
        return Outcome.move(
            Status.UNKNOWN,
            error=held_reason("Estácio (ATL016)", [candidate], sent),
            follow_up=result.body,
            ies_data={
                "campus_refused": [],
                "adoption": {
                    "partner": "Estácio",
                    "sent": sent.shown(),
                    "listed": [candidate.shown()],
                },
            },
            label="held_not_ours",
        )

    def _send(
        self, payload: dict[str, Any], subscription: Subscription
    ) -> tuple[HttpResult, RegistrationAnswer]:
        result = self.client.register(payload, subscription)
        return result, classify_registration(result.outcome, result.status, result.body)

    def _outcome(
        self,
        answer: RegistrationAnswer,
        result: HttpResult,
        payload: dict[str, Any],
        metadata: dict[str, Any],
        refused: list[str],
        note: str | None,
    ) -> Outcome:
        campus = payload["codCampus"]
        if answer.kind is Answer.REGISTERED:
            return Outcome.move(
                Status.REGISTERED,
                external_id=answer.numero,
                follow_up=result.body,
                note=note,
                ies_data={"campus_refused": [], "codCampus": campus},
            )
        if answer.kind is Answer.ALREADY_REGISTERED:
            return Outcome.move(
                Status.REGISTERED,
                external_id=answer.numero,
                follow_up=result.body,
                note=ATL016_NOTE + (f"; {note}" if note else ""),
                ies_data={"campus_refused": [], "codCampus": campus},
                label="already_registered",
            )
        if answer.kind is Answer.OFFER_NOT_FOUND:
            tried = (
                " and ".join(
                    f"{key} {metadata.get(key)}"
                    for key in ("codCampusPai", "codCampus")
                    if metadata.get(key) not in (None, "")
                )
                or "the campus given"
            )
            return Outcome.move(
                Status.REGISTER_FAILED,
                error=f"offer not found at Estácio (MS004) for codCurso {metadata.get('codCurso')}"
                f" under {tried}" + (f": {answer.message}" if answer.message else ""),
                ies_data={"campus_refused": []},
                label="offer_not_found",
            )
        if answer.kind is Answer.INVALID:
            return Outcome.move(
                Status.REGISTER_FAILED,
                error=f"Estácio refused the data ({answer.code or f'HTTP {result.status}'}): "
                f"{answer.message}",
                label="invalid",
            )
        # unclear or transient: try again on the schedule; when the request may have been
        # processed, the resend is guarded by Estácio's ATL016 (see `resend_guard`)
        return Outcome.retry(
            f"{_describe(result)}: {answer.message}" if answer.message else _describe(result),
            unknown=answer.unknown,
            label="unclear_answer" if answer.kind is Answer.UNCLEAR else result.outcome,
            ies_data={"campus_refused": refused},
        )

    # --- helpers ------------------------------------------------------------------------------
    def breaker_probe(self, api: str, subscription: Subscription) -> HttpResult | None:
        """Estácio offers no harmless read: an empty registration or consent (refused as
        invalid, nobody registered), or a CEP lookup (issue 21)."""
        key = _probe_key(self, api)
        return self.client.breaker_probe(key, subscription) if key else None

    def _quota_spent(self, which: str, rate_limit: str) -> Outcome:
        """Our share of a partner's quota is spent for longer than a run waits: come back
        later without counting an attempt (a backlog must not dead-letter students)."""
        quota = Quota.parse(rate_limit, name=which)
        delay = timedelta(seconds=min(900.0, max(60.0, quota.period / 4)))
        until = _now() + delay
        return Outcome.defer(
            until, note=f"{which} quota ({rate_limit}) spent; next try at {until:%H:%M:%S} UTC"
        )


def _text_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _probe_key(adapter: EstacioAdapter, api: str) -> str | None:
    return next((k for k, r in adapter.apis.items() if r.client_name == api), None)


def _window(api: EstacioApiResource, settings: Any) -> RegisterWindow | None:
    """`API_ESTACIO_REGISTER_WINDOW` wins over the integration's `register_window` setting."""
    zone = settings.get("register_timezone") or None
    if api.register_window:
        return RegisterWindow.parse(api.register_window, name=WINDOW_ENV, zone=zone)
    return RegisterWindow.parse(
        settings.get("register_window"), name="estacio settings.register_window", zone=zone
    )


def _describe(result: HttpResult) -> str:
    """`HttpResult.describe()` plus the partner's own message when it gave one (masked)."""
    body = result.body if isinstance(result.body, dict) else {}
    message = body.get("mensagem") or body.get("message") or body.get("erro")
    return result.describe() + (f": {mask_text(str(message))}" if message else "")
