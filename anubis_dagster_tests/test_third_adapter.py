"""A third IES, defined only in the test suite (`third_ies`), runs through the same intake and
`deliver_job` as Kroton and Estácio: a new IES is one package plus one configuration entry.

Nothing outside `anubis_dagster_tests/third_ies/` and the integrations file given to the run
knows about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import anubis_dagster_tests.third_ies.adapter  # noqa: F401  (registers the `tiny_ies` adapter)
from anubis_dagster.config.integrations import FILE_ENV, load_integrations
from anubis_dagster_tests.factories import KROTON_OFFER, make_cpf, make_order
from anubis_dagster_tests.harness import Harness, op_metadata
from anubis_dagster_tests.third_ies.server import TinyServer

TINY_UNIVERSITY = 555
TINY_ENTRY = {
    "key": "tiny",
    "name": "Tiny IES (test only)",
    "type": "tiny_ies",
    "filters": [{"type": "qb_offer", "filter": {"university_ids": [TINY_UNIVERSITY]}}],
}
TINY_OFFER = {**KROTON_OFFER, "id": 901, "university_id": TINY_UNIVERSITY, "metadata": {}}


@pytest.fixture
def tiny(anubis_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TinyServer]:
    server = TinyServer()
    monkeypatch.setenv("TINY_IES_URL", server.start())
    # the configuration: one integrations file with only the tiny entry
    path = tmp_path / "integrations.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "integrations": [TINY_ENTRY]}))
    monkeypatch.setenv(FILE_ENV, str(path))
    yield server
    server.stop()


def test_a_test_only_adapter_delivers_through_the_generic_jobs(
    tiny: TinyServer, anubis_env: str
) -> None:
    config = load_integrations()
    harness = Harness(anubis_env, config)  # anubis_dagster.definitions.build_definitions
    deliver_job = harness.defs.resolve_job_def("deliver_job")
    assert deliver_job.partitions_def.get_partition_keys() == ["tiny"]  # type: ignore[union-attr]

    harness.ingest([make_order(i, offer=TINY_OFFER) for i in (1, 2, 3)])
    assert harness.statuses() == {1: "to_register", 2: "to_register", 3: "to_register"}

    result = harness.deliver("tiny")
    assert result.success
    assert harness.statuses() == {1: "registered", 2: "registered", 3: "registered"}
    assert op_metadata(result, "prepare")["processed"] == 0  # no prepare step
    assert op_metadata(result, "register")["outcomes"] == {"registered": 3}
    assert {harness.subscription(i).external_id for i in (1, 2, 3)} == {"T-1", "T-2", "T-3"}
    assert set(tiny.students) == {make_cpf(i) for i in (1, 2, 3)}
    # every request has its attempt row, as for the real partners
    assert harness.attempt_rows() == len(tiny.received) == 3
    assert not harness.due("tiny")


def test_a_refusal_of_the_test_only_partner_is_recorded(tiny: TinyServer, anubis_env: str) -> None:
    harness = Harness(anubis_env, load_integrations())
    tiny.students[make_cpf(1)] = "T-0"  # the partner already has this student
    harness.ingest([make_order(1, offer=TINY_OFFER)])
    assert harness.deliver("tiny").success
    sub = harness.subscription(1)
    assert sub.status == "register_failed"
    assert sub.last_error == "student already registered"
    assert harness.attempt_rows() == len(tiny.received) == 1
