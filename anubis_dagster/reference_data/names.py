"""The IBGE first-name census (`names` table), used to infer gender when Kroton needs it.

The CSV has a header `name,gender,frequency` (as IBGE's "Nomes no Brasil" export, one row per
name and gender). Import replaces the rows of the names it contains; other names stay.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.orm import Session

from anubis_dagster.core.names import first_name_key
from anubis_dagster.db.models import Name

SAMPLE_CSV = Path(__file__).resolve().parent / "data" / "ibge_names.csv"
CHUNK = 1000


def read_names_csv(path: Path) -> Iterator[tuple[str, str, int]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"name", "gender", "frequency"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            name = first_name_key(row["name"])
            gender = (row["gender"] or "").strip().upper()
            if not name or gender not in ("M", "F"):
                raise ValueError(f"{path}:{line}: needs a name and gender M or F")
            try:
                frequency = int(row["frequency"] or 0)
            except ValueError:
                raise ValueError(f"{path}:{line}: frequency must be a whole number") from None
            yield name, gender, frequency


def import_names(session: Session, rows: Iterator[tuple[str, str, int]]) -> int:
    count = 0
    batch: list[tuple[str, str, int]] = []

    def flush() -> None:
        names = {n for n, _, _ in batch}
        session.execute(delete(Name).where(Name.name.in_(names)))
        merged: dict[tuple[str, str], int] = {}
        for name, gender, frequency in batch:
            merged[(name, gender)] = merged.get((name, gender), 0) + frequency
        session.add_all(Name(name=n, gender=g, frequency=f) for (n, g), f in merged.items())
        session.flush()
        batch.clear()

    for row in rows:
        batch.append(row)
        count += 1
        if len(batch) >= CHUNK:
            flush()
    if batch:
        flush()
    return count
