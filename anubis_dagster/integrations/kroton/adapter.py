"""Kroton (Cogna): gender fix, course sync in the catalog, registration, status checks.

Flow (reference §2): `to_sync` → catalog search for two valid offers → `to_register` (or
`empty_course`, or `course_failed` and retried) → register → `awaiting_register` / `registered`
→ checks by inscription and by CPF → `enrolled` / `dropped` / `failed`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, ClassVar

from anubis_dagster.clients.http import HttpResult
from anubis_dagster.clients.quota import Priority
from anubis_dagster.core.adoption import Candidate, Sent, held_reason, is_ours, parse_time
from anubis_dagster.core.masking import mask_text
from anubis_dagster.core.states import Status
from anubis_dagster.core.validation import UsedFields
from anubis_dagster.db.models import Subscription
from anubis_dagster.integrations.base import (
    AdapterContext,
    IESAdapter,
    Outcome,
    PayloadError,
    ResendGuard,
    register_adapter,
)
from anubis_dagster.integrations.kroton import health as kroton_health
from anubis_dagster.integrations.kroton.client import KrotonClient
from anubis_dagster.integrations.kroton.health import CATALOG_PROBE_QUERY
from anubis_dagster.integrations.kroton.mapping import (
    CHECK_STATUSES,
    classification_status,
    processing_status,
)
from anubis_dagster.integrations.kroton.payload import (
    PAYLOAD_FIELDS,
    catalog_query,
    registration_body,
    valid_offers,
)
from anubis_dagster.integrations.kroton.resources import KROTON_APIS
from anubis_dagster.integrations.kroton.settings import KrotonOriginSettings, KrotonSettings

DEFAULT_CATALOG_CACHE_SECONDS = 3600
OFFERS_NEEDED = 2  # first and second option


def _today() -> Any:
    return datetime.now(UTC).date()


@register_adapter
class KrotonAdapter(IESAdapter):
    type = "kroton"
    settings_model = KrotonSettings
    origin_settings_model = KrotonOriginSettings  # `origins.<origin>` in the file
    initial_status = Status.TO_SYNC
    prepare_statuses: ClassVar[frozenset[Status]] = frozenset(
        {Status.TO_SYNC, Status.COURSE_FAILED}
    )
    prepare_label = "sync_courses"
    check_statuses: ClassVar[frozenset[Status]] = CHECK_STATUSES
    title = "Kroton"
    apis = KROTON_APIS
    resend_guard = ResendGuard.ASK  # inscriptions by CPF
    #: the payload mapping's fields, and the gender column (`sexo`) intake fills from the order
    order_fields = PAYLOAD_FIELDS | UsedFields.of(read=["base_user.gender"])

    probes = kroton_health.PROBES

    def __init__(self, ctx: AdapterContext) -> None:
        super().__init__(ctx)
        self.client = KrotonClient(ctx.clients)
        self._catalog_memo: dict[str, Any] = {}

    # --- fix_data: Kroton requires `sexo` -----------------------------------------------------
    def fix_data(self, subscription: Subscription) -> dict[str, Any] | None:
        """Gender from the order, else from other subscriptions with the same first name, else
        from the IBGE census (`names`), else `NI` (seed 001's FixData rule)."""
        if subscription.gender in ("M", "F", "NI"):
            return None
        hint = None
        if subscription.first_name:
            hint = self.ctx.store.gender_hint(subscription.first_name, subscription.id)
        gender, source = hint or ("NI", "default")
        subscription.gender = gender
        return {"gender": gender, "source": source}

    # --- sync_courses -------------------------------------------------------------------------
    def prepare(self, subscription: Subscription) -> Outcome:
        today = _today()
        try:
            query = catalog_query(subscription.payload, today)
        except PayloadError as exc:
            return Outcome.move(Status.EMPTY_COURSE, error=str(exc), label="no_catalog_keys")
        answer, result = self._catalog(query, subscription)
        if answer is None:
            assert result is not None
            return Outcome(
                status=Status.COURSE_FAILED,
                transient=True,
                error=f"catalog unavailable: {result.describe()}",
                label=f"catalog_{result.outcome}",
            )
        try:
            offers = valid_offers(answer, today)
        except ValueError as exc:
            return Outcome(
                status=Status.COURSE_FAILED,
                transient=True,
                error=f"catalog answered garbage: {exc}",
                label="catalog_malformed",
            )
        if len(offers) < OFFERS_NEEDED:
            return Outcome.move(
                Status.EMPTY_COURSE,
                error=f"catalog has {len(offers)} valid offer(s); {OFFERS_NEEDED} are needed",
            )
        chosen = offers[:OFFERS_NEEDED]
        return Outcome.move(
            Status.TO_REGISTER,
            ies_data={
                "kroton_offers": [o["id"] for o in chosen],
                "kroton_sistema": chosen[0].get("sistema"),
                # what an inscription of ours shows at Kroton (adopt only ours: issue 21)
                "kroton_sent": {
                    "cursos": [o.get("dsCurso") for o in chosen],
                    "unidades": [o.get("idUnidadeOrigem") for o in chosen],
                    "periodos": [o.get("periodoCaptacao") for o in chosen],
                },
            },
        )

    def _catalog(
        self, query: dict[str, Any], subscription: Subscription
    ) -> tuple[Any, HttpResult | None]:
        """Identical queries within a run, and within `catalog_cache_seconds`, are answered
        from the cache instead of the catalog's quota."""
        key = hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()
        if key in self._catalog_memo:
            self.ctx.call.count("catalog_cache_hits")
            return self._catalog_memo[key], None
        ttl = float(self.ctx.settings.get("catalog_cache_seconds", DEFAULT_CATALOG_CACHE_SECONDS))
        cached = self.ctx.store.cached_answer(key, ttl)
        if cached is not None:
            self._catalog_memo[key] = cached
            self.ctx.call.count("catalog_cache_hits")
            return cached, None
        result = self.client.search_offers(query, subscription)
        if not result.ok:
            return None, result
        try:
            valid_offers(result.body, _today())
        except ValueError:
            return None, result  # never cache garbage
        self.ctx.store.remember_answer(key, result.body)
        self._catalog_memo[key] = result.body
        return result.body, result

    # --- register -----------------------------------------------------------------------------
    def build_payload(self, subscription: Subscription) -> dict[str, Any]:
        return registration_body(
            subscription.payload,
            offers=list((subscription.ies_data or {}).get("kroton_offers") or []),
            gender=subscription.gender,
            origin_settings=self.ctx.origin_settings(subscription.origin),
            default_address=self.ctx.settings.get("default_address"),
        )

    def register(self, subscription: Subscription, payload: dict[str, Any]) -> Outcome:
        result = self.client.register(payload, subscription)
        if result.outcome == "http_4xx":
            return self._refusal(subscription, result)
        if not result.ok:
            return Outcome.retry(
                result.describe(), unknown=result.unknown_outcome, label=result.outcome
            )
        body = result.body if isinstance(result.body, dict) else {}
        status = processing_status(body.get("status"))
        if body.get("success") is False or status is Status.FAILED:
            return Outcome.move(
                Status.FAILED if status is Status.FAILED else Status.REGISTER_FAILED,
                error=_messages(body),
                follow_up=body,
            )
        if body.get("success") is not True or status is None:
            # a 2xx without an explicit success: we can't tell what Kroton did
            return Outcome.retry(
                "register answer without success/status", unknown=True, label="unclear_answer"
            )
        return Outcome.move(status, external_id=_str(body.get("inscricaoId")), follow_up=body)

    def _refusal(self, subscription: Subscription, result: HttpResult) -> Outcome:
        body = result.body if isinstance(result.body, dict) else {"text": result.body}
        if result.status == 409:  # Kroton already has this CPF: adopt it only if it is ours
            found = self.find_existing(subscription)
            if found is not None and found.definite:
                if found.status is Status.UNKNOWN:
                    return found
                return found.with_(
                    note="Kroton refused a duplicate CPF; its existing inscription (ours: it "
                    "matches what we sent) adopted"
                )
        return Outcome.move(
            Status.REGISTER_FAILED,
            error=_messages(body) or result.describe(),
            follow_up=body,
            label=f"refused_{result.status}",
        )

    def find_existing(self, subscription: Subscription) -> Outcome | None:
        """After an unclear send (or a 409): the inscription of this CPF that is ours, adopted;
        someone else's held as `unknown` with both shown; None when Kroton lists none active
        (sending again is right)."""
        result = self.client.inscriptions_by_cpf(
            subscription.cpf or "", subscription, priority=Priority.HIGH
        )
        if not result.ok:
            return Outcome.retry(
                f"could not ask Kroton by CPF: {result.describe()}",
                unknown=True,
                label=f"lookup_{result.outcome}",
            )
        items = _items(result.body)
        active = [i for i in items if processing_status(i.get("status")) is not Status.FAILED]
        if not active:
            return None  # none, or only failed inscriptions there: sending again is right
        sent = sent_of(subscription)
        ours = _ours(active, subscription.external_id, sent)
        if ours is None:
            candidates = [_candidate(i) for i in active]
            return Outcome.move(
                Status.UNKNOWN,
                error=held_reason("Kroton", candidates, sent),
                follow_up=result.body,
                ies_data={
                    "adoption": {
                        "partner": "Kroton",
                        "sent": sent.shown(),
                        "listed": [c.shown() for c in candidates],
                    }
                },
                label="held_not_ours",
            )
        status = processing_status(ours.get("status")) or Status.REGISTERED
        return Outcome.move(
            status,
            external_id=_str(ours.get("id")),
            follow_up=result.body,
            label=f"found_{status.value}",
        )

    # --- circuit breaker probe (issue 21) ----------------------------------------------------
    def breaker_probe(self, api: str, subscription: Subscription) -> HttpResult | None:
        """A read only: the waiting student's inscriptions by CPF (the API), or the count of
        open offers (the catalog). Never a registration."""
        for key, resource in self.apis.items():
            if resource.client_name != api:
                continue
            if key == "kroton_api" and subscription.cpf:
                return self.client.probe_by_cpf(subscription.cpf, subscription)
            if key == "kroton_catalog":
                return self.client.probe_catalog(CATALOG_PROBE_QUERY, subscription)
        return None

    # --- check --------------------------------------------------------------------------------
    def check(self, subscription: Subscription) -> Outcome:
        sistema = (subscription.ies_data or {}).get("kroton_sistema")
        if subscription.status == Status.AWAITING_REGISTER and subscription.external_id and sistema:
            result = self.client.inscription(subscription.external_id, sistema, subscription)
            if not result.ok:
                return Outcome.retry(result.describe(), label=f"check_{result.outcome}")
            inscription = (
                result.body.get("inscricao", result.body) if isinstance(result.body, dict) else None
            )
            if not isinstance(inscription, dict):
                return Outcome.retry("inscription answer is not an object", label="check_garbage")
            return self._status_of(inscription, result.body, subscription.status)
        result = self.client.inscriptions_by_cpf(
            subscription.cpf or "", subscription, priority=Priority.LOW, cqrs=True
        )
        if not result.ok:
            return Outcome.retry(result.describe(), label=f"check_{result.outcome}")
        if not isinstance(result.body, dict) or not isinstance(result.body.get("inscricoes"), list):
            return Outcome.retry("CPF answer has no inscricoes list", label="check_garbage")
        # only the inscription whose id we hold (or, without one, one that matches what we sent)
        inscription = _ours(
            _items(result.body),
            subscription.external_id,
            sent_of(subscription, since=subscription.sent_at),
        )
        if inscription is None:
            return Outcome(
                error="Kroton lists no inscription of ours for this CPF yet",
                label="check_not_listed",
                follow_up=result.body,
            )
        return self._status_of(inscription, result.body, subscription.status)

    def _status_of(self, inscription: dict[str, Any], source: Any, current: str) -> Outcome:
        """Processing status first (NEW/PROCESSING/ERROR); once processed, the classification
        (reference table). An inscription still awaiting becomes `registered` first; its
        classification is read at the next check."""
        processing = processing_status(inscription.get("status"))
        external_id = _str(inscription.get("id"))
        if processing in (Status.AWAITING_REGISTER, Status.FAILED):
            return Outcome(
                status=processing, follow_up=source, external_id=external_id, label=processing.value
            )
        if current == Status.AWAITING_REGISTER:
            return Outcome(
                status=Status.REGISTERED,
                follow_up=source,
                external_id=external_id,
                label="registered",
            )
        description = (inscription.get("classificacao") or {}).get("descricao")
        status = classification_status(description)
        if status is None:
            status = Status.REGISTERED
            if description:
                self.ctx.log(
                    mask_text(f"unknown Kroton classification {description!r}; kept as registered")
                )
        return Outcome(status=status, follow_up=source, external_id=external_id, label=status.value)


def _items(body: Any) -> list[dict[str, Any]]:
    items = body.get("inscricoes") if isinstance(body, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _ours(
    items: list[dict[str, Any]], external_id: str | None, sent: Sent
) -> dict[str, Any] | None:
    """Our inscription among a CPF's: the one with the id we hold; without an id, the most
    recent one that matches what we sent (`core/adoption.py`). Never another one."""
    if external_id:
        return next((i for i in items if _str(i.get("id")) == external_id), None)
    matching = [i for i in items if is_ours(_candidate(i), sent)]
    return matching[-1] if matching else None


def _candidate(item: dict[str, Any]) -> Candidate:
    """An inscription as Kroton's CPF answer shows it: `curso`, `unidade` (the contract);
    `periodoCaptacao` and `dataInscricao` when it shows them (the sandbox's assumption)."""
    return Candidate(
        id=_str(item.get("id")),
        course=_str(item.get("curso")),
        campus=_str(item.get("unidade")),
        period=_str(item.get("periodoCaptacao")),
        created_at=parse_time(item.get("dataInscricao")),
        extra={"status": item.get("status"), "sistema": item.get("sistema")},
    )


def sent_of(subscription: Subscription, since: datetime | None = None) -> Sent:
    """What we sent Kroton for this subscription; `since`: when the send began (default: the
    earlier unknown send's marker; None for a first send)."""
    data = (subscription.ies_data or {}).get("kroton_sent") or {}
    return Sent.of(
        courses=data.get("cursos") or (),
        campuses=data.get("unidades") or (),
        periods=data.get("periodos") or (),
        send_began=since if since is not None else subscription.sending_since,
    )


def _messages(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    parts = [str(body.get("message") or "")]
    errors = body.get("errors")
    if isinstance(errors, list):
        parts.extend(str(e) for e in errors)
    return mask_text("; ".join(p for p in parts if p))


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
