"""`anubis events tail`: the newest outbox events as JSON lines, masked (events carry no
personal data by design; masking is the last guard should a payload ever carry any)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from sqlalchemy.orm import Session

from anubis_dagster.core.events import iso
from anubis_dagster.core.masking import mask_data
from anubis_dagster.db import outbox


def tail_lines(session: Session, count: int) -> Iterator[str]:
    for row in outbox.latest(session, max(0, count)):
        state = (
            {"published_at": iso(row.published_at)}
            if row.published_at is not None
            else {"waiting": True, "attempts": row.publish_attempts, "error": row.last_error}
        )
        line = {"sequence": row.id, **state, "event": row.payload}
        yield json.dumps(mask_data(line), ensure_ascii=False, sort_keys=False)
