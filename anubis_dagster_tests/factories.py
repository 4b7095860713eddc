"""Builders of test orders in the platform's shape (valid by default; override to break)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

BASE_TIME = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def make_cpf(seed: int) -> str:
    """A valid CPF (correct check digits) derived from `seed`, digits only."""
    base = [int(d) for d in f"{(seed * 7919 + 123456789) % 10**9:09d}"]
    if len(set(base)) == 1:
        base[0] = (base[0] + 1) % 10
    for length in (9, 10):
        total = sum(d * (length + 1 - i) for i, d in enumerate(base[:length]))
        base.append((total * 10 % 11) % 10)
    return "".join(map(str, base))


def fmt_cpf(cpf: str) -> str:
    return f"{cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]}"


KROTON_OFFER: dict[str, Any] = {
    "id": 501,
    "uuid": "5e0c1f0e-0001",
    "discount_percentage": 40.0,
    "offered_price": 359.94,
    "university_id": 10,
    "education_group_id": 1,
    "metadata": {
        "idUnidadeOrigem": 5001,
        "dsTipoCurso": "GRADUACAO",
        "dsModalidade": "PRESENCIAL",
        "vlMensalidadeDe": 599.9,
        "periodoCaptacao": 20271,
    },
    "course": {
        "id": 301,
        "name": "Administração",
        "level": "Graduação",
        "kind": "Presencial",
        "shift": "Noite",
        "campus": {"id": 77, "name": "Paulista", "city": "São Paulo", "state": "SP"},
        "university_offer": {"id": 9, "enrollment_semester": "2027.1", "full_price": 599.9},
    },
}

ESTACIO_OFFER: dict[str, Any] = {
    "id": 601,
    "uuid": "5e0c1f0e-0002",
    "discount_percentage": 30.0,
    "offered_price": 500.0,
    "university_id": 40,
    "education_group_id": 2,
    "metadata": {
        "codCurso": "DIR01",
        "codCampus": "E101",
        "codCampusPai": "E100",
        "numHabilitacao": "1",
        "codTurno": "N",
    },
    "course": {
        "id": 401,
        "name": "Direito",
        "level": "Graduação",
        "kind": "Presencial",
        "shift": "Noite",
        "campus": {"id": 88, "name": "Centro", "city": "Rio de Janeiro", "state": "RJ"},
        "university_offer": {"id": 10, "enrollment_semester": "2027.1", "full_price": 1000.0},
    },
}


def make_order(
    order_id: int,
    *,
    offer: dict[str, Any] | None = None,
    origin: str = "quero_bolsa",
    cpf: str | None = None,
    updated_at: datetime | None = None,
    **user_overrides: Any,
) -> dict[str, Any]:
    stamp = updated_at or BASE_TIME + timedelta(seconds=order_id)
    user: dict[str, Any] = {
        "id": 10_000 + order_id,
        "cpf": fmt_cpf(cpf or make_cpf(order_id)),
        "email": f"aluno{order_id}@example.com.br",
        "phone_number": "(11) 97540-5666",
        "gender": None,
        "birth_date": "1998-04-12",
        "full_name": "Maria Aparecida dos Santos",
        "rg": "20000000",
        "last_enem_score": None,
        "last_enem_year": None,
        "address": {
            "zipcode": "01310-100",
            "address": "Avenida Paulista",
            "address_number": "1000",
            "neighborhood": "Bela Vista",
            "city": "São Paulo",
            "state": "SP",
        },
    }
    user.update(user_overrides)
    return {
        "id": order_id,
        "origin": origin,
        "checkout_step": "paid",
        "price": 359.94,
        "created_at": stamp.isoformat(),
        "updated_at": stamp.isoformat(),
        "base_user": user,
        "offer": copy.deepcopy(offer or KROTON_OFFER),
    }
