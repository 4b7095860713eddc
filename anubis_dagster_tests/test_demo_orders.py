"""The demo order generator: deterministic, realistic, in step with the demo catalog, and broken
exactly where its answer key says."""

from __future__ import annotations

import csv
import itertools
import json
import unicodedata
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from stdnum.br import cpf as stdnum_cpf

from anubis_dagster.core.orders import ORIGINS, digits
from anubis_dagster.core.validation import validate_order
from anubis_dagster.intake.orders_source import read_jsonl
from anubis_sandboxes.demo import catalog
from anubis_sandboxes.demo.orders import (
    DEFECTS,
    DUPLICATE_CPF,
    IBGE_NAMES_PATH,
    NAMES_OUTSIDE_CENSUS,
    VALID,
    WYDEN_EDUCATION_GROUP_ID,
    generate_orders,
    generate_orders_with_truth,
    main,
    marketplace_offers,
    write_jsonl,
)

# What every integration of the demo requires of the address (config/integrations.yaml).
ADDRESS_FIELDS = tuple(
    f"base_user.address.{key}" for key in ("zipcode", "address", "address_number", "city", "state")
)
# The field validation must flag for each defect.
DEFECT_FIELDS = {
    "cpf_check_digit": "base_user.cpf",
    "cpf_repeated_digits": "base_user.cpf",
    "email_malformed": "base_user.email",
    "phone_too_short": "base_user.phone_number",
    "birth_date_before_1900": "base_user.birth_date",
    "birth_date_too_recent": "base_user.birth_date",
    "cep_invalid": "base_user.address.zipcode",
    "missing_full_name": "base_user.full_name",
    "missing_address": "base_user.address.zipcode",
}
ESTACIO_KEYS = ("codCurso", "codCampus", "codCampusPai", "numHabilitacao", "codTurno")


@pytest.fixture(scope="module")
def demo() -> tuple[list[dict[str, Any]], dict[int, str]]:
    """The 60-order demo, as `make demo` generates it."""
    return generate_orders_with_truth(60, seed=42)


@pytest.fixture(scope="module")
def many() -> tuple[list[dict[str, Any]], dict[int, str]]:
    return generate_orders_with_truth(5000, seed=7)


def census_key(first_name: str) -> str:
    """How IBGE spells a first name: upper case, no accents."""
    return unicodedata.normalize("NFKD", first_name).encode("ascii", "ignore").decode().upper()


def group_of(order: dict[str, Any]) -> str:
    offer = order["offer"]
    if offer["university_id"] in catalog.KROTON_UNIVERSITY_IDS:
        return "kroton"
    if offer["university_id"] == catalog.UNROUTED_UNIVERSITY_ID:
        return "unrouted"
    return "estacio"


def test_same_seed_same_orders_and_another_seed_other_orders() -> None:
    first = generate_orders_with_truth(200, seed=3)
    assert generate_orders_with_truth(200, seed=3) == first
    assert generate_orders(200, seed=3) == first[0]
    assert generate_orders(200, seed=4) != first[0]


def test_the_60_order_demo_has_every_defect_and_a_couple_of_repeat_students(demo) -> None:
    orders, truth = demo
    counts = Counter(truth.values())
    assert set(DEFECTS) <= set(counts)
    assert all(counts[defect] == 1 for defect in DEFECTS)  # one each, round-robin
    assert counts[DUPLICATE_CPF] >= 2
    assert sorted(truth) == [order["id"] for order in orders]


def test_about_invalid_share_of_orders_are_invalid_round_robin(many) -> None:
    _, truth = many
    counts = Counter(truth.values())
    invalid = sum(counts[d] for d in DEFECTS)
    assert invalid == 500
    assert max(counts[d] for d in DEFECTS) - min(counts[d] for d in DEFECTS) <= 1
    assert 0.01 <= counts[DUPLICATE_CPF] / 5000 <= 0.03


