"""The shadow comparison as a plain function (no database, no Dagster): every category on a
prepared mismatch, matching by order id and by CPF, masking, the period's edges."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from anubis_dagster.legacy.records import LegacyReader, LegacyRecord
from anubis_dagster.legacy.shadow_report import (
    AnubisRecord,
    PeriodError,
    compare,
    legacy_records,
    parse_period,
    payload_differences,
)
from anubis_dagster_tests.factories import make_cpf

SINCE = datetime(2026, 12, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=1)
NOON = SINCE + timedelta(hours=12)
PAYLOAD = {
    "nomeCandidato": "Maria Aparecida dos Santos",
    "cpfCandidato": make_cpf(1),
    "codCurso": "1234",
    "endereco": {"cep": "01310100", "numero": "1000"},
}


class ListReader:
    """A legacy source over a list, in batches like the real readers."""

    def __init__(self, records: list[LegacyRecord]) -> None:
        self.records = records

    def batches(self, batch_size: int) -> Iterator[list[LegacyRecord]]:
        for start in range(0, len(self.records), batch_size):
            yield self.records[start : start + batch_size]


def ours(sid: int, order: int, status: str, *, integration: str = "estacio", **kw: object):
    return AnubisRecord(
        integration=integration,
        subscription_id=sid,
        order_id=order,
        cpf=kw.pop("cpf", make_cpf(order)),  # type: ignore[arg-type]
        status=status,
        created_at=kw.pop("created_at", NOON),  # type: ignore[arg-type]
        reason=kw.pop("reason", None),  # type: ignore[arg-type]
        payload=kw.pop("payload", None),  # type: ignore[arg-type]
    )


def legacy(order: int | None, status: str = "registered", **kw: object) -> LegacyRecord:
    return LegacyRecord(
        integration=str(kw.pop("integration", "estacio")),
        legacy_id=f"L{order}",
        cpf=str(kw.pop("cpf", make_cpf(order or 0))),
        legacy_status=status,
        order_id=order,
        partner_id=kw.pop("partner_id", "P1" if status == "registered" else None),  # type: ignore[arg-type]
        sent_at=kw.pop("sent_at", NOON + timedelta(minutes=5) if status == "registered" else None),  # type: ignore[arg-type]
        payload=kw.pop("payload", None),  # type: ignore[arg-type]
    )


def prepared() -> tuple[list[AnubisRecord], ListReader]:
    anubis = [
        ours(1, 1, "shadowed", payload=PAYLOAD),  # both sent, one field differs
        ours(2, 2, "shadowed", payload=PAYLOAD),  # both sent, same payload
        ours(3, 3, "invalid", reason="base_user.cpf: CPF 529.982.247-25 is not valid"),
        ours(4, 4, "shadowed", integration="kroton"),  # the legacy sent it as Estácio's
        ours(5, 5, "duplicate", reason="another active subscription holds this CPF"),
        ours(6, 6, "to_register"),  # not sent yet
        ours(7, 7, "register_failed", reason="offer not found (MS004)"),
        ours(8, 8, "shadowed", payload=PAYLOAD),  # only Anubis: no legacy record
        ours(9, 9, "shadowed", payload=PAYLOAD),  # only Anubis: the legacy has it failed
        ours(12, 12, "shadowed", cpf=make_cpf(40), integration="kroton"),
        ours(13, 13, "shadowed", created_at=SINCE - timedelta(hours=2)),  # before the period
    ]
    changed = {**PAYLOAD, "codCurso": "9999", "nomeCandidato": "Maria Aparecida Santos"}
    records = [
        legacy(1, payload=changed),
        legacy(2, payload=dict(PAYLOAD)),
        legacy(3),
        legacy(4),
        legacy(5),
        legacy(6),
        legacy(7),
        legacy(9, "empty_course"),
        legacy(10),  # paid in the orders source, no subscription: filtered out
        legacy(11),  # not paid there
        legacy(20),  # no such order
        legacy(None, cpf=make_cpf(40), integration="kroton"),  # another integration's
        legacy(None, cpf=make_cpf(41)),  # CPF only, never seen
        legacy(13, sent_at=SINCE - timedelta(hours=1)),  # sent before the period
    ]
    return anubis, ListReader(records)


def lookup(ids: list[int]) -> dict[int, str]:
    return {i: s for i, s in {10: "paid", 11: "not_paid"}.items() if i in ids}


def test_every_category_on_a_prepared_mismatch() -> None:
    anubis, reader = prepared()
    report = compare(
        anubis,
        legacy_records(reader, batch_size=3),
        integration="estacio",
        since=SINCE,
        until=UNTIL,
        order_lookup=lookup,
    )
    assert report.both.count == 2
    assert report.compared_payloads == 2 and report.differing_payloads == 1
    assert dict(report.field_counts) == {"codCurso": 1, "nomeCandidato": 1}
    assert report.only_legacy_reasons == {
        "invalid": 1,
        "routed elsewhere": 1,
        "duplicate": 1,
        "not sent yet (to_register)": 1,
        "refused (register_failed)": 1,
        "not routed": 1,
        "not paid in the orders source": 1,
        "not seen": 2,
    }
    assert report.only_legacy.count == 9
    whys = {row["order"]: row["why"] for row in report.only_legacy.examples}
    assert whys[3].startswith("invalid: base_user.cpf")
    assert whys[4] == "routed elsewhere (to kroton)"
    assert whys[10] == "not routed: filtered out by the integrations file"
    assert whys[20] == "not seen: no such order in the orders source"
    assert whys[7] == "refused (register_failed): offer not found (MS004)"
    only_anubis = {row["order"]: row["why"] for row in report.only_anubis.examples}
    assert only_anubis == {
        8: "the legacy has no record of it",
        9: "the legacy has it as empty_course",
    }
    assert not report.ready
    assert report.legacy_read == 13  # the Kroton record is not this comparison's


def test_the_report_is_masked() -> None:
    anubis, reader = prepared()
    report = compare(
        anubis, legacy_records(reader), integration="estacio", since=SINCE, until=UNTIL
    )
    text = report.to_markdown()
    for heading in (
        "Only the legacy sent",
        "Only Anubis would send",
        "Payload differences",
        "Both sent",
        "`codCurso`",
    ):
        assert heading in text
    for order in range(1, 42):
        cpf = make_cpf(order)
        assert cpf not in text and f"{cpf[:3]}.{cpf[3:6]}" not in text
    assert "529.982.247-25" not in text
    assert "Maria" not in text and "Aparecida" not in text
    assert "| `codCurso` | 1 |" in text
    assert "| #1 | 1 | codCurso | 1234 | 9999 |" in text


def test_matching_by_cpf_when_the_legacy_has_no_order_id() -> None:
    anubis = [
        ours(1, 1, "shadowed", integration="kroton", payload={"sexo": "F"}),
        ours(2, 2, "invalid", integration="kroton", reason="missing offer"),
    ]
    records = [
        legacy(None, cpf=make_cpf(1), integration="kroton", payload={"sexo": "NI"}),
        legacy(None, cpf=make_cpf(2), integration="kroton"),
    ]
    report = compare(anubis, records, integration="kroton", since=SINCE, until=UNTIL)
    assert report.both.count == 1 and report.field_counts == {"sexo": 1}
    assert report.only_legacy_reasons == {"invalid": 1}
    assert report.only_anubis.count == 0


def test_agreement_is_ready() -> None:
    anubis = [ours(1, 1, "shadowed", payload=PAYLOAD), ours(2, 2, "invalid")]
    records = [legacy(1, payload={**PAYLOAD, "codCurso": 1234}), legacy(2, "failed")]
    report = compare(anubis, records, integration="estacio", since=SINCE, until=UNTIL)
    assert report.ready and report.both.count == 1 and report.neither == 1
    assert "Ready to go live" in report.to_markdown()


def test_payload_differences_name_missing_fields_and_mask_values() -> None:
    found = payload_differences(
        {"cpf": make_cpf(1), "curso": {"codigo": "1"}}, {"cpf": make_cpf(2), "turno": "N"}
    )
    by_field = {d.field: d for d in found}
    assert set(by_field) == {"cpf", "curso.codigo", "turno"}
    assert make_cpf(1) not in str(by_field["cpf"].anubis)
    assert by_field["turno"].anubis is None and by_field["turno"].legacy == "N"


def test_period_parsing() -> None:
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert parse_period(None, None, now) == (now - timedelta(days=1), now)
    assert parse_period("2026-12-01", "2026-12-02T00:00:00+00:00", now) == (SINCE, UNTIL)
    with pytest.raises(PeriodError, match="since: must be before until"):
        parse_period("2026-12-02", "2026-12-01", now)
    with pytest.raises(PeriodError, match="until: not an ISO 8601"):
        parse_period(None, "yesterday", now)


def test_the_in_test_reader_is_a_legacy_reader() -> None:
    reader: LegacyReader = ListReader([])
    assert list(legacy_records(reader)) == []
