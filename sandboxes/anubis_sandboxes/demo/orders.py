"""Realistic paid orders for the demo, the tests and the benchmark.

Orders follow the platform's shape (reference section 1) and the shared demo world of
`catalog.py`, so that the sandboxes can answer them: Kroton offers carry the catalog search keys
of a `KROTON_COURSES` entry, Estácio/Wyden offers the codes of an `ESTACIO_OFFERS` entry, and
students live at CEPs the location lookup knows.

A share of the orders is broken on purpose, one defect each (`DEFECTS`), so that the demo shows
what validation does with them. The orders themselves never say which ones (the platform
wouldn't): `generate_orders_with_truth` also returns the answer key, for tests.

Everything derives from `seed`: the same arguments give the same orders, byte for byte.

    python -m anubis_sandboxes.demo.orders --count 60 --seed 42 --out orders.jsonl
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gc
import itertools
import json
import random
import sys
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

from anubis_dagster.core.orders import ORIGINS
from anubis_dagster.reference_data.names import SAMPLE_CSV
from anubis_sandboxes.demo import catalog

#: A sample of IBGE's first-name census (name, gender, frequency) for the `names` table: every
#: first name the generator uses except `NAMES_OUTSIDE_CENSUS`. Figures are the 2010 census
#: counts of IBGE's Nomes rankings (the overall count where the overall top 20 lists the name,
#: else the count for its sex).
IBGE_NAMES_PATH = SAMPLE_CSV  # the sample the production names import ships

DEFAULT_START_TIME = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)

VALID = "valid"
#: A second order by a student who already bought at the same IES (not a defect: the platform
#: allows it, Anubis must not register the student twice).
DUPLICATE_CPF = "duplicate_cpf"
#: Defects, applied round-robin to the invalid orders (one each) in this order.
DEFECTS = (
    "cpf_check_digit",  # a CPF whose last check digit is wrong
    "cpf_repeated_digits",  # 111.111.111-11: passes the check-digit arithmetic, still invalid
    "email_malformed",  # no @, two @, a space, or no top-level domain
    "phone_too_short",  # no area code, or digits missing
    "birth_date_before_1900",  # 1890-05-01, a placeholder date
    "birth_date_too_recent",  # in the future, or a 5-year-old
    "cep_invalid",  # 00000-000, or only 5 digits
    "missing_full_name",  # null or empty
    "missing_address",  # on a Kroton order, which requires the full address
)

#: Education group of the Wyden universities (distinct from Estácio's; routed by university id).
WYDEN_EDUCATION_GROUP_ID = 3
UNROUTED_EDUCATION_GROUP_ID = 99

# Shares of the order stream per group; Estácio and Wyden together make 35%.
_GROUP_SHARES = {"kroton": 0.50, "estacio": 0.25, "wyden": 0.10, "unrouted": 0.15}
# Every graduation course is also sold as a second degree, less often.
_SECOND_DEGREE_WEIGHT = 0.15
_KNOWN_GENDER_SHARE = 0.3  # the platform often lacks the gender; Kroton needs it
_MIN_AGE_DAYS = 17 * 366  # at least 17 years old on the order date
_MAX_AGE_DAYS = 56 * 365 - 30  # at most 55 years old

T = TypeVar("T")


class _Weighted(Generic[T]):
    """A weighted choice with precomputed cumulative weights (random.choices is slower per
    draw, and 100,000 orders make millions of draws)."""

    def __init__(self, pairs: Iterable[tuple[T, float]]) -> None:
        items = [(item, weight) for item, weight in pairs if weight > 0]
        self.items = [item for item, _ in items]
        self.cumulative = list(itertools.accumulate(weight for _, weight in items))

    def pick(self, rng: random.Random) -> T:
        return self.items[bisect.bisect(self.cumulative, rng.random() * self.cumulative[-1])]


class _Rng(random.Random):
    """random.Random with cheap draws: randint/choice/sample cost several Python calls each,
    and 100,000 orders make millions of draws. Only `random()` is used underneath."""

    def below(self, n: int) -> int:
        return int(self.random() * n)

    def between(self, low: int, high: int) -> int:
        return low + int(self.random() * (high - low + 1))

    def item(self, items: Sequence[T]) -> T:
        return items[int(self.random() * len(items))]


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


# --------------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------------
_MALE_NAMES = (
    "José", "João", "Antônio", "Francisco", "Carlos", "Paulo", "Pedro", "Lucas", "Luiz",
    "Marcos", "Luís", "Gabriel", "Rafael", "Daniel", "Marcelo", "Bruno", "Eduardo",
)  # fmt: skip
_FEMALE_NAMES = (
    "Maria", "Ana", "Francisca", "Antônia", "Adriana", "Juliana", "Márcia", "Fernanda",
    "Patrícia", "Aline", "Sandra", "Camila", "Amanda", "Bruna", "Jéssica", "Letícia", "Júlia",
    "Luciana", "Vanessa", "Mariana",
)  # fmt: skip
#: Unisex names left out of the census sample on purpose: nothing tells their gender, so
#: Anubis must fall back to "NI" for Kroton.
NAMES_OUTSIDE_CENSUS = ("Darci", "Juraci", "Ariel", "Jaci")
_SURNAMES = (
    "Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira", "Lima",
    "Gomes", "Costa", "Ribeiro", "Martins", "Carvalho", "Araújo", "Melo", "Barbosa", "Cardoso",
    "Rocha", "Dias", "Nascimento", "Andrade", "Moreira", "Nunes", "Marques", "Machado",
    "Mendes", "Freitas", "Conceição", "Magalhães", "Gonçalves", "Simões", "Brandão", "Falcão",
    "Assunção", "Guimarães",
)  # fmt: skip
_PARTICLES = {"Silva": "da", "Santos": "dos", "Conceição": "da", "Assunção": "da", "Souza": "de"}
_FIRST_NAMES: _Weighted[tuple[str, str | None]] = _Weighted(
    [((name, "M"), 1.0) for name in _MALE_NAMES]
    + [((name, "F"), 1.0) for name in _FEMALE_NAMES]
    + [((name, None), 0.5) for name in NAMES_OUTSIDE_CENSUS]
)
_ASCII_LOWER = {  # for e-mail addresses
    name: _ascii(name).lower()
    for name in (*_MALE_NAMES, *_FEMALE_NAMES, *NAMES_OUTSIDE_CENSUS, *_SURNAMES)
}
_EMAIL_DOMAINS = _Weighted(
    [
        ("gmail.com", 0.55),
        ("hotmail.com", 0.18),
        ("outlook.com", 0.10),
        ("yahoo.com.br", 0.08),
        ("uol.com.br", 0.05),
        ("bol.com.br", 0.04),
    ]
)
# Students mostly keep the area code (DDD) of the city they live in.
_CITY_DDD = {
    "São Paulo": 11,
    "São José dos Campos": 12,
    "Rio de Janeiro": 21,
    "Belo Horizonte": 31,
    "Salvador": 71,
    "Curitiba": 41,
    "Porto Alegre": 51,
    "Fortaleza": 85,
}
_OTHER_DDDS = (11, 13, 15, 19, 21, 24, 27, 31, 34, 41, 43, 47, 48, 51, 54, 61, 62, 71, 81, 91, 98)
_CEPS = tuple(sorted(catalog.CEP_DIRECTORY))


def _fmt_cep(cep: str) -> str:
    return f"{cep[:5]}-{cep[5:]}"


def _fmt_cpf(cpf: str) -> str:
    return f"{cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]}"


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def cpf_check_digits(base: str) -> str:
    """The two check digits of a 9-digit CPF base (Receita Federal's modulo-11 rule)."""
    numbers = [ord(ch) - 48 for ch in base]
    first = sum(d * w for d, w in zip(numbers, range(10, 1, -1), strict=True)) * 10 % 11 % 10
    total = sum(d * w for d, w in zip(numbers, range(11, 2, -1), strict=True)) + 2 * first
    return f"{first}{total * 10 % 11 % 10}"


# --------------------------------------------------------------------------------------------
# Offers: what the marketplaces sell, built from the catalog so that the sandboxes know them
# --------------------------------------------------------------------------------------------
_OFFER_UUID_NAMESPACE = uuid.UUID("6f1d3c52-8a4e-4f7b-9a55-2d6c0e8b1a01")
_DISCOUNTS = (30.0, 40.0, 50.0, 35.0, 45.0, 60.0)
_SHIFTS = {"M": "Manhã", "T": "Tarde", "N": "Noite", "I": "Integral", "V": "Virtual"}
# Kroton unit → (university, campus id, campus name, CEP, street number).
_KROTON_UNITS: dict[int, tuple[int, int, str, str, str]] = {
    5001: (10, 77, "Anhanguera Paulista", "01310100", "1000"),
    5002: (20, 78, "Polo Unopar Curitiba Centro", "80010000", "150"),
    5003: (30, 79, "Pitágoras Belo Horizonte Centro", "30130010", "2000"),
    5004: (10, 80, "Anhanguera São José dos Campos", "12243740", "455"),
}
# Estácio/Wyden codCampus → (campus id, campus name, CEP, street number).
_ESTACIO_CAMPUSES: dict[str, tuple[int, str, str, str]] = {
    "E101": (88, "Estácio Centro I", "20040020", "10"),
    "E201": (89, "Estácio Salvador Comércio", "40010000", "220"),
    "E301": (90, "Polo EaD Estácio Fortaleza Centro", "60060000", "510"),
    "E901": (91, "Estácio Porto Alegre Centro Histórico", "90010150", "1200"),
    "W401": (92, "Wyden Fortaleza", "60060000", "980"),
    "W501": (93, "Wyden Salvador", "40010000", "45"),
}
_ESTACIO_PRICES = {
    "DIR01": 1190.0,
    "PSI02": 990.0,
    "GRH03": 229.0,
    "ARQ09": 1090.0,
    "VET04": 1490.0,
    "ENC05": 1150.0,
}
# Offers of a university no integration serves: (name, level, kind, shift, price, CEP).
_UNROUTED_COURSES = (
    ("Medicina", "Graduação", "Presencial", "Integral", 8990.0, "80010000"),
    ("Técnico em Informática", "Técnico", "EaD", "Virtual", 149.9, "90010150"),
    ("Especialização Técnica em Enfermagem do Trabalho", "Pós-técnico", "Presencial", "Noite",
     259.9, "30130010"),
)  # fmt: skip
# The catalog search keys a Kroton offer carries (plus periodoCaptacao, the semester's).
_KROTON_KEYS = ("idUnidadeOrigem", "dsTipoCurso", "dsModalidade", "vlMensalidadeDe")
_ESTACIO_KEYS = ("codCurso", "codCampus", "codCampusPai", "numHabilitacao", "codTurno")


def _campus(campus_id: int, name: str, cep: str, number: str) -> dict[str, Any]:
    place = catalog.CEP_DIRECTORY[cep]
    return {
        "id": campus_id,
        "name": name,
        "city": place["municipio"],
        "state": place["uf"],
        "address": place["logradouro"],
        "address_number": number,
        "neighborhood": place["bairro"],
        "zipcode": _fmt_cep(cep),
    }


def _build_offers() -> list[tuple[str, float, dict[str, Any]]]:
    """(group, weight, offer) for every offer on sale; ids and uuids are stable across seeds."""
    counter = itertools.count()

    def offer(
        *,
        university_id: int,
        group_id: int,
        metadata: dict[str, Any],
        name: str,
        level: str,
        kind: str,
        shift: str,
        campus: dict[str, Any],
        full_price: float,
    ) -> dict[str, Any]:
        n = next(counter)
        discount = _DISCOUNTS[n % len(_DISCOUNTS)]
        return {
            "id": 1001 + n,
            "uuid": str(uuid.uuid5(_OFFER_UUID_NAMESPACE, f"offer-{1001 + n}")),
            "discount_percentage": discount,
            "offered_price": round(full_price * (1 - discount / 100), 2),
            "university_id": university_id,
            "education_group_id": group_id,
            "metadata": metadata,
            "course": {
                "id": 3001 + n,
                "name": name,
                "level": level,
                "kind": kind,
                "shift": shift,
                "campus": campus,
                "university_offer": {
                    "id": 9001 + n,
                    "enrollment_semester": "2027.1",
                    "stock_type": "unlimited" if kind == "EaD" else "limited",
                    "full_price": full_price,
                },
            },
        }

    def levels(graduation: bool) -> list[tuple[str, float]]:
        return (
            [("Graduação", 1.0), ("Segunda Graduação", _SECOND_DEGREE_WEIGHT)] if graduation else []
        )

    offers: list[tuple[str, float, dict[str, Any]]] = []
    for course in catalog.KROTON_COURSES:
        unit = course["idUnidadeOrigem"]
        university, campus_id, campus_name, cep, number = _KROTON_UNITS.get(
            unit,
            (
                catalog.KROTON_UNIVERSITY_IDS[unit % len(catalog.KROTON_UNIVERSITY_IDS)],
                unit,
                f"Unidade {unit}",
                _CEPS[unit % len(_CEPS)],
                "100",
            ),
        )
        ead = course["dsModalidade"] == "EAD"
        technical = course["dsTipoCurso"] == "TECNICO"
        for level, weight in levels(not technical) or [("Técnico", 1.0)]:
            metadata = {key: course[key] for key in _KROTON_KEYS}
            metadata["periodoCaptacao"] = catalog.CAPTURE_PERIOD
            item = offer(
                university_id=university,
                group_id=catalog.KROTON_EDUCATION_GROUP_ID,
                metadata=metadata,
                name=course["dsCurso"],
                level=level,
                kind="EaD" if ead else "Presencial",
                shift="Virtual" if ead else "Noite",
                campus=_campus(campus_id, campus_name, cep, number),
                full_price=course["vlMensalidadeDe"],
            )
            offers.append(("kroton", weight, item))

    for entry in catalog.ESTACIO_OFFERS:
        wyden = entry["university_id"] in catalog.WYDEN_UNIVERSITY_IDS
        campus_id, campus_name, cep, number = _ESTACIO_CAMPUSES.get(
            entry["codCampus"], (100, f"Campus {entry['codCampus']}", _CEPS[0], "100")
        )
        for level, weight in levels(True):
            item = offer(
                university_id=entry["university_id"],
                group_id=WYDEN_EDUCATION_GROUP_ID if wyden else catalog.ESTACIO_EDUCATION_GROUP_ID,
                metadata={key: entry[key] for key in _ESTACIO_KEYS},
                name=entry["course"],
                level=level,
                kind=entry["kind"],
                shift=_SHIFTS.get(entry["codTurno"], "Noite"),
                campus=_campus(campus_id, campus_name, cep, number),
                full_price=_ESTACIO_PRICES.get(entry["codCurso"], 899.0),
            )
            offers.append(("wyden" if wyden else "estacio", weight, item))

    for index, (name, level, kind, shift, price, cep) in enumerate(_UNROUTED_COURSES):
        item = offer(
            university_id=catalog.UNROUTED_UNIVERSITY_ID,
            group_id=UNROUTED_EDUCATION_GROUP_ID,
            metadata={},
            name=name,
            level=level,
            kind=kind,
            shift=shift,
            campus=_campus(200 + index, "Faculdade Parceira", cep, "300"),
            full_price=price,
        )
        offers.append(("unrouted", 1.0, item))
    return offers


_OFFERS = _build_offers()
_OFFERS_BY_GROUP = {
    group: _Weighted((offer, weight) for g, weight, offer in _OFFERS if g == group)
    for group in _GROUP_SHARES
}
_ORIGINS = _Weighted(zip(ORIGINS, (0.55, 0.20, 0.15, 0.10), strict=True))
# EaD courses sell more on Ead.com.
_EAD_ORIGINS = _Weighted(zip(ORIGINS, (0.40, 0.40, 0.12, 0.08), strict=True))


def _copy_offer(offer: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy of a template offer (cheaper than deepcopy; the shape is known)."""
    course = offer["course"]
    return {
        **offer,
        "metadata": dict(offer["metadata"]),
        "course": {
            **course,
            "campus": dict(course["campus"]),
            "university_offer": dict(course["university_offer"]),
        },
    }


def marketplace_offers() -> list[dict[str, Any]]:
    """Every offer the demo marketplaces sell (fresh copies), e.g. for sandboxes and tests."""
    return [_copy_offer(offer) for _, _, offer in _OFFERS]


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------
def _invalid_count(count: int, invalid_share: float) -> int:
    """About `invalid_share` of `count`, but enough for every defect once a demo-sized run
    (60 orders and up at the default share) allows it."""
    if invalid_share <= 0 or count <= 0:
        return 0
    wanted = max(round(count * invalid_share), min(len(DEFECTS), count // 5))
    return min(wanted, count)


class _Generator:
    def __init__(self, rng: _Rng, count: int, n_invalid: int, n_duplicates: int) -> None:
        self.rng = rng
        self.used_cpfs: set[str] = set()
        # Defects only go to orders some integration serves (an unrouted order is never
        # validated), so the other orders carry a little more of the unrouted share.
        free = max(1, count - n_invalid - n_duplicates)
        unrouted = min(0.5, _GROUP_SHARES["unrouted"] * count / free)
        routed = {g: share for g, share in _GROUP_SHARES.items() if g != "unrouted"}
        scale = (1 - unrouted) / sum(routed.values())
        self.groups = _Weighted(
            [*((g, s * scale) for g, s in routed.items()), ("unrouted", unrouted)]
        )
        self.routed_groups = _Weighted(routed.items())

    def order(
        self, order_id: int, stamp: datetime, group: str, user: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        rng = self.rng
        offer = _copy_offer(_OFFERS_BY_GROUP[group].pick(rng))
        created = stamp - timedelta(minutes=rng.between(2, 2 * 24 * 60))
        origins = _EAD_ORIGINS if offer["course"]["kind"] == "EaD" else _ORIGINS
        return {
            "id": order_id,
            "origin": origins.pick(rng),
            "checkout_step": "paid",
            "price": offer["offered_price"],
            "created_at": created.isoformat(),
            "updated_at": stamp.isoformat(),
            "base_user": user if user is not None else self.student(order_id, created.date()),
            "offer": offer,
        }

    def cpf(self) -> str:
        rng = self.rng
        while True:
            base = f"{rng.below(10**9):09d}"
            if base == base[0] * 9:
                continue
            cpf = base + cpf_check_digits(base)
            if cpf not in self.used_cpfs:
                self.used_cpfs.add(cpf)
                return cpf

    def student(self, order_id: int, today: date) -> dict[str, Any]:
        rng = self.rng
        first, gender = _FIRST_NAMES.pick(rng)
        names = [first]
        if gender and rng.random() < 0.2:  # "Maria Fernanda", "João Pedro"
            middle = rng.item(_FEMALE_NAMES if gender == "F" else _MALE_NAMES)
            if middle != first:
                names.append(middle)
        first_surname = rng.below(len(_SURNAMES))
        surnames = [_SURNAMES[first_surname]]
        if rng.random() < 0.6:  # two surnames, never the same twice
            second = rng.below(len(_SURNAMES) - 1)
            surnames.append(_SURNAMES[second + (second >= first_surname)])
        for surname in surnames:
            particle = _PARTICLES.get(surname)
            if particle and rng.random() < 0.5:
                names.append(particle)
            names.append(surname)

        born = today - timedelta(days=rng.between(_MIN_AGE_DAYS, _MAX_AGE_DAYS))
        cpf = self.cpf()
        cep = rng.item(_CEPS)
        place = catalog.CEP_DIRECTORY[cep]
        enem = rng.random() < 0.35
        return {
            "id": 500_000 + order_id,
            "cpf": _fmt_cpf(cpf) if rng.random() < 0.6 else cpf,
            "email": self.email(first, surnames[-1], born),
            "phone_number": self.phone(place["municipio"]),
            "gender": gender if gender and rng.random() < _KNOWN_GENDER_SHARE else None,
            "birth_date": born.isoformat(),
            "full_name": " ".join(names),
            "rg": str(rng.between(1_000_000, 99_999_999)),
            "last_enem_score": round(380 + rng.random() * 440, 1) if enem else None,
            "last_enem_year": rng.between(2018, 2025) if enem else None,
            "address": {
                "zipcode": _fmt_cep(cep) if rng.random() < 0.8 else cep,
                "address": place["logradouro"],
                "address_number": str(rng.between(1, 2999)),
                "neighborhood": place["bairro"],
                "city": place["municipio"],
                "state": place["uf"],
            },
        }

    def email(self, first: str, last: str, born: date) -> str:
        rng = self.rng
        separator = rng.item((".", "_", ""))
        roll, suffix = rng.random(), ""
        if roll < 0.3:  # maria.silva98@...
            suffix = f"{born.year % 100:02d}"
        elif roll < 0.6:
            suffix = str(rng.between(1, 999))
        domain = _EMAIL_DOMAINS.pick(rng)
        return f"{_ASCII_LOWER[first]}{separator}{_ASCII_LOWER[last]}{suffix}@{domain}"

    def phone(self, city: str) -> str:
        rng = self.rng
        ddd = _CITY_DDD.get(city) if rng.random() < 0.85 else None
        ddd = ddd or rng.item(_OTHER_DDDS)
        if rng.random() < 0.9:  # mobile: 9 digits starting with 9
            number = f"9{rng.between(6, 9)}{rng.below(10**7):07d}"
        else:  # landline: 8 digits starting with 2-5
            number = f"{rng.between(2, 5)}{rng.below(10**7):07d}"
        roll = rng.random()
        if roll < 0.7:
            return f"({ddd}) {number[:-4]}-{number[-4:]}"
        if roll < 0.9:
            return f"{ddd}{number}"
        return f"+55 {ddd} {number[:-4]}-{number[-4:]}"

    def break_order(self, order: dict[str, Any], defect: str) -> None:
        """Break one thing, named by `defect`, in an otherwise valid order."""
        rng = self.rng
        user = order["base_user"]
        today = date.fromisoformat(order["created_at"][:10])
        if defect == "cpf_check_digit":
            cpf = _digits(user["cpf"])
            cpf = cpf[:10] + str((int(cpf[10]) + rng.between(1, 9)) % 10)
            user["cpf"] = _fmt_cpf(cpf) if "." in user["cpf"] else cpf
        elif defect == "cpf_repeated_digits":
            cpf = str(rng.below(10)) * 11
            user["cpf"] = _fmt_cpf(cpf) if rng.random() < 0.5 else cpf
        elif defect == "email_malformed":
            local, domain = user["email"].split("@")
            user["email"] = rng.item(
                (
                    f"{local}{domain}",
                    f"{local}@@{domain}",
                    f"{local[:3]} {local[3:]}@{domain}",
                    f"{local}@{domain.split('.')[0]}",
                )
            )
        elif defect == "phone_too_short":
            number = _digits(user["phone_number"])
            number = number[2:] if len(number) > 11 else number  # drop +55
            ddd, local = number[:2], number[2:]
            user["phone_number"] = (
                f"{local[:-4]}-{local[-4:]}"
                if rng.random() < 0.5
                else f"({ddd}) {local[:4]}-{local[4:7]}"
            )
        elif defect == "birth_date_before_1900":
            user["birth_date"] = "1890-05-01"
        elif defect == "birth_date_too_recent":
            if rng.random() < 0.5:
                born = today + timedelta(days=rng.between(30, 400))  # in the future
            else:
                born = today - timedelta(days=5 * 365 + rng.between(10, 300))  # five years old
            user["birth_date"] = born.isoformat()
        elif defect == "cep_invalid":
            address = user["address"]
            address["zipcode"] = "00000-000" if rng.random() < 0.5 else address["zipcode"][:5]
        elif defect == "missing_full_name":
            user["full_name"] = None if rng.random() < 0.5 else ""
        elif defect == "missing_address":
            user["address"] = None if rng.random() < 0.5 else dict.fromkeys(user["address"])
        else:
            raise ValueError(f"unknown defect {defect!r}")


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Orders are trees of fresh dicts, never cycles: the cyclic collector only rescans the
    growing list over and over (a third of the time for 100,000 orders)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def generate_orders_with_truth(
    count: int,
    *,
    seed: int = 42,
    start_id: int = 1,
    invalid_share: float = 0.1,
    start_time: datetime | None = None,
    duplicate_share: float = 0.02,
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """`count` paid orders, ids from `start_id`, `updated_at` strictly increasing from
    `start_time`; and the answer key: order id → `VALID`, `DUPLICATE_CPF` or a `DEFECTS` name."""
    if count < 0:
        raise ValueError("count must not be negative")
    if not 0 <= invalid_share <= 1 or not 0 <= duplicate_share <= 1:
        raise ValueError("invalid_share and duplicate_share must be between 0 and 1")
    rng = _Rng(seed)
    stamp = start_time or DEFAULT_START_TIME
    stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)

    # Plan first: which positions carry which defect, and which repeat an earlier student.
    plan = [VALID] * count
    n_invalid = _invalid_count(count, invalid_share)
    for k, position in enumerate(sorted(rng.sample(range(count), n_invalid))):
        plan[position] = DEFECTS[k % len(DEFECTS)]
    n_duplicates = round(count * duplicate_share)
    if duplicate_share > 0 and count >= 30:
        n_duplicates = max(n_duplicates, 2)
    # Late in the stream, so that an earlier order of the same student exists.
    candidates = [p for p in range(count // 4, count) if plan[p] == VALID]
    for position in rng.sample(candidates, min(n_duplicates, len(candidates))):
        plan[position] = DUPLICATE_CPF

    generator = _Generator(rng, count, n_invalid, n_duplicates)
    orders: list[dict[str, Any]] = []
    truth: dict[int, str] = {}
    sources: list[tuple[dict[str, Any], str]] = []  # valid routed orders and their group
    with _cyclic_gc_paused():
        for position, kind in enumerate(plan):
            order_id = start_id + position
            if position:
                stamp += timedelta(seconds=rng.between(1, 120))
            if kind == DUPLICATE_CPF and sources:
                source, group = rng.item(sources)
                user = {**source["base_user"], "address": dict(source["base_user"]["address"])}
                order = generator.order(order_id, stamp, group, user)
            else:
                kind = VALID if kind == DUPLICATE_CPF else kind
                if kind == "missing_address":
                    group = "kroton"
                elif kind != VALID:
                    group = generator.routed_groups.pick(rng)
                else:
                    group = generator.groups.pick(rng)
                order = generator.order(order_id, stamp, group)
                if kind != VALID:
                    generator.break_order(order, kind)
                elif group != "unrouted":
                    sources.append((order, group))
            orders.append(order)
            truth[order_id] = kind
    return orders, truth


def generate_orders(
    count: int,
    *,
    seed: int = 42,
    start_id: int = 1,
    invalid_share: float = 0.1,
    start_time: datetime | None = None,
    duplicate_share: float = 0.02,
) -> list[dict[str, Any]]:
    """`count` realistic paid orders (see the module docstring); deterministic in `seed`."""
    orders, _ = generate_orders_with_truth(
        count,
        seed=seed,
        start_id=start_id,
        invalid_share=invalid_share,
        start_time=start_time,
        duplicate_share=duplicate_share,
    )
    return orders


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def write_jsonl(orders: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write one order per line (UTF-8, accents kept); `-` writes to stdout. Returns the count."""
    if str(path) == "-":
        return _write_lines(orders, sys.stdout)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as handle:
        return _write_lines(orders, handle)


def _write_lines(orders: Iterable[dict[str, Any]], handle: TextIO) -> int:
    count = 0
    for order in orders:
        handle.write(_JSON.encode(order) + "\n")
        count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m anubis_sandboxes.demo.orders --count 60 --seed 42 --out FILE`."""
    parser = argparse.ArgumentParser(
        prog="python -m anubis_sandboxes.demo.orders",
        description="Write realistic demo paid orders as JSON Lines.",
    )
    parser.add_argument("--count", "-n", type=int, default=60)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", "-o", default="-", help="output file (default: stdout)")
    parser.add_argument("--start-id", type=int, default=1)
    parser.add_argument("--invalid-share", type=float, default=0.1)
    parser.add_argument(
        "--start-time",
        type=datetime.fromisoformat,
        default=None,
        help=f"updated_at of the first order (default {DEFAULT_START_TIME.isoformat()})",
    )
    args = parser.parse_args(argv)
    orders = generate_orders(
        args.count,
        seed=args.seed,
        start_id=args.start_id,
        invalid_share=args.invalid_share,
        start_time=args.start_time,
    )
    written = write_jsonl(orders, args.out)
    if args.out != "-":
        print(f"wrote {written} orders to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
