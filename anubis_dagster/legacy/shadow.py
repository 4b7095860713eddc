"""Shadow run of one integration: Anubis does everything up to the send, beside the legacy
service that still sends (issue 20, docs/shadow.md).

In shadow, intake, routing, fix data, the reads at the partner (Kroton's catalog, Estácio's CEP
lookup, tokens) and payload building go on as live; every request that would change something
at the partner (a registration, an LGPD consent, any POST a new IES adds without declaring it a
read) is stopped before it leaves by the gate the delivery layer installs on its HTTP calls
(`clients.http.CallContext.before_change`, asked `withheld_reason` here). The subscription then
records "would send" (the masked request in its event row, the raw payload in `ies_data` for the
comparison, wiped by LGPD retention like the rest of `ies_data`) and ends `shadowed`: final, not
counted as registered, never sent later by accident.

The mode lives in the app DB (`integrations.shadow_since`), so every process (sensors, run
workers, `anubis run`) sees it, and the gate reads it right before each write: switching shadow
on stops the next write of a run already going.

Going live (`shadow off`) sends only the students intaken from then on: a subscription created
before `shadow_ended_at` belongs to the shadow run (the legacy was its sender) and is withheld
like in shadow whenever it reaches a write, ending `shadowed` too. Only a deliberate takeover
releases one (`ies_data["shadow_released"]`, set by the cutover's takeover; docs/shadow.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from anubis_dagster.alerts.webhook import Alert
from anubis_dagster.core.states import Status
from anubis_dagster.db.models import Integration, Subscription
from anubis_dagster.db.transitions import transition
from anubis_dagster.integrations.base import initial_status_for
from anubis_dagster.legacy.modes import shadow_modes as shadow_modes  # re-exported

#: the statuses a subscription waits in before its first write at the partner
BEFORE_SEND = frozenset(
    {
        Status.TO_SYNC,
        Status.COURSE_FAILED,
        Status.TO_SYNC_LGPD,
        Status.SYNC_LGPD_FAILED,
        Status.TO_REGISTER,
    }
)
#: `ies_data` key of the raw "would send" registration payload (for the shadow comparison)
PAYLOAD_KEY = "shadow_payload"
#: `ies_data` key a takeover sets on a shadow-run subscription it releases to be sent
RELEASED_KEY = "shadow_released"


class UnknownIntegration(LookupError):
    pass


@dataclass(frozen=True)
class ShadowChange:
    """What `set_shadow` did (or, in a dry run, would do)."""

    key: str
    shadow: bool  # the mode asked for
    changed: bool  # False: it already was in that mode (no alert)
    dry_run: bool
    since: datetime | None  # shadow since (None: live)
    ended_at: datetime | None  # the last shadow run ended then (None: never ended)
    waiting: int  # subscriptions not sent yet (statuses before the first write)
    shadowed: int  # subscriptions already `shadowed`

    def describe(self) -> str:
        mode = "in shadow" if self.shadow else "live"
        verb = "would be" if self.dry_run else "is"
        head = f"{self.key} {verb} {mode}"
        if not self.changed:
            return f"{head} (no change: it already was)"
        if self.shadow:
            return (
                f"{head}: nothing is written at the partner from now on; {self.waiting} "
                "subscriptions not sent yet are withheld when they come due ('would send' "
                "recorded, status shadowed)"
            )
        return (
            f"{head}: students intaken from now on are sent; the shadow run's {self.shadowed} "
            f"shadowed and {self.waiting} not sent yet stay unsent (the legacy's; only a "
            "takeover releases them)"
        )


def _integration(session: Session, key: str) -> Integration:
    integration = session.scalars(select(Integration).where(Integration.key == key)).first()
    if integration is None:
        raise UnknownIntegration(f"no integration {key!r} (see the integrations file)")
    return integration


def _count(session: Session, integration_id: int, statuses: frozenset[Status]) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Subscription)
            .where(
                Subscription.integration_id == integration_id,
                Subscription.status.in_([s.value for s in statuses]),
            )
        )
        or 0
    )


def set_shadow(
    session: Session,
    key: str,
    shadow: bool,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ShadowChange:
    """Switch integration `key` into shadow (`shadow=True`) or live. Idempotent: the mode it
    already is in changes nothing. `dry_run` only says what would change."""
    integration = _integration(session, key)
    now = now or datetime.now(UTC)
    was_shadow = integration.shadow_since is not None
    changed = shadow != was_shadow
    since, ended = integration.shadow_since, integration.shadow_ended_at
    if changed:
        since, ended = (now, ended) if shadow else (None, now)
    if changed and not dry_run:
        integration.shadow_since, integration.shadow_ended_at = since, ended
        session.flush()
    return ShadowChange(
        key=key,
        shadow=shadow,
        changed=changed,
        dry_run=dry_run,
        since=since,
        ended_at=ended,
        waiting=_count(session, integration.id, BEFORE_SEND),
        shadowed=_count(session, integration.id, frozenset({Status.SHADOWED})),
    )


def withheld_reason(
    session: Session, integration_id: int, subscription_id: int | None
) -> str | None:
    """Why a write about this subscription must not leave now, or None when it may: the
    integration is in shadow, or the subscription is a shadow run's student (created before
    the shadow ended) that no takeover released. Read fresh right before each write."""
    row = session.execute(
        select(Integration.key, Integration.shadow_since, Integration.shadow_ended_at).where(
            Integration.id == integration_id
        )
    ).first()
    if row is None:
        return None
    key, since, ended = row
    if since is not None:
        return f"{key} runs in shadow since {since:%Y-%m-%d %H:%M} UTC"
    if ended is None or subscription_id is None:
        return None
    found = session.execute(
        select(Subscription.created_at, Subscription.ies_data).where(
            Subscription.id == subscription_id
        )
    ).first()
    if found is None:
        return None
    created_at, ies_data = found
    if created_at < ended and not (ies_data or {}).get(RELEASED_KEY):
        return (
            f"intaken during {key}'s shadow run (before {ended:%Y-%m-%d %H:%M} UTC): the "
            "legacy service was its sender; only a takeover releases it"
        )
    return None


def shadow_alert(change: ShadowChange, run_id: str | None = None) -> Alert:
    """The one alert of a switch: the team must know when an integration stops or starts
    writing at its partner."""
    if change.shadow:
        return Alert(
            title=f"{change.key}: shadow run started",
            lines=[
                "nothing is sent to the partner (no registration, no consent): 'would send' "
                "is recorded; the legacy service must keep sending",
                f"{change.waiting} subscriptions not sent yet will be withheld",
            ],
            level="warning",
            run_id=run_id,
        )
    return Alert(
        title=f"{change.key}: shadow run ended, live",
        lines=[
            "students intaken from now on are sent by Anubis",
            f"the shadow run's students stay unsent ({change.shadowed} shadowed, "
            f"{change.waiting} not sent yet): the legacy's, only a takeover releases them",
        ],
        level="info",
        run_id=run_id,
    )


@dataclass
class Release:
    released: list[int] = field(default_factory=list)
    skipped: list[dict[str, object]] = field(default_factory=list)  # id + reason (no PII)


def release_shadowed(
    session: Session,
    key: str,
    subscription_ids: Iterable[int],
    *,
    run_id: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Release:
    """The takeover's primitive: shadowed students of integration `key` that Anubis must send
    after all (e.g. the legacy failed them) start again from the adapter's first step (Estácio's
    consent was never sent in shadow; Kroton's offers are searched again), marked released so
    the gate lets them through once the integration is live. In shadow they are withheld
    again. `dry_run` only lists them. Idempotent: a released one is no longer shadowed."""
    integration = _integration(session, key)
    target = initial_status_for(integration.type)
    now = now or datetime.now(UTC)
    result = Release()
    wanted = sorted(set(subscription_ids))
    found = {
        s.id: s
        for s in session.scalars(
            select(Subscription).where(
                Subscription.integration_id == integration.id, Subscription.id.in_(wanted)
            )
        )
    }
    for subscription_id in wanted:
        subscription = found.get(subscription_id)
        reason = _why_not_released(subscription)
        if reason:
            result.skipped.append({"id": subscription_id, "reason": reason})
            continue
        assert subscription is not None
        if not dry_run and not _release(session, subscription, target, now=now, run_id=run_id):
            result.skipped.append(
                {"id": subscription_id, "reason": "another active subscription holds the CPF"}
            )
            continue
        result.released.append(subscription_id)
    return result


def _why_not_released(subscription: Subscription | None) -> str:
    """Only a shadowed student whose data is still there can be sent; the reason goes back to
    the operator, without personal data, so a takeover's report explains every skip."""
    if subscription is None:
        return "not a subscription of this integration"
    if subscription.status != Status.SHADOWED:
        return f"status {subscription.status}, not shadowed"
    if subscription.anonymized_at is not None:
        return "personal data removed by retention (LGPD)"
    return ""


def _release(
    session: Session,
    subscription: Subscription,
    target: Status,
    *,
    now: datetime,
    run_id: str | None,
) -> bool:
    """In a savepoint, so that one student whose CPF another active subscription holds is
    skipped without undoing the others (False)."""
    try:
        with session.begin_nested():
            transition(
                session,
                subscription,
                target,
                operation="takeover",
                run_id=run_id,
                requeue=True,
                response={"note": "released from the shadow run: Anubis sends it"},
            )
            subscription.ies_data = {**(subscription.ies_data or {}), RELEASED_KEY: now.isoformat()}
            subscription.attempts = 0
            subscription.scheduled_to = now
            subscription.claimed_by = subscription.claimed_until = None
            session.flush()
    except IntegrityError:
        return False
    return True
