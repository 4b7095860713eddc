"""The app database: the source of truth for subscriptions and every attempt made for them.

Tables and columns follow the original Anubis model (seed 002) so the ops team's SQL keeps
working; columns added for retries, leases and tracing are marked. Schema changes go through
Alembic (`anubis_dagster/db/migrations`), never `create_all`.

One piece because the tables point at one another and Alembic compares one metadata:
split by table, every module would import the others.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates
from sqlalchemy.types import TypeDecorator

from anubis_dagster.core.clock import utcnow as utcnow  # re-exported: many import it here
from anubis_dagster.core.offer import offer_columns

# SQLite has no BIGINT autoincrement; ids stay BigInteger on PostgreSQL.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


#: the statuses a deliver or check flow still works on (the partial index `ix_subscriptions_open`
#: covers them; its migration, 0009_scale_indexes, names the same)
OPEN_STATUSES = (
    "to_sync",
    "course_failed",
    "to_sync_lgpd",
    "sync_lgpd_failed",
    "to_register",
    "awaiting_register",
    "registered",
)


def _partial(condition: str) -> dict[str, Any]:
    """A partial index's condition, on both backends."""
    return {"postgresql_where": text(condition), "sqlite_where": text(condition)}


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False
    )


class Integration(Timestamps, Base):
    """One IES integration (kroton, estacio). `key` is its stable slug and Dagster partition key;
    `type` names the adapter package; `interval` is minutes between due-work runs."""

    __tablename__ = "integrations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), nullable=False)
    type: Mapped[str] = mapped_column(String(60), nullable=False)
    key: Mapped[str] = mapped_column(String(60), nullable=False, unique=True)
    interval: Mapped[int] = mapped_column(Integer, nullable=False, default=5)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)  # added
    # added: set by the operator (`pause_integration`), never by the integrations file, so a
    # pause survives every sync; intake still routes to a paused integration
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    pause_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # added (issue 20, `legacy/shadow.py`): set by `anubis shadow on`/`off`, never by the file.
    # While `shadow_since` is set nothing is written at the partner; a subscription created
    # before `shadow_ended_at` is never sent on its own (the shadow run's students)
    shadow_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    shadow_ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # added (issue 20): orders paid before this point are never sent (`legacy/go_live.py`);
    # set by `anubis go-live`, never by the integrations file
    go_live_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IntegrationFilter(Timestamps, Base):
    __tablename__ = "integration_filters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id"), nullable=False)
    filter: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    type: Mapped[str] = mapped_column(String(40), nullable=False, default="qb_offer")
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # added: config order

    __table_args__ = (UniqueConstraint("integration_id", "position"),)


#: the columns `anubis report` reads of a window of subscriptions, beside its key (bounded
#: sizes only: an index entry must stay under PostgreSQL's ~2.7 kB; see `OFFER_TEXT_LIMIT`)
REPORT_INCLUDE = (
    "id",
    "status",
    "origin",
    "legacy_status",
    "sent_at",
    "order_updated_at",
    "offer_kind",
    "offer_campus_name",
    "offer_campus_city",
)


