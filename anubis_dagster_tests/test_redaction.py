"""Redaction by value: every configured secret, in every spelling, is gone before any text is
stored or shown (issue 9 item 3)."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator
from urllib.parse import quote, quote_plus, urlencode

import pytest

from anubis_dagster.core import redaction
from anubis_dagster.core.masking import mask_data, mask_text
from anubis_dagster.core.redaction import (
    REDACTED,
    redact,
    redact_data,
    register_secrets,
    secret_values_from,
)

SECRET = "s3cr3t/Key+with spaces&é"


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Each test starts with only its own secrets, and the process registry is restored."""
    saved = set(redaction._secrets)
    redaction.clear_secrets()
    yield
    redaction.clear_secrets()
    register_secrets(saved)


@pytest.mark.parametrize(
    "spelling",
    [
        SECRET,
        quote(SECRET, safe=""),
        re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(SECRET, safe="")),
        quote_plus(SECRET),
        urlencode({"scope": SECRET}),
        json.dumps(SECRET),
        json.dumps(SECRET, ensure_ascii=False),
        json.dumps({"pontoColetaToken": SECRET}),
        base64.b64encode(SECRET.encode()).decode(),
    ],
)
def test_every_spelling_of_a_registered_secret_is_redacted(spelling: str) -> None:
    register_secrets([SECRET])
    text = f"before {spelling} after"
    redacted = redact(text)
    assert "s3cr3t" not in redacted
    assert REDACTED in redacted
    assert redacted.startswith("before ") and redacted.endswith(" after")


@pytest.mark.parametrize("client_id", ["", "a", "ab", "abc", "sandbox-client"])
def test_a_secret_inside_a_base64_blob_is_redacted_at_any_alignment(client_id: str) -> None:
    """`Basic base64(client_id:secret)`, even without its `Basic` prefix."""
    register_secrets([SECRET])
    blob = base64.b64encode(f"{client_id}:{SECRET}:tail".encode()).decode()
    redacted = redact(f"header {blob} end")
    assert blob not in redacted and REDACTED in redacted


def test_short_and_empty_values_are_not_registered() -> None:
    register_secrets(["", None, "abc", "   "])
    assert redaction.registered_count() == 0
    assert redact("abc abc") == "abc abc"


def test_longest_secret_wins_when_one_contains_another() -> None:
    register_secrets(["token-1234", "token-1234-extra"])
    assert redact("x token-1234-extra y") == f"x {REDACTED} y"


def test_unregistered_credentials_in_headers_and_urls_are_redacted() -> None:
    assert "abc123" not in redact("Authorization: Bearer eyJabc123.def")
    assert "dXNlcjpwYXNz" not in redact("Authorization: Basic dXNlcjpwYXNzMQ==")
    assert "k3y" not in redact("Authorization: apiKey k3y-99887766")
    assert redact("postgresql://anubis:hunter22@db:5432/anubis") == (
        f"postgresql://anubis:{REDACTED}@db:5432/anubis"
    )
    # prose and URLs without a password are left alone
    assert redact("Basic information, Bearer of news") == "Basic information, Bearer of news"
    assert redact("http://localhost:3000/runs/abc") == "http://localhost:3000/runs/abc"


@pytest.mark.parametrize(
    "key",
    [
        "secret",
        "client_secret",
        "token",
        "access_token",
        "pontoColetaToken",
        "password",
        "api_key",
        "apikey",
        "x-api-key",
        "subscription",
        "Ocp-Apim-Subscription-Key",
        "Authorization",
    ],
)
def test_values_under_secret_keys_are_redacted(key: str) -> None:
    data = {"outer": [{key: "opaque-value-1", "keep": "visible"}]}
    assert redact_data(data) == {"outer": [{key: REDACTED, "keep": "visible"}]}


