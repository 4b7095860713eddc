"""Find a student (issue 12, item 1): by order id, subscription id or CPF, on SQLite and
PostgreSQL, after real deliveries through the Kroton sandbox: status and why, every attempt with
its run link, the dead-letter reason; personal data masked."""

from __future__ import annotations

import re
import time

import dagster as dg
import pytest

from anubis_dagster.cli import main
from anubis_dagster.console.student import LookupKeyError, find_student, parse_key
from anubis_dagster.db.session import session_scope
from anubis_dagster_tests.factories import fmt_cpf, make_cpf, make_order
from anubis_dagster_tests.harness import Harness, op_metadata
from anubis_sandboxes.kroton import KrotonSandbox


@pytest.mark.parametrize(
    ("typed", "kind", "value"),
    [
        ("123", "id", "123"),
        ("order:123", "order", "123"),
        ("subscription: 45", "subscription", "45"),
        ("#45", "subscription", "45"),
        (fmt_cpf(make_cpf(1)), "cpf", make_cpf(1)),
        (make_cpf(1), "cpf", make_cpf(1)),
        (f"cpf:{make_cpf(2)}", "cpf", make_cpf(2)),
    ],
)
def test_keys(typed: str, kind: str, value: str) -> None:
    key = parse_key(typed)
    assert (key.kind, key.value) == (kind, value)


@pytest.mark.parametrize("typed", ["", "maria", "529.982.247-26", "cpf:123", "order:abc", "1" * 25])
def test_bad_keys_say_what_is_accepted(typed: str) -> None:
    with pytest.raises(LookupKeyError):
        parse_key(typed)


def test_lookup_by_each_key_shows_the_history_masked(
    kroton: KrotonSandbox,
    anubis_env: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "1s")  # two tries, then the dead letter
    monkeypatch.setenv("ANUBIS_UI_URL", "http://ui.example:3000")
    harness = Harness(anubis_env)
    harness.ingest([make_order(1), make_order(2)])
    kroton.configure(fault_endpoints="catalog_search", error_rate=1.0)  # the catalog is down
    first = harness.deliver()
    time.sleep(1.1)  # the one retry of the schedule becomes due
    harness.deliver()
    sub = harness.subscription(1)
    assert sub.status == "failed"

    with session_scope(anubis_env) as session:
        by_order = find_student(session, parse_key("order:1"))
        by_sub = find_student(session, parse_key(f"#{sub.id}"))
        by_cpf = find_student(session, parse_key(fmt_cpf(make_cpf(1))))
    assert [v.subscription_id for v in by_order] == [sub.id]
    assert by_sub[0].subscription_id == by_cpf[0].subscription_id == sub.id
    view = by_cpf[0]
    assert view.integration == "kroton" and view.status == "failed"
    assert view.dead_letter and "retries exhausted after 2 attempts" in view.dead_letter
    searches = [a for a in view.attempts if a.operation == "catalog_search"]
    assert searches and all(a.http_status in (500, 502, 503) for a in searches)
    assert searches[0].run_id == first.run_id

    assert main(["student", fmt_cpf(make_cpf(1))]) == 0
    report = capsys.readouterr().out
    assert f"subscription #{sub.id}" in report and "`failed`" in report
    assert f"http://ui.example:3000/runs/{first.run_id}" in report
    assert make_cpf(1) not in re.sub(r"\D", "", report.replace(first.run_id, ""))
    assert "aluno1@example.com.br" not in report and "Maria Aparecida" not in report
    assert "dead letter" in report

    assert main(["student", "order:999"]) == 1
    assert "No subscription found" in capsys.readouterr().out
    assert main(["student", "nobody"]) == 2


def test_student_lookup_job_shows_the_report_as_metadata(
    kroton: KrotonSandbox, anubis_env: str
) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(7)])
    assert harness.deliver().success
    job = harness.defs.resolve_job_def("student_lookup")
    assert job.tags["anubis/action"] == "lookup"
    result = job.execute_in_process(
        run_config={"ops": {"find_student_op": {"config": {"key": "order:7"}}}},
        instance=harness.instance,
    )
    assert result.success
    metadata = op_metadata(result, "find_student_op")
    assert metadata["subscriptions"] == 1
    report = metadata["report"]
    assert "## kroton" in report and "| register |" in report and "| ok |" in report
    assert make_cpf(7) not in report
    # masked data is a code span: its asterisks must not render as bold in the run page
    assert re.search(r"CPF `\*\*\*\.\d{3}\.\d{3}-\*\*`", report), report

    # a key that cannot be one is refused when the run config is validated: no run is made
    with pytest.raises(dg.DagsterInvalidConfigError, match="type an order id"):
        job.execute_in_process(
            run_config={"ops": {"find_student_op": {"config": {"key": "maria"}}}},
            instance=harness.instance,
        )