class Subscription(Timestamps, Base):
    """One paid order on its way to one integration."""

    __tablename__ = "subscriptions"
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id"), nullable=False)
    integration_filter_id: Mapped[int | None] = mapped_column(ForeignKey("integration_filters.id"))
    order_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    origin: Mapped[str | None] = mapped_column(String(40))
    cpf: Mapped[str | None] = mapped_column(String(14))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(40), nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scheduled_to: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # added for retries: how many scheduled attempts failed, and the last reason (masked)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # added: the CPF while this subscription holds it (NULL once final); unique per integration
    # so "one active subscription per CPF per integration" is enforced by the database.
    active_cpf: Mapped[str | None] = mapped_column(String(14))
    # added: the order's updated_at when ingested, to notice a corrected order
    order_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # added: lease held by the run working on this row, and the send in flight
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sending_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gender: Mapped[str | None] = mapped_column(String(2))  # added: filled by fix_data
    first_name: Mapped[str | None] = mapped_column(String(80))  # added: normalized, for gender
    external_id: Mapped[str | None] = mapped_column(String(80))  # added: IES inscription id
    # added: the adapter's working data (chosen offers, consent receipt, location codes…)
    ies_data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # added: when LGPD retention removed this row's personal data (maintenance/pii.py); a later
    # change (updated_at past it) makes the row due again
    anonymized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # added (issue 20): the legacy service's own status word when this row was imported from it
    # (`anubis legacy import`); NULL for every subscription Anubis created from an order
    legacy_status: Mapped[str | None] = mapped_column(String(40))
    # added (issue 20, `core/offer.py`): the offer fields the conversion report groups by, as
    # the report shows them, written with the payload (intake; `_offer_columns` for the ORM)
    offer_kind: Mapped[str | None] = mapped_column(Text)
    offer_campus_name: Mapped[str | None] = mapped_column(Text)
    offer_campus_city: Mapped[str | None] = mapped_column(Text)

    @validates("payload")
    def _offer_columns(self, _key: str, payload: Any) -> Any:
        """Whoever sets the payload through the ORM sets the offer columns with it."""
        for name, value in offer_columns(payload).items():
            setattr(self, name, value)
        return payload

    __table_args__ = (
        UniqueConstraint("integration_id", "order_id", name="uq_subscriptions_integration_order"),
        UniqueConstraint("integration_id", "active_cpf", name="uq_subscriptions_active_cpf"),
        # due work: "status X of integration Y whose time has come"
        Index("ix_subscriptions_due", "integration_id", "status", "scheduled_to"),
        Index("ix_subscriptions_cpf", "cpf"),
        Index("ix_subscriptions_status", "status"),
        Index("ix_subscriptions_first_name_gender", "first_name", "gender"),
        # issue 20 (migration 0009_scale_indexes): lookups and windows at cutover size
        Index("ix_subscriptions_order_id", "order_id"),
        Index(
            "ix_subscriptions_integration_created",
            "integration_id",
            "created_at",
            # migration 0012: on PostgreSQL the report's windows read these from the index
            # alone, not from a heap of large payloads (SQLite has no INCLUDE)
            postgresql_include=list(REPORT_INCLUDE),
        ),
        # migration 0012: `anubis status`'s count of students imported from a legacy service
        Index(
            "ix_subscriptions_imported", "integration_id", **_partial("legacy_status IS NOT NULL")
        ),
        Index(
            "ix_subscriptions_open",
            "integration_id",
            "status",
            "scheduled_to",
            **_partial(f"status IN ({', '.join(repr(s) for s in OPEN_STATUSES)})"),
        ),
    )


class IntegrationToken(Timestamps, Base):
    """Cached access tokens, shared by every process (one row per integration and key)."""

    __tablename__ = "integration_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id"), nullable=False)
    key: Mapped[str] = mapped_column(String(80), nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (UniqueConstraint("integration_id", "key"),)


class SubscriptionEvent(Timestamps, Base):
    """One row per decision, status change or HTTP attempt.

    `kind` (added) says which: `transition` rows record a status change (or the intake decision
    that created the subscription); `attempt` rows record exactly one outbound HTTP request, so
    attempt rows and requests received by the IES match one for one.
    """

    __tablename__ = "subscription_events"
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))
    status: Mapped[str | None] = mapped_column(String(40))
    operation_name: Mapped[str] = mapped_column(String(60), nullable=False)
    error_message: Mapped[str | None] = mapped_column(Text)
    request: Mapped[Any | None] = mapped_column(JSON)
    response: Mapped[Any | None] = mapped_column(JSON)
    model: Mapped[str] = mapped_column(String(60), nullable=False, default="Subscription")
    # added for tracing
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="transition")
    integration_id: Mapped[int | None] = mapped_column(ForeignKey("integrations.id"))
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    http_status: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        Index("ix_subscription_events_subscription", "subscription_id", "id"),
        Index("ix_subscription_events_run", "dagster_run_id"),
        Index("ix_subscription_events_integration_created", "integration_id", "created_at"),
        # issue 20 (migration 0009_scale_indexes): attempt counts and retries from the index
        Index(
            "ix_subscription_events_attempts",
            "integration_id",
            "operation_name",
            "outcome",
            "subscription_id",
            **_partial("kind = 'attempt'"),
        ),
        Index(
            "ix_subscription_events_retries",
            "integration_id",
            "created_at",
            "subscription_id",
            **_partial("kind = 'retry'"),
        ),
        # issue 20 (migration 0012_scale_report_status): `anubis status`'s recent attempts
        Index(
            "ix_subscription_events_attempts_recent",
            "created_at",
            "integration_id",
            "operation_name",
            "outcome",
            **_partial("kind = 'attempt'"),
        ),
    )


class FollowUp(Timestamps, Base):
    """What the IES last said about a registered student (full answer in `source`)."""

    __tablename__ = "follow_ups"
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("subscriptions.id"), nullable=False, unique=True
    )
    external_id: Mapped[str | None] = mapped_column(String(80))  # IES inscription id
    external_dealer_id: Mapped[str | None] = mapped_column(String(80))  # e.g. Kroton's dealer id
    source: Mapped[Any] = mapped_column(JSON, nullable=False)


class Name(Base):
    """IBGE first-name census: how many people of each gender carry a first name."""

    __tablename__ = "names"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), nullable=False)
    gender: Mapped[str] = mapped_column(String(1), nullable=False)
    frequency: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)

    __table_args__ = (UniqueConstraint("name", "gender"),)