def test_no_invalid_orders_when_asked_for_none() -> None:
    _, truth = generate_orders_with_truth(100, invalid_share=0, duplicate_share=0)
    assert set(truth.values()) == {VALID}
    with pytest.raises(ValueError):
        generate_orders(10, invalid_share=1.5)


def test_shares_per_ies_and_origin(many) -> None:
    orders, _ = many
    groups = Counter(group_of(order) for order in orders)
    assert groups["kroton"] / len(orders) == pytest.approx(0.50, abs=0.03)
    assert groups["estacio"] / len(orders) == pytest.approx(0.35, abs=0.03)
    assert groups["unrouted"] / len(orders) == pytest.approx(0.15, abs=0.03)
    wyden = [o for o in orders if o["offer"]["university_id"] in catalog.WYDEN_UNIVERSITY_IDS]
    assert wyden and all(
        o["offer"]["education_group_id"] == WYDEN_EDUCATION_GROUP_ID for o in wyden
    )
    origins = Counter(order["origin"] for order in orders)
    assert set(origins) == set(ORIGINS)
    assert origins.most_common(1)[0][0] == "quero_bolsa"
    levels = Counter(order["offer"]["course"]["level"] for order in orders)
    assert set(levels) == {"Graduação", "Segunda Graduação", "Técnico", "Pós-técnico"}
    kinds = Counter(order["offer"]["course"]["kind"] for order in orders)
    assert set(kinds) == {"Presencial", "EaD"}


def test_cpfs_validate_except_the_broken_ones(many) -> None:
    orders, truth = many
    formats = Counter()
    for order in orders:
        cpf = order["base_user"]["cpf"]
        number = digits(cpf)
        formats["formatted" if "." in cpf else "digits"] += 1
        kind = truth[order["id"]]
        if kind == "cpf_check_digit":
            assert len(number) == 11 and not stdnum_cpf.is_valid(number)
        elif kind == "cpf_repeated_digits":
            # stdnum accepts 111.111.111-11 (the arithmetic works); Anubis's own rule must not.
            assert len(number) == 11 and len(set(number)) == 1
        else:
            assert stdnum_cpf.is_valid(number), order["id"]
    assert formats["formatted"] > 1000 and formats["digits"] > 1000


def test_a_repeat_student_reuses_an_earlier_cpf_at_the_same_ies(many) -> None:
    orders, truth = many
    first_seen: dict[str, dict[str, Any]] = {}
    for order in orders:
        number = digits(order["base_user"]["cpf"])
        if truth[order["id"]] == DUPLICATE_CPF:
            earlier = first_seen[number]
            assert earlier["id"] < order["id"]
            assert truth[earlier["id"]] == VALID
            assert earlier["base_user"] == order["base_user"]
            assert earlier["offer"]["education_group_id"] == order["offer"]["education_group_id"]
        elif truth[order["id"]] != "cpf_repeated_digits":
            assert number not in first_seen, "only repeat students share a CPF"
            first_seen[number] = order


def test_updated_at_strictly_increasing_utc_from_start_time() -> None:
    start = datetime(2027, 1, 5, 8, 30, tzinfo=UTC)
    orders = generate_orders(500, seed=9, start_id=1000, start_time=start)
    assert [o["id"] for o in orders] == list(range(1000, 1500))
    stamps = [datetime.fromisoformat(o["updated_at"]) for o in orders]
    assert stamps[0] == start
    assert all(a < b for a, b in itertools.pairwise(stamps))
    assert all((b - a).total_seconds() <= 120 for a, b in itertools.pairwise(stamps))
    for order in orders:
        assert order["updated_at"].endswith("+00:00")
        assert datetime.fromisoformat(order["created_at"]) < datetime.fromisoformat(
            order["updated_at"]
        )
        assert order["checkout_step"] == "paid"
        assert order["price"] == order["offer"]["offered_price"]


