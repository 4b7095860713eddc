"""Which integrations run in shadow, read without the delivery machinery: `anubis status`
starts light (no Dagster, no HTTP client), so it reads the mode here, not in `shadow.py`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from anubis_dagster.db.models import Integration


def shadow_modes(session: Session) -> dict[str, datetime]:
    """key → shadow since, of every integration in shadow."""
    rows = session.execute(
        select(Integration.key, Integration.shadow_since)
        .where(Integration.shadow_since.is_not(None))
        .order_by(Integration.key)
    )
    return {key: since for key, since in rows if since is not None}
