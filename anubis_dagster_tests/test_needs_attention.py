"""Who needs attention (issue 23, item 3) on SQLite and PostgreSQL: a student dead-lettered by
real deliveries through the Kroton sandbox, students refused, held for review or late, each
with its reason and masked; students on their way in time are left out. And a bare number that
names two students says so."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from anubis_dagster.cli import main
from anubis_dagster.console.attention import WAITING_LIMIT, needs_attention
from anubis_dagster.console.student import find_student, parse_key, render_markdown
from anubis_dagster.db.models import Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster_tests.factories import BASE_TIME, fmt_cpf, make_cpf, make_order
from anubis_dagster_tests.harness import Harness, op_metadata
from anubis_sandboxes.kroton import KrotonSandbox


def _set(db_url: str, order_id: int, **values: object) -> None:
    with session_scope(db_url) as session:
        session.execute(
            update(Subscription).where(Subscription.order_id == order_id).values(**values)
        )


def test_the_list_names_every_student_to_look_at_with_the_reason_masked(
    kroton: KrotonSandbox,
    anubis_env: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "1s")  # two tries, then the dead letter
    harness = Harness(anubis_env)
    harness.ingest([make_order(1)])
    kroton.configure(fault_endpoints="catalog_search", error_rate=1.0)  # the catalog is down
    harness.deliver()
    time.sleep(1.1)
    harness.deliver()
    assert harness.subscription(1).status == "failed"

    # the other states, set as the delivery rules would leave them (tested elsewhere)
    harness.ingest([make_order(n) for n in range(3, 9)])
    now = datetime.now(UTC)
    cpf3 = make_cpf(3)
    _set(anubis_env, 3, status="register_failed", last_error=f"MS004 aluno {fmt_cpf(cpf3)}")
    _set(anubis_env, 4, status="unknown", last_error="timeout after the request left")
    _set(anubis_env, 5, status="empty_course", last_error=None)
    late, fresh = now - WAITING_LIMIT - timedelta(hours=6), now - timedelta(hours=1)
    _set(anubis_env, 6, status="to_register", order_updated_at=late)
    _set(anubis_env, 7, status="to_register", order_updated_at=fresh)  # on its way, in time
    _set(anubis_env, 8, status="registered", order_updated_at=late)  # delivered

    with session_scope(anubis_env) as session:
        result = needs_attention(session, now=now)
        assert needs_attention(session, now=now, integration="estacio").total == 0
        assert needs_attention(session, now=now, since=now + timedelta(minutes=5)).total == 0
        capped = needs_attention(session, now=now, limit=2)
    by_order = {item.order_id: item for item in result.items}
    assert sorted(by_order) == [1, 3, 4, 5, 6] and result.total == 5
    assert by_order[1].reason.startswith("dead-lettered: ")
    assert "retries exhausted" in by_order[1].reason
    assert by_order[3].reason.startswith("refused by the partner: MS004")
    assert cpf3 not in re.sub(r"\D", "", by_order[3].reason)  # masked in the partner's message
    assert by_order[4].reason.startswith("held for review")
    assert by_order[5].reason == "refused: no matching course at the partner"
    assert by_order[6].reason == "waiting in to_register"
    assert by_order[6].waiting > WAITING_LIMIT
    assert all(item.integration == "kroton" for item in result.items)
    assert [item.order_id for item in result.items] == [1, 3, 4, 5, 6]  # longest waiting first
    assert len(capped.items) == 2 and capped.total == 5

    assert main(["student", "--needs-attention", "--integration", "kroton"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("5 students need attention")
    for n in (1, 3, 4, 5, 6):
        assert make_cpf(n) not in re.sub(r"[^\d\n ]", "", out)
        assert f"***.{make_cpf(n)[3:6]}.{make_cpf(n)[6:9]}-**" in out  # the CPF, masked
    assert "waiting in to_register" in out

    # the same list in the UI: student_lookup with needs_attention (the run page's `report`)
    lookup = harness.defs.resolve_job_def("student_lookup")
    config = {"needs_attention": True, "integration": "kroton"}
    result_ui = lookup.execute_in_process(
        run_config={"ops": {"find_student_op": {"config": config}}}, instance=harness.instance
    )
    metadata = op_metadata(result_ui, "find_student_op")
    assert metadata["students"] == 5
    report = metadata["report"]
    assert "| `failed` |" in report and "dead-lettered: retries exhausted" in report
    assert f"`***.{cpf3[3:6]}.{cpf3[6:9]}-**`" in report and cpf3 not in report
    empty = lookup.execute_in_process(
        run_config={"ops": {"find_student_op": {"config": {}}}},
        instance=harness.instance,
        raise_on_error=False,
    )
    assert not empty.success  # neither a key nor the list asked for

    assert main(["student", "--needs-attention", "--since", "yesterday"]) == 2
    assert main(["student", "--needs-attention", "45"]) == 2
    assert main(["student"]) == 2


def test_a_bare_number_naming_two_students_says_how_to_pick(anubis_env: str) -> None:
    harness = Harness(anubis_env)
    harness.ingest([make_order(1000)])
    n = harness.subscription(1000).id  # subscription #n is order 1000's...
    harness.ingest([make_order(n, updated_at=BASE_TIME + timedelta(hours=1))])
    other = harness.subscription(n)  # ...and order n is another student's
    assert other.id != n
    with session_scope(anubis_env) as session:
        both = find_student(session, parse_key(str(n)))
        just_order = find_student(session, parse_key(f"order:{n}"))
        just_sub = find_student(session, parse_key(f"#{n}"))
        unambiguous = find_student(session, parse_key("1000"))
    report = render_markdown(parse_key(str(n)), both, str)
    assert f"{n} is both order {n} and subscription #{n}" in report
    assert f"`order:{n}` or `#{n}`" in report
    assert {v.subscription_id for v in both} == {n, other.id}
    assert [v.subscription_id for v in just_order] == [other.id]
    assert [v.order_id for v in just_sub] == [1000]
    for key, views in ((f"order:{n}", just_order), (f"#{n}", just_sub), ("1000", unambiguous)):
        assert views and "is both order" not in render_markdown(parse_key(key), views, str)
