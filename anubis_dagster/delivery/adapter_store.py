"""What adapters may ask of the app database, answered by the delivery layer.

Adapters talk to partners, not to our database: the few things one needs from it (Kroton's
gender hints for `fix_data`, a cache of catalog answers) are asked through `AdapterStore`
(defined in `integrations/base.py`), which this class implements over the app DB.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from anubis_dagster.db.models import CatalogCacheEntry, Name, Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster.db.upsert import upsert


class DbAdapterStore:
    """`AdapterStore` over the app DB, for one integration."""

    def __init__(self, db_url: str, integration_id: int) -> None:
        self.db_url = db_url
        self.integration_id = integration_id

    def gender_hint(self, first_name: str, exclude_id: int) -> tuple[str, str] | None:
        """(gender, source) for a first name: the most common gender among other
        subscriptions with it, else the IBGE census (`names`); None when neither knows it."""
        with session_scope(self.db_url) as session:
            same_name = session.execute(
                select(Subscription.gender, func.count())
                .where(
                    Subscription.first_name == first_name,
                    Subscription.gender.in_(("M", "F")),
                    Subscription.id != exclude_id,
                )
                .group_by(Subscription.gender)
                .order_by(func.count().desc())
            ).first()
            if same_name and same_name[0]:
                return str(same_name[0]), "same-name subscriptions"
            census = session.execute(
                select(Name.gender).where(Name.name == first_name).order_by(Name.frequency.desc())
            ).first()
            if census:
                return str(census[0]), "IBGE names"
        return None

    def cached_answer(self, key: str, max_age_seconds: float) -> Any | None:
        """A partner's answer stored under `key` less than `max_age_seconds` ago."""
        with session_scope(self.db_url) as session:
            cached = session.get(CatalogCacheEntry, key)
            fresh_since = datetime.now(UTC) - timedelta(seconds=max_age_seconds)
            if cached is not None and cached.fetched_at > fresh_since:
                return cached.response
        return None

    def remember_answer(self, key: str, answer: Any) -> None:
        with session_scope(self.db_url) as session:
            values = {
                "key": key,
                "integration_id": self.integration_id,
                "response": answer,
                "fetched_at": datetime.now(UTC),
            }
            upsert(session, CatalogCacheEntry, values, key=("key",))
