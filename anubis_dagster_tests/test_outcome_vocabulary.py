"""One name per outcome (issue 23): the business rules, as plain functions.

- a partner's refusal inside an answer (Estácio's `{"sucesso": false, "codigo": "MS004"}` in an
  HTTP 200) is recorded as the attempt outcome `refused`, with its code and message;
- a step's outcome for a student is the status it moved to, whatever the partner's code, or
  `retry`;
- a partitioned launch names its integration, and a run without its partition is refused.
"""

from __future__ import annotations

import pytest

from anubis_dagster.clients.http import HttpOutcome, HttpResult
from anubis_dagster.delivery.outcomes import step_outcome
from anubis_dagster.integrations.estacio.mapping import (
    Answer,
    classify_registration,
    registration_refusal,
)
from anubis_dagster.integrations.kroton.mapping import (
    registration_refusal as kroton_refusal,
)
from anubis_dagster.runtime.launching import merged_config
from anubis_dagster.runtime.partitions import integration_problem, partition_run_config, run_problem

MS004 = {"sucesso": False, "codigo": "MS004", "mensagem": "Oferta não encontrada"}
KEYS = ("kroton", "estacio")


# --- attempt rows --------------------------------------------------------------------------------
def test_estacio_refusals_are_read_with_their_code_and_message() -> None:
    assert registration_refusal(MS004) == "MS004: Oferta não encontrada"
    ms002 = {
        "sucesso": False,
        "codigo": "MS002",
        "mensagem": "Dados inválidos",
        "erros": [{"campo": "siglaUF", "mensagem": "UF inválida"}],
    }
    assert registration_refusal(ms002) == "MS002: Dados inválidos — siglaUF: UF inválida"
    assert registration_refusal({"sucesso": False}) == "no code: no message"
    # a success, or an answer that says nothing, is no refusal
    assert registration_refusal({"sucesso": True, "numeroInscricao": "123"}) is None
    assert registration_refusal({}) is None
    assert registration_refusal("<html>") is None
    # what the refusal means for the student stays the classifier's business
    assert classify_registration("ok", 200, MS004).kind is Answer.OFFER_NOT_FOUND


def test_a_refusal_message_quoting_personal_data_is_masked() -> None:
    text = registration_refusal(
        {"sucesso": False, "codigo": "MS002", "mensagem": "CPF 529.982.247-25 inválido"}
    )
    assert text is not None and "529.982.247-25" not in text and text.startswith("MS002: ")


def test_kroton_refusals_are_read_with_their_messages() -> None:
    assert kroton_refusal({"success": False, "message": "Oferta encerrada"}) == "Oferta encerrada"
    assert (
        kroton_refusal({"code": "E42", "errors": ["curso inválido", "polo inválido"]})
        == "E42: curso inválido; polo inválido"
    )
    assert kroton_refusal({"success": True, "inscricaoId": "9"}) is None
    assert kroton_refusal({}) is None


def test_the_attempt_row_says_refused_with_the_partners_words() -> None:
    answer = HttpResult("register", 200, MS004, HttpOutcome.OK, 12.0, write=True)
    assert (answer.recorded_outcome, answer.recorded_error) == ("ok", None)
    answer.refusal = registration_refusal(MS004)
    assert answer.recorded_outcome == "refused"
    assert answer.recorded_error == "MS004: Oferta não encontrada"
    # the transport's view is unchanged: an answer came (the breaker counts the partner up)
    assert answer.outcome is HttpOutcome.OK and answer.may_have_acted
    lost = HttpResult("register", None, None, HttpOutcome.TIMEOUT, 1.0, error="ReadTimeout")
    assert (lost.recorded_outcome, lost.recorded_error) == ("timeout", "ReadTimeout")


# --- step outcomes -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("before", "after", "label", "transient", "named"),
    [
        # Estácio's MS004 and MS002 and Kroton's 422: one outcome, named as the status
        ("to_register", "register_failed", "offer_not_found", False, "register_failed"),
        ("to_register", "register_failed", "invalid", False, "register_failed"),
        ("to_register", "register_failed", "refused_422", False, "register_failed"),
        ("to_register", "registered", "already_registered", False, "registered"),
        ("to_sync_lgpd", "to_register", "consent_recorded", False, "to_register"),
        # retries ran out: dead letter, or held for a person
        ("to_register", "failed", "dead_letter", True, "failed"),
        ("to_register", "unknown", "held_unknown", True, "unknown"),
        # still waiting in its status: a retry, whatever failed
        ("to_register", "to_register", "http_5xx", True, "retry"),
        ("to_sync", "to_sync", "catalog_timeout", True, "retry"),
        # nothing moved and nothing failed: the step's own word
        ("to_register", "to_register", "deferred", False, "deferred"),
        ("registered", "registered", "ignored", False, "ignored"),
    ],
)
def test_a_step_outcome_is_the_status_it_moved_to_or_retry(
    before: str, after: str, label: str, transient: bool, named: str
) -> None:
    assert step_outcome(before, after, label, transient=transient) == named


# --- partitioned launches ------------------------------------------------------------------------
def test_a_launch_must_name_an_integration_and_says_the_choices() -> None:
    assert integration_problem("kroton", KEYS) is None
    empty = integration_problem("", KEYS)
    assert empty is not None and "pick one in the Partition box" in empty
    assert "one of: estacio, kroton" in empty
    assert integration_problem("  ", KEYS) == empty
    assert integration_problem("krotn", KEYS) == (
        "'krotn' is not an integration; pick one of: estacio, kroton"
    )


def test_a_run_must_carry_the_partition_its_config_names() -> None:
    assert run_problem("kroton", "kroton", KEYS) is None
    missing = run_problem(None, "kroton", KEYS)
    assert missing is not None and missing.startswith("this run has no partition")
    assert "(estacio, kroton)" in missing and missing.endswith("nothing was done")
    other = run_problem("estacio", "kroton", KEYS)
    assert other is not None and "partition 'estacio' but the config says" in other
    stray = run_problem("wyden", "wyden", KEYS)
    assert stray is not None and "'wyden' is not an integration" in stray


def test_settings_given_for_a_partition_keep_its_integration() -> None:
    partition = partition_run_config("delivery_request", "kroton")
    given = {"ops": {"delivery_request": {"config": {"limit": 5}}}, "loggers": {}}
    assert merged_config(partition, given) == {
        "ops": {"delivery_request": {"config": {"integration": "kroton", "limit": 5}}},
        "loggers": {},
    }
    assert partition_run_config("set_pause", "estacio", {"paused": True}) == {
        "ops": {"set_pause": {"config": {"paused": True, "integration": "estacio"}}}
    }


# --- the glossary --------------------------------------------------------------------------------
def test_the_glossary_names_every_status_and_every_attempt_outcome() -> None:
    from pathlib import Path

    from anubis_dagster.clients.results import REFUSED
    from anubis_dagster.core.states import MEANINGS, Status
    from anubis_dagster.delivery.outcomes import RETRY

    docs = (Path(__file__).resolve().parents[1] / "docs" / "operating.md").read_text()
    glossary = docs.split("## Glossary: statuses and outcomes", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip() for line in glossary.splitlines() if line.startswith("| `")}
    assert {f"`{status.value}`" for status in Status} <= rows
    attempt_outcomes = {o.value for o in HttpOutcome} | {REFUSED, "in_flight"}
    assert {f"`{outcome}`" for outcome in attempt_outcomes} <= rows
    assert f"`{RETRY}`" in glossary and "`deferred`" in glossary
    # the lookup's words for each status, too
    assert set(MEANINGS) == set(Status)