def test_kroton_and_estacio_offers_match_the_demo_catalog(many) -> None:
    orders, _ = many
    kroton_keys = {
        (
            c["dsCurso"],
            c["idUnidadeOrigem"],
            c["dsTipoCurso"],
            c["dsModalidade"],
            c["vlMensalidadeDe"],
        )
        for c in catalog.KROTON_COURSES
    }
    estacio = {tuple(e[k] for k in ESTACIO_KEYS): e for e in catalog.ESTACIO_OFFERS}
    seen_kroton, seen_estacio = set(), set()
    for order in orders:
        offer, course = order["offer"], order["offer"]["course"]
        meta = offer["metadata"]
        assert course["university_offer"]["enrollment_semester"] == "2027.1"
        if group_of(order) == "kroton":
            assert offer["education_group_id"] == catalog.KROTON_EDUCATION_GROUP_ID
            assert set(meta) == {
                "idUnidadeOrigem",
                "dsTipoCurso",
                "dsModalidade",
                "vlMensalidadeDe",
                "periodoCaptacao",
            }
            key = (
                course["name"],
                meta["idUnidadeOrigem"],
                meta["dsTipoCurso"],
                meta["dsModalidade"],
                meta["vlMensalidadeDe"],
            )
            assert key in kroton_keys
            assert meta["periodoCaptacao"] == catalog.CAPTURE_PERIOD
            assert (
                course["kind"] == {"PRESENCIAL": "Presencial", "EAD": "EaD"}[meta["dsModalidade"]]
            )
            expected_levels = (
                {"Técnico"}
                if meta["dsTipoCurso"] == "TECNICO"
                else {"Graduação", "Segunda Graduação"}
            )
            assert course["level"] in expected_levels
            seen_kroton.add(key)
        elif group_of(order) == "estacio":
            assert set(meta) == set(ESTACIO_KEYS)
            entry = estacio[tuple(meta[k] for k in ESTACIO_KEYS)]
            assert offer["university_id"] == entry["university_id"]
            assert (course["name"], course["kind"]) == (entry["course"], entry["kind"])
            expected_group = (
                WYDEN_EDUCATION_GROUP_ID
                if entry["university_id"] in catalog.WYDEN_UNIVERSITY_IDS
                else catalog.ESTACIO_EDUCATION_GROUP_ID
            )
            assert offer["education_group_id"] == expected_group
            seen_estacio.add(entry["codCurso"])
        else:
            assert offer["education_group_id"] not in (
                catalog.KROTON_EDUCATION_GROUP_ID,
                catalog.ESTACIO_EDUCATION_GROUP_ID,
            )
    # Every catalog course is sold, including the ones the sandboxes refuse.
    assert seen_kroton == kroton_keys
    assert seen_estacio == {e["codCurso"] for e in catalog.ESTACIO_OFFERS}


def test_marketplace_offers_have_unique_ids_and_are_fresh_copies() -> None:
    offers = marketplace_offers()
    assert len({o["id"] for o in offers}) == len(offers)
    assert len({o["uuid"] for o in offers}) == len(offers)
    offers[0]["course"]["campus"]["name"] = "changed"
    assert marketplace_offers()[0]["course"]["campus"]["name"] != "changed"


def test_valid_students_live_at_known_ceps(many) -> None:
    orders, truth = many
    for order in orders:
        if truth[order["id"]] not in (VALID, DUPLICATE_CPF):
            continue
        address = order["base_user"]["address"]
        place = catalog.CEP_DIRECTORY[digits(address["zipcode"])]
        assert (address["city"], address["state"]) == (place["municipio"], place["uf"])
        assert (address["neighborhood"], address["address"]) == (
            place["bairro"],
            place["logradouro"],
        )
        assert address["address_number"]
        campus = order["offer"]["course"]["campus"]
        assert digits(campus["zipcode"]) in catalog.CEP_DIRECTORY


