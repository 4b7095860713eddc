"""Readers of what the legacy services know, as `LegacyRecord`s (no Dagster, no app DB).

- `KrotonLegacyReader`: Kroton's Node service's PostgreSQL (seed 001): `subscriptions` (one row
  per student it handled, with its status) and `follow_ups` (Kroton's inscription id
  `kroton_subscription_id` and Kroton's answer in `source`). The seed gives no order id and
  leaves some names unknown, so every table and column name is configurable
  (`KrotonColumns`, setting `ANUBIS_LEGACY_KROTON_COLUMNS`). Read in id order with keyset
  pages (bounded memory for millions of rows); the follow-ups of a page with one query.
- `CsvLegacyReader`: the documented export of any other legacy (Estácio's): a header line and
  `order_id,cpf,integration,status,partner_id,sent_at`. Checked whole before anything is read
  (`check()`): each bad line is reported with its line number and field, like `anubis orders
  load`; the importer imports nothing if any line is bad unless told to skip them.

Both are used by the importer (`legacy/importer.py`) and by the shadow comparison.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from anubis_dagster.core.field_rules import check_cpf
from anubis_dagster.db.session import normalize_url
from anubis_dagster.legacy.mapping import map_status
from anubis_dagster.legacy.records import LegacyRecord

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value or ""))


def parse_time(value: Any) -> datetime | None:
    """A legacy timestamp as an aware UTC datetime (naive ones are taken as UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        stamp = value
    else:
        stamp = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


@dataclass(frozen=True)
class KrotonColumns:
    """Names of the legacy Kroton tables and columns (defaults: seed 001's interface)."""

    subscriptions: str = "subscriptions"
    id: str = "id"
    cpf: str = "cpf"
    status: str = "status"
    sent_at: str = "sent_at"
    follow_ups: str = "follow_ups"
    follow_up_id: str = "id"
    follow_up_subscription_id: str = "subscription_id"
    kroton_subscription_id: str = "kroton_subscription_id"
    kroton_subscription_dealer_id: str = "kroton_subscription_dealer_id"
    source: str = "source"
    follow_up_created_at: str = "created_at"

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not _IDENTIFIER.fullmatch(value):
                raise ValueError(f"legacy Kroton column {item.name}: {value!r} is not a name")

    @classmethod
    def parse(cls, spec: str | None) -> KrotonColumns:
        """`name=column,name=column` (e.g. `sent_at=synced_at,follow_ups=kroton_follow_ups`)."""
        columns = cls()
        if not spec or not spec.strip():
            return columns
        known = {item.name for item in fields(cls)}
        changes: dict[str, str] = {}
        for part in spec.split(","):
            name, sep, value = part.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or name not in known:
                raise ValueError(
                    f"legacy Kroton columns: {part.strip()!r} is not NAME=COLUMN with NAME one "
                    f"of {', '.join(sorted(known))}"
                )
            changes[name] = value
        return replace(columns, **changes)


class KrotonLegacyReader:
    """Kroton's legacy PostgreSQL (or any SQLAlchemy URL holding the same tables)."""

    integration = "kroton"

    def __init__(
        self,
        database_url: str,
        columns: KrotonColumns | None = None,
        *,
        engine: Engine | None = None,
    ) -> None:
        self.columns = columns or KrotonColumns()
        self._engine = engine or create_engine(normalize_url(database_url), hide_parameters=True)
        self.skipped: dict[str, int] = {}  # rows the reader could not read, by reason

    def count(self) -> int:
        c = self.columns
        with self._engine.connect() as connection:
            return int(connection.scalar(text(f"SELECT count(*) FROM {c.subscriptions}")) or 0)  # nosec B608: names checked by KrotonColumns (_IDENTIFIER); values are bound

    def batches(self, batch_size: int) -> Iterator[list[LegacyRecord]]:
        c = self.columns
        page = text(
            f"SELECT {c.id}, {c.cpf}, {c.status}, {c.sent_at} FROM {c.subscriptions} "  # nosec B608: names checked by KrotonColumns (_IDENTIFIER); values are bound
            f"WHERE {c.id} > :after ORDER BY {c.id} LIMIT :limit"
        )
        after: Any = -(2**63)
        while True:
            with self._engine.connect() as connection:
                rows = connection.execute(page, {"after": after, "limit": batch_size}).all()
                if not rows:
                    return
                after = rows[-1][0]
                history = self._follow_ups(connection, [row[0] for row in rows])
            records = []
            for legacy_id, cpf, status, sent_at in rows:
                record = self._record(legacy_id, cpf, status, sent_at, history.get(legacy_id, []))
                if record is not None:
                    records.append(record)
            yield records

    def _follow_ups(self, connection: Any, ids: list[Any]) -> dict[Any, list[dict[str, Any]]]:
        c = self.columns
        low, high = min(ids), max(ids)  # ids are a page of consecutive keys: a range scan
        query = text(
            f"SELECT {c.follow_up_subscription_id}, {c.kroton_subscription_id}, "  # nosec B608: names checked by KrotonColumns (_IDENTIFIER); values are bound
            f"{c.kroton_subscription_dealer_id}, {c.source}, {c.follow_up_created_at} "
            f"FROM {c.follow_ups} WHERE {c.follow_up_subscription_id} BETWEEN :low AND :high "
            f"ORDER BY {c.follow_up_subscription_id}, {c.follow_up_created_at}, {c.follow_up_id}"
        )
        found: dict[Any, list[dict[str, Any]]] = {}
        for sid, partner_id, dealer_id, source, created_at in connection.execute(
            query, {"low": low, "high": high}
        ):
            if isinstance(source, str):
                try:
                    source = json.loads(source)
                except ValueError:
                    source = {"text": source[:2000]}
            found.setdefault(sid, []).append(
                {
                    "at": _iso(created_at),
                    # keys without "subscription": a word the write-time redaction looks for
                    "partner_id": None if partner_id is None else str(partner_id),
                    "dealer_id": None if dealer_id is None else str(dealer_id),
                    "source": source,
                }
            )
        return found

    def _record(
        self, legacy_id: Any, cpf: Any, status: Any, sent_at: Any, history: list[dict[str, Any]]
    ) -> LegacyRecord | None:
        digits = cpf if isinstance(cpf, str) and len(cpf) == 11 and cpf.isdigit() else _digits(cpf)
        if check_cpf(digits) is not None:
            self._skip("CPF missing or not valid")
            return None
        word = str(status or "").strip().lower()
        try:
            sent = parse_time(sent_at)
        except ValueError:
            sent = None
        partner = next(
            (h["partner_id"] for h in reversed(history) if h["partner_id"]),
            None,
        )
        return LegacyRecord(
            integration=self.integration,
            legacy_id=str(legacy_id),
            cpf=digits,
            legacy_status=word,
            partner_id=partner,
            sent_at=sent,
            history=tuple(history),
        )

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _iso(value: Any) -> str | None:
    try:
        stamp = parse_time(value)
    except ValueError:
        return str(value)
    return stamp.isoformat() if stamp else None


CSV_COLUMNS = ("order_id", "cpf", "integration", "status", "partner_id", "sent_at")


@dataclass
class CsvCheck:
    """A CSV checked whole: its good records and each bad line's problem."""

    records: list[LegacyRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    repeated: int = 0


class CsvLegacyReader:
    """The documented legacy CSV (see the module docstring and docs/cutover.md).

    - `order_id`: the order's id, when the legacy knows it (then intake sees that order as
      already handled); else empty, and the student is matched on `cpf`
    - `cpf`: the student's CPF (formatted or digits), required, with valid check digits
    - `integration`: our key (`estacio`…); must be the one imported
    - `status`: a legacy status word (`registered`, `failed`… see `legacy/mapping.py`)
    - `partner_id`: the partner's inscription id (empty if none)
    - `sent_at`: ISO 8601 time the legacy sent it (empty if never; naive = UTC)
    """

    def __init__(self, path: str | Path, integration: str) -> None:
        self.path = Path(path)
        self.integration = integration

    def check(self) -> CsvCheck:
        result = CsvCheck()
        seen: dict[str, tuple[int, tuple[Any, ...]]] = {}
        try:
            handle = self.path.open(newline="", encoding="utf-8-sig")
        except OSError as exc:
            result.errors.append(f"{self.path}: cannot read ({exc.strerror or exc})")
            return result
        with handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                result.errors.append(
                    f"line 1: header lacks {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})"
                )
                return result
            reader.fieldnames = header
            try:
                for row in reader:
                    line = reader.line_num
                    record, problem = self._parse(row)
                    if problem is not None:
                        result.errors.append(f"line {line}: {problem}")
                        continue
                    assert record is not None
                    key = record.legacy_id
                    shape = (record.cpf, record.legacy_status, record.partner_id, record.sent_at)
                    if key in seen:
                        first, first_shape = seen[key]
                        if first_shape == shape:
                            result.repeated += 1
                        else:
                            result.errors.append(
                                f"line {line}: {_key_label(record)} already on line {first} "
                                "with different values"
                            )
                        continue
                    seen[key] = (line, shape)
                    result.records.append(record)
            except (csv.Error, UnicodeDecodeError) as exc:
                result.errors.append(f"line {reader.line_num}: not readable CSV ({exc})")
        return result

    def _parse(self, row: Mapping[str, Any]) -> tuple[LegacyRecord | None, str | None]:
        if None in row:  # more values than columns
            return None, "more values than the header has columns"
        values = {k: (v or "").strip() for k, v in row.items() if k is not None}
        integration = values.get("integration", "")
        if integration != self.integration:
            return None, f"integration: {integration!r} is not {self.integration!r}"
        digits = _digits(values.get("cpf"))
        if not values.get("cpf"):
            return None, "cpf: required"
        if check_cpf(digits) is not None:
            return None, "cpf: not a valid CPF"
        status = values.get("status", "")
        if map_status(status) is None:
            return None, f"status: {status[:40]!r} is not a legacy status (see docs/cutover.md)"
        order_text = values.get("order_id", "")
        order_id: int | None = None
        if order_text:
            if not order_text.isdigit() or not 0 < int(order_text) < 2**63:
                return None, f"order_id: {order_text[:30]!r} is not a positive integer"
            order_id = int(order_text)
        try:
            sent_at = parse_time(values.get("sent_at"))
        except ValueError:
            return None, f"sent_at: {values.get('sent_at', '')[:40]!r} is not an ISO 8601 time"
        partner = values.get("partner_id") or None
        if partner is not None and len(partner) > 80:
            return None, "partner_id: longer than 80 characters"
        return (
            LegacyRecord(
                integration=self.integration,
                legacy_id=str(order_id) if order_id is not None else f"cpf:{digits}",
                cpf=digits,
                legacy_status=status.strip().lower(),
                order_id=order_id,
                partner_id=partner,
                sent_at=sent_at,
                history=(
                    {
                        "at": sent_at.isoformat() if sent_at else None,
                        "status": status.strip().lower(),
                        "partner_id": partner,
                    },
                ),
            ),
            None,
        )

    def batches(self, batch_size: int) -> Iterator[list[LegacyRecord]]:
        """The good records (bad lines left out: call `check()` first to refuse them)."""
        records = self.check().records
        for start in range(0, len(records), batch_size):
            yield records[start : start + batch_size]


def _key_label(record: LegacyRecord) -> str:
    return f"order {record.order_id}" if record.order_id is not None else "this CPF"