@pytest.mark.parametrize("key", ["token_type", "subscription_id", "expires_in", "tokens", "id"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert redact_data({key: "bearer"}) == {key: "bearer"}


def test_numbers_under_a_secret_looking_key_are_ids_not_secrets() -> None:
    assert redact_data({"subscription": 42}) == {"subscription": 42}


def test_secret_values_from_the_environment() -> None:
    environ = {
        "API_KROTON_SECRET": "kroton-secret",
        "API_KROTON_SUBSCRIPTION": "kroton-subscription",
        "API_KROTON_PASSWORD": "kroton-password",
        "CATALOG_KROTON_API_KEY": "catalog-key",
        "API_ESTACIO_NEW_TOKEN": "estacio-token",
        "API_ONETRUST_CLIENT_SECRET": "onetrust-secret",
        "API_ONETRUST_TOKEN": "onetrust-token",
        "ANUBIS_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/XYZ",
        "ANUBIS_DATABASE_URL": "postgresql+psycopg://anubis:db%40pass@db/anubis",
        "ANUBIS_ORDERS_URL": "postgresql://reader@db/orders",
        "API_KROTON_RATE_LIMIT": "100/300",
        "API_ONETRUST_TIMEOUT_SECONDS": "20",
        "API_KROTON_CLIENT_ID": "client-id",
        "API_KROTON_BASE_URL": "https://api.kroton.example",
        "EMPTY_SECRET": "",
    }
    assert sorted(secret_values_from(environ)) == sorted(
        [
            "kroton-secret",
            "kroton-subscription",
            "kroton-password",
            "catalog-key",
            "estacio-token",
            "onetrust-secret",
            "onetrust-token",
            "https://hooks.slack.com/services/T0/B0/XYZ",
            "db@pass",
        ]
    )


def test_masking_redacts_first() -> None:
    """Every existing masking call (event rows, log lines, alerts) also redacts."""
    register_secrets(["kroton-subscription-key"])
    form = {"grant_type": "client_credentials", "scope": "kroton-subscription-key"}
    assert mask_data({"form": form})["form"]["scope"] == REDACTED
    assert "kroton-subscription-key" not in mask_text(
        "token call failed for scope=kroton-subscription-key CPF 529.982.247-25"
    )
    assert "529.982.247-25" not in mask_text("scope=kroton-subscription-key CPF 529.982.247-25")


def test_log_records_are_masked_as_they_are_created(caplog: pytest.LogCaptureFixture) -> None:
    """Any logger: our own lines lose secrets and personal data, a library's its secrets (httpx
    logs the webhook URL); a traceback attached to the record is masked too."""
    import anubis_dagster  # noqa: F401  (installs the record factory)

    register_secrets(["webhook-path-secret-42"])
    caplog.set_level(logging.INFO)
    logging.getLogger("anubis.test").info(
        "CPF %s via %s", "529.982.247-25", "webhook-path-secret-42"
    )
    logging.getLogger("some.library").info("POST http://h/services/webhook-path-secret-42")
    try:
        raise RuntimeError("token webhook-path-secret-42 refused")
    except RuntimeError:
        logging.getLogger("anubis.test").exception("call failed")
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "webhook-path-secret-42" not in text
    assert "529.982.247-25" not in text
    assert "***.982.247-**" in text
    assert "http://h/services/[redacted]" in text
    assert "RuntimeError: token [redacted] refused" in text


def test_database_writes_are_redacted_and_reads_untouched(db_url: str) -> None:
    """Whatever writes a secret (ORM, core insert, raw SQL), the database never receives it; a
    query's parameters are left alone."""
    from sqlalchemy import text

    import anubis_dagster  # noqa: F401  (installs the cursor hook)
    from anubis_dagster.db.models import SubscriptionEvent
    from anubis_dagster.db.session import get_engine, session_scope

    register_secrets(["db-write-secret-77"])
    with session_scope(db_url) as session:
        session.add(
            SubscriptionEvent(
                kind="note",
                operation_name="raw",
                error_message="raw db-write-secret-77 text",
                request={"form": {"scope": "db-write-secret-77"}, "n": 1},
            )
        )
    with get_engine(db_url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscription_events"
                " (kind, operation_name, model, error_message, created_at, updated_at) VALUES"
                " ('note', 'core', 'Subscription', :message, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"message": "Bearer abc123def456 and db-write-secret-77"},
        )
        rows = connection.execute(
            text("SELECT operation_name, error_message, request FROM subscription_events")
        ).all()
        # a SELECT comparing with a secret still compares with the secret itself
        matches = connection.execute(
            text("SELECT count(*) FROM subscription_events WHERE error_message = :m"),
            {"m": "db-write-secret-77"},
        ).scalar()
    stored = " ".join(str(value) for row in rows for value in row)
    assert "db-write-secret-77" not in stored
    assert "abc123def456" not in stored
    assert "raw [redacted] text" in stored
    assert "Bearer [redacted]" in stored
    request = next(
        json.loads(r[2]) if isinstance(r[2], str) else r[2] for r in rows if r[0] == "raw"
    )
    assert request == {"form": {"scope": REDACTED}, "n": 1}
    assert matches == 0


@pytest.mark.parametrize(
    ("value", "registered"),
    [
        ("sqlite:////tmp/x/anubis.db", set()),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/anubis", set()),
        ("http://127.0.0.1:3000/", set()),
        (
            "postgresql://anubis:pw-1234@db/anubis",
            {"pw-1234", "postgresql://anubis:pw-1234@db/anubis"},
        ),
        (
            "https://hooks.slack.com/services/T0/B0/XYZ",
            {"https://hooks.slack.com/services/T0/B0/XYZ", "/services/T0/B0/XYZ"},
        ),
        ("plain-secret", {"plain-secret"}),
    ],
)
def test_a_url_is_a_secret_only_for_its_credentials(value: str, registered: set[str]) -> None:
    register_secrets([value])
    assert redaction._secrets == registered


def test_a_source_replaces_its_own_values() -> None:
    """Settings reloaded with new values (tests) leave no stale secrets behind; values given
    without a source stay."""
    register_secrets(["kept-forever"])
    register_secrets(["first-settings"], source="settings")
    register_secrets(["second-settings"], source="settings")
    assert redaction._secrets == {"kept-forever", "second-settings"}
    assert redact("first-settings second-settings") == f"first-settings {REDACTED}"
