"""Search everything Anubis writes or shows for secret values (issue 9: no secret is ever
stored or shown).

Tests set every secret variable to a unique marker (`marker_for(name)`), run real deliveries and
then call `find_markers`: every text column of every table of the app DB, every run (config,
tags) and every event of the Dagster instance's storage, and any captured texts (stdout/stderr,
the webhook sink, log records). Each marker is looked for in the spellings a secret takes on
its way out (as is, URL- and form-encoded, base64), so an encoded leak is found too. The fault
suite reuses it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import dagster as dg
from dagster._serdes import serialize_value
from sqlalchemy import MetaData, select

from anubis_dagster.db.session import get_engine

MARKER_SUFFIX = "7f3a"

#: every secret variable of the two IES (and the alert webhook, whose URL is a credential)
SECRET_VARIABLES = (
    "API_KROTON_SECRET",
    "API_KROTON_SUBSCRIPTION",
    "API_KROTON_PASSWORD",
    "CATALOG_KROTON_API_KEY",
    "API_ESTACIO_NEW_TOKEN",
    "API_ONETRUST_CLIENT_SECRET",
    "API_ONETRUST_TOKEN",
)


def marker_for(name: str) -> str:
    """A unique value for the secret variable `name`, which nothing else can contain."""
    return f"SECRET-MARKER-{name}-{MARKER_SUFFIX}"


@dataclass(frozen=True)
class Finding:
    where: str  # e.g. "app db subscription_events.request #12", "dagster event run abc…"
    marker: str
    excerpt: str  # the text around it, to see at once what leaked

    def __str__(self) -> str:
        return f"{self.marker} in {self.where}: …{self.excerpt}…"


def spellings(marker: str) -> set[str]:
    """The forms in which a secret can leave: as is, URL/form-encoded, and base64 at each of
    the three alignments it can have inside a longer encoded value (`Basic base64(id:secret)`)."""
    raw = marker.encode()
    found = {marker, quote(marker, safe=""), quote_plus(marker)}
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + raw).decode()
            # only the characters that depend on the marker alone
            found.add(encoded[-(-offset * 8 // 6) : (offset + len(raw)) * 8 // 6])
    return found


def _search(text: str, where: str, markers: Iterable[str]) -> list[Finding]:
    found = []
    for marker in markers:
        for spelling in spellings(marker):
            position = text.find(spelling)
            if position >= 0:
                excerpt = text[max(0, position - 60) : position + len(spelling) + 20]
                found.append(Finding(where, marker, excerpt))
                break
    return found


def scan_app_db(db_url: str, markers: Iterable[str]) -> list[Finding]:
    """Every column of every row of every table of the app DB, read as text."""
    markers = list(markers)
    metadata = MetaData()
    engine = get_engine(db_url)
    metadata.reflect(engine)
    found: list[Finding] = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)).mappings():
                for column, value in row.items():
                    if value is None or isinstance(value, int | float | bool):
                        continue
                    where = f"app db {table.name}.{column}"
                    found += _search(str(value), where, markers)
    return found


def scan_dagster(instance: dg.DagsterInstance, markers: Iterable[str]) -> list[Finding]:
    """Every run (its config and tags) and every event of every run in the instance's storage,
    serialised as Dagster stores them (messages, errors with their causes, metadata)."""
    markers = list(markers)
    found: list[Finding] = []
    for run in instance.get_runs():
        found += _search(serialize_value(run), f"dagster run {run.run_id}", markers)
        for entry in instance.all_logs(run.run_id):
            where = f"dagster event {entry.dagster_event_type or 'log'} of run {run.run_id[:8]}"
            found += _search(serialize_value(entry), where, markers)
    return found


def find_markers(
    db_url: str,
    instance: dg.DagsterInstance | None,
    texts: Mapping[str, str] | Iterable[str] = (),
    markers: Iterable[str] | None = None,
) -> list[Finding]:
    """Every place a marker shows up: the app DB, the Dagster instance, and `texts` (captured
    output, webhook messages…; a mapping names each text). Empty when nothing leaked."""
    markers = list(markers if markers is not None else map(marker_for, SECRET_VARIABLES))
    found = scan_app_db(db_url, markers)
    if instance is not None:
        found += scan_dagster(instance, markers)
    named = texts.items() if isinstance(texts, Mapping) else enumerate(texts)
    for name, text in named:
        found += _search(text, f"text {name}", markers)
    return found