class RateLimitSlot(Base):
    """Requests spent against a partner's quota, shared by every run and process."""

    __tablename__ = "rate_limit_slots"
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    bucket: Mapped[str] = mapped_column(String(80), nullable=False)
    # the slot counts in the window from this time (database clock): when its answer arrived,
    # or, until then, a provisional time ahead (db/rate_limit.py)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (Index("ix_rate_limit_slots_bucket_taken", "bucket", "taken_at"),)


class RateLimitBucket(Base):
    """One row per quota; locking it serialises the decision to spend a slot."""

    __tablename__ = "rate_limit_buckets"
    bucket: Mapped[str] = mapped_column(String(80), primary_key=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # set by a 429
    # set while a high-priority caller (a registration) waits: low-priority callers yield
    priority_demand_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CatalogCacheEntry(Base):
    """IES catalog answers, reused within `catalog_cache_seconds` instead of spending quota."""

    __tablename__ = "catalog_cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the query
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id"), nullable=False)
    response: Mapped[Any] = mapped_column(JSON, nullable=False)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class IntakeQuarantine(Timestamps, Base):
    """A paid order intake could not process: an unreadable payload, or a write the database
    refused. Recorded with its reason so the batch and the intake watermark move past it;
    `resolved_at` is set when the order is later ingested (corrected at the source, or
    re-ingested by an operator with `intake_job`'s `order_ids`)."""

    __tablename__ = "intake_quarantine"
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # the integration the order was routed to; "" when it could not be routed (unreadable)
    integration_key: Mapped[str] = mapped_column(String(60), nullable=False, default="")
    kind: Mapped[str] = mapped_column(String(20), nullable=False)  # unreadable | write_failed
    reason: Mapped[str] = mapped_column(Text, nullable=False)  # masked
    order_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("order_id", "integration_key", name="uq_intake_quarantine_order"),
        Index("ix_intake_quarantine_open", "resolved_at", "id"),
    )


class Cursor(Base):
    """Named cursors kept by Anubis itself (e.g. `anubis run`'s intake watermark)."""

    __tablename__ = "cursors"
    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class AlertState(Base):
    """The last state each health check or anomaly alert was seen in, so a state change (turned
    WARN or ERROR, or recovered) alerts once and a steady state never again (added).

    `scope` is the integration key (or `platform`); `name` the check (`success_rate`) or the
    anomaly (`anomaly:volume`, whose `state` is the day it last alerted)."""

    __tablename__ = "alert_states"
    scope: Mapped[str] = mapped_column(String(60), primary_key=True)
    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)  # the measured value and threshold, masked
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class PrivacyRequest(Base):
    """The audit trail of data-subject requests (LGPD art. 18; `maintenance/privacy.py`): what
    was done and when, never to whom. `subject_hash` is an HMAC of the CPF under
    `ANUBIS_PRIVACY_KEY` (NULL when no key is set), so only who holds the key can tell whether
    a given person's request was served; `counts` holds rows per table (added, issue 22)."""

    __tablename__ = "privacy_requests"
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)  # export | erase
    subject_hash: Mapped[str | None] = mapped_column(String(64))
    requested_via: Mapped[str] = mapped_column(String(20), nullable=False)  # cli | launchpad
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


class OutboxEvent(Base):
    """An event for other services, written in the transaction of the status change it
    announces and published to Kafka by `events.publisher` (added, issue 25). `id` orders
    the outbox (and is the event's `sequence`); `event_id` is what consumers dedupe on."""

    __tablename__ = "event_outbox"
    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), nullable=False)
    event_type: Mapped[str] = mapped_column(String(60), nullable=False)
    subscription_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    publish_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("event_id", name="uq_event_outbox_event_id"),
        # the publisher's queue: only the waiting rows, so a marked row leaves the index
        Index(
            "ix_event_outbox_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
    )


class PartnerBreaker(Base):
    """The circuit breaker of one partner API (`core/breaker.py`), shared by every process
    (added, issue 21). `api` is the client's name (`kroton`, `kroton-catalog`, `estacio`…);
    `integration_id` the integration whose run opened it (for the alerts' counts)."""

    __tablename__ = "partner_breakers"
    api: Mapped[str] = mapped_column(String(60), primary_key=True)
    phase: Mapped[str] = mapped_column(String(20), nullable=False, default="closed")
    streak: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    streak_ids: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)
    streak_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_probe_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    probe_seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    integration_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False
    )


__all__ = [
    "AlertState",
    "Base",
    "CatalogCacheEntry",
    "Cursor",
    "FollowUp",
    "IntakeQuarantine",
    "Integration",
    "IntegrationFilter",
    "IntegrationToken",
    "Name",
    "OutboxEvent",
    "PartnerBreaker",
    "PrivacyRequest",
    "RateLimitBucket",
    "RateLimitSlot",
    "Subscription",
    "SubscriptionEvent",
    "utcnow",
]