def test_valid_students_are_plausible(many) -> None:
    orders, truth = many
    for order in orders:
        if truth[order["id"]] not in (VALID, DUPLICATE_CPF):
            continue
        user = order["base_user"]
        first = user["full_name"].split()[0]
        local = user["email"].split("@")[0]
        assert local.startswith(census_key(first).lower())
        ordered = date.fromisoformat(order["created_at"][:10])
        born = date.fromisoformat(user["birth_date"])
        age = ordered.year - born.year - ((ordered.month, ordered.day) < (born.month, born.day))
        assert 17 <= age <= 55
        assert user["gender"] in ("M", "F", None)
    names = [o["base_user"]["full_name"] for o in orders if o["base_user"]["full_name"]]
    assert any(census_key(name) != name.upper() for name in names), "names keep their accents"
    genders = Counter(o["base_user"]["gender"] for o in orders)
    assert genders[None] > genders["M"] + genders["F"]  # often unknown: Anubis fills it in


def test_validation_flags_each_defect_and_passes_the_rest(many) -> None:
    """The defects are the ones Anubis's validation is there to catch, each on its own field."""
    orders, truth = many
    for order in orders:
        kind = truth[order["id"]]
        today = date.fromisoformat(order["updated_at"][:10])
        problems = validate_order(order, today=today, required_fields=ADDRESS_FIELDS)
        if kind in (VALID, DUPLICATE_CPF):
            if group_of(order) != "unrouted":
                assert problems == [], (order["id"], problems)
        else:
            assert group_of(order) != "unrouted", "defects go where someone validates them"
            assert DEFECT_FIELDS[kind] in {p.field for p in problems}, (kind, problems)
            if kind == "missing_address":
                assert group_of(order) == "kroton"
            else:
                assert len(problems) == 1, (kind, problems)


def test_census_sample_covers_the_generated_first_names(demo, many) -> None:
    with IBGE_NAMES_PATH.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0] == {"name": "MARIA", "gender": "F", "frequency": "11734129"}
    census = {}
    for row in rows:
        assert row["name"] == census_key(row["name"]) and row["name"].isupper()
        assert row["gender"] in ("M", "F")
        assert int(row["frequency"]) > 0
        census[row["name"]] = row["gender"]
    assert len(census) == len(rows)

    orders, _ = many
    first_names = {
        o["base_user"]["full_name"].split()[0] for o in orders if o["base_user"]["full_name"]
    }
    outside = {census_key(name) for name in NAMES_OUTSIDE_CENSUS}
    assert {census_key(name) for name in first_names} - outside <= set(census)
    assert not outside & set(census)
    # Known genders given by the platform agree with the census.
    for order in orders:
        user = order["base_user"]
        if user["gender"] and user["full_name"]:
            assert census[census_key(user["full_name"].split()[0])] == user["gender"]
    # The demo has students that only the "NI" fallback can serve.
    demo_orders, _ = demo
    assert any(
        o["base_user"]["full_name"]
        and o["base_user"]["full_name"].split()[0] in NAMES_OUTSIDE_CENSUS
        for o in demo_orders
    )


def test_jsonl_round_trip(tmp_path: Path, demo) -> None:
    orders, _ = demo
    path = tmp_path / "nested" / "orders.jsonl"
    assert write_jsonl(orders, path) == len(orders)
    text = path.read_text(encoding="utf-8")
    assert "São Paulo" in text or "Graduação" in text  # UTF-8, not \\u escapes
    assert [json.loads(line) for line in text.splitlines()] == orders
    assert list(read_jsonl(path)) == orders  # what `anubis orders load` reads


def test_cli_writes_the_same_orders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "orders.jsonl"
    assert main(["--count", "60", "--seed", "42", "--out", str(path)]) == 0
    assert list(read_jsonl(path)) == generate_orders(60, seed=42)
    assert "wrote 60 orders" in capsys.readouterr().err
