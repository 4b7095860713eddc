"""OAuth tokens fetched at run time are redacted by value (issue 22, item 4)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from anubis_dagster.core.masking import mask_data, mask_text
from anubis_dagster.db.models import Integration, IntegrationToken
from anubis_dagster.db.session import session_scope
from anubis_dagster.db.tokens import TokenStore


def integration_id(db_url: str) -> int:
    with session_scope(db_url) as session:
        row = Integration(key="tok", name="Tok", type="kroton", enabled=True, settings={})
        session.add(row)
        session.flush()
        return row.id


def test_a_fetched_token_is_redacted_by_value_and_still_cached_whole(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = iter(["tok-" + "9f8e7d6c5b4a" * 3, "tok-" + "0a1b2c3d4e5f" * 3])
    fetched: list[str] = []

    def fetch() -> tuple[str, float]:
        fetched.append(next(tokens))
        return fetched[-1], 3600

    owner = integration_id(db_url)
    store = TokenStore(db_url, owner, "oauth2", fetch)
    token = store.get()
    # the cache holds the real value (redaction at the cursor must not have replaced it)
    with session_scope(db_url) as session:
        stored = session.scalars(select(IntegrationToken.value)).one()
    assert stored == token
    assert store.get() == token and len(fetched) == 1  # served from the cache
    # anywhere else it shows up, it is redacted: error texts, structures, log lines
    assert token not in mask_text(f"partner said: token {token} expired")
    assert token not in str(mask_data({"detail": f"invalid {token}"}))
    with caplog.at_level(logging.INFO, logger="anubis.test"):
        logging.getLogger("anubis.test").info("retrying with %s", token)
    assert token not in caplog.text
    # a new token after a 401 is redacted too
    store.invalidate(token)
    second = store.get()
    assert second != token and second not in mask_text(f"Bearer-less {second}")
