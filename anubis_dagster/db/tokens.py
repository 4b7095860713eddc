"""Access tokens cached in `integration_tokens`, shared by every process.

A token is reused until `margin` seconds before it expires; a 401 drops it (`invalidate`) and
the next call fetches a new one. Every token this process fetches or reads is registered for
redaction by value (issue 22), after it is stored. Two processes that miss at once both
fetch: harmless, each token is valid, and the later one is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from anubis_dagster.core.redaction import register_secrets
from anubis_dagster.db.models import IntegrationToken
from anubis_dagster.db.session import session_scope
from anubis_dagster.db.upsert import upsert

#: fetch() → (token, lifetime in seconds)
TokenFetcher = Callable[[], tuple[str, float]]


class TokenStore:
    def __init__(
        self,
        db_url: str,
        integration_id: int,
        key: str,
        fetch: TokenFetcher,
        *,
        margin_seconds: float = 60,
    ) -> None:
        self.db_url = db_url
        self.integration_id = integration_id
        self.key = key
        self._fetch = fetch
        self.margin = timedelta(seconds=margin_seconds)

    def get(self) -> str:
        now = datetime.now(UTC)
        with session_scope(self.db_url) as session:
            row = session.scalars(
                select(IntegrationToken).where(
                    IntegrationToken.integration_id == self.integration_id,
                    IntegrationToken.key == self.key,
                )
            ).one_or_none()
            if row is not None and row.valid_until > now:
                self._redacted(row.value)
                return row.value
        token, lifetime = self._fetch()
        # keep a margin, but never more than half the lifetime (short-lived tokens stay usable)
        margin = min(self.margin, timedelta(seconds=lifetime / 2))
        valid_until = datetime.now(UTC) + timedelta(seconds=lifetime) - margin
        with session_scope(self.db_url) as session:
            now = datetime.now(UTC)
            upsert(
                session,
                IntegrationToken,
                {
                    "integration_id": self.integration_id,
                    "key": self.key,
                    "value": token,
                    "valid_until": valid_until,
                    "created_at": now,
                    "updated_at": now,
                },
                key=("integration_id", "key"),
            )
        self._redacted(token)  # after the write: the cache must hold the real value
        return token

    def _redacted(self, token: str) -> None:
        """Redact `token` by value from now on in this process (logs, event rows, errors that
        quote it), like a configured secret; it replaces this store's previous token."""
        register_secrets([token], source=f"token:{self.integration_id}:{self.key}")

    def invalidate(self, token: str | None = None) -> None:
        """Drop the cached token (only if it is still `token`, when given)."""
        with session_scope(self.db_url) as session:
            query = delete(IntegrationToken).where(
                IntegrationToken.integration_id == self.integration_id,
                IntegrationToken.key == self.key,
            )
            if token is not None:
                query = query.where(IntegrationToken.value == token)
            session.execute(query)
