"""Kroton's answers → statuses (`integrations/kroton/mapping.py`), without Dagster or HTTP."""

from __future__ import annotations

import pytest

from anubis_dagster.core.states import Status
from anubis_dagster.integrations.kroton.mapping import (
    CLASSIFICATIONS,
    classification_status,
    processing_status,
)


@pytest.mark.parametrize(
    ("description", "status"),
    [
        ("Aluno", Status.ENROLLED),
        ("CONVOCADO", Status.ENROLLED),
        ("Classificado", Status.REGISTERED),
        ("Inscrito VG  Online", Status.REGISTERED),  # spaces folded
        ("Ausente", Status.DROPPED),
        ("Desclassificado por Nota", Status.DROPPED),
        ("Desclassificado - documentação", Status.DROPPED),  # any disqualification
    ],
)
def test_classifications_map_without_case_or_spacing(description: str, status: Status) -> None:
    assert classification_status(description) is status


@pytest.mark.parametrize("description", [None, 7, "", "Em análise", "matriculado?"])
def test_an_unknown_classification_maps_to_nothing(description: object) -> None:
    assert classification_status(description) is None


def test_every_classification_in_the_table_is_recognised() -> None:
    for description, status in CLASSIFICATIONS.items():
        assert classification_status(description.upper()) is status


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("NEW", Status.AWAITING_REGISTER),
        ("processing", Status.AWAITING_REGISTER),
        (" SUCCESS ", Status.REGISTERED),
        ("Error", Status.FAILED),
        ("DONE", None),
        (None, None),
    ],
)
def test_processing_statuses(value: object, status: Status | None) -> None:
    assert processing_status(value) is status
