"""Going live beside the legacy services (issue 20): legacy import, go-live point, takeover,
cutover; on SQLite and PostgreSQL, against the Kroton and Estácio sandboxes over HTTP.

The legacy Kroton service's database is a real PostgreSQL database on the PostgreSQL run and
SQLite tables of the same shape on the SQLite run (`legacy_kroton.py`). The legacy's own
registrations are made in the Kroton sandbox's state directly (not over HTTP), so the
sandbox's request log holds only what Anubis sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from anubis_dagster.cli import main
from anubis_dagster.console.report import build_report
from anubis_dagster.console.student import find_student, parse_key, render_markdown
from anubis_dagster.db.models import OutboxEvent, Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster.intake.planning import plan_batches
from anubis_dagster.intake.watermark import read_watermark
from anubis_dagster.legacy.importer import ImportReport
from anubis_dagster.legacy.operations import (
    LegacyCsvInvalid,
    run_go_live,
    run_import,
    run_takeover,
)
from anubis_dagster.legacy.readers import CsvLegacyReader, KrotonLegacyReader
from anubis_dagster.runtime.partitions import partition_run_config
from anubis_dagster_tests.factories import fmt_cpf, make_cpf, make_order
from anubis_dagster_tests.harness import QUIET, Harness
from anubis_dagster_tests.legacy_kroton import add_students, legacy_database, set_status
from anubis_dagster_tests.test_estacio_e2e import estacio, estacio_offer  # noqa: F401 (fixture)
from anubis_sandboxes.estacio import EstacioSandbox
from anubis_sandboxes.kroton import KrotonSandbox

NOW = datetime.now(UTC).replace(microsecond=0)
KROTON_CHECKS = {"inscriptions_by_cpf", "inscriptions_by_cpf_v5", "inscription", "token"}
FINAL = {"enrolled", "dropped", "failed"}


@pytest.fixture
def legacy_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    with legacy_database(db_url, tmp_path) as url:
        yield url


def intake(harness: Harness) -> None:
    """Intake from the committed watermark, as the sensor and `anubis run` plan it."""
    with session_scope(harness.db_url) as session:
        committed = read_watermark(session, harness.source.watermark_name)
    job = harness.defs.resolve_job_def("intake_job")
    for batch in plan_batches(harness.source, committed, settle_seconds=0):
        result = job.execute_in_process(
            run_config={**batch.run_config(), **QUIET}, instance=harness.instance
        )
        assert result.success


def legacy_registration(kroton: KrotonSandbox, cpf: str) -> str:
    """The legacy service registered this CPF at Kroton (before the test): its inscription."""
    with kroton.lock:
        return str(kroton._new_inscription(cpf, kroton.catalog[0]).id)


def by_cpf(harness: Harness) -> dict[tuple[str, str], list[str]]:
    """(integration key, cpf) → statuses of its subscriptions."""
    from anubis_dagster.db.models import Integration

    found: dict[tuple[str, str], list[str]] = {}
    with session_scope(harness.db_url) as session:
        for key, cpf, status in session.execute(
            select(Integration.key, Subscription.cpf, Subscription.status)
            .join(Integration)
            .order_by(Subscription.id)
        ):
            found.setdefault((key, cpf), []).append(status)
    return found


def settle_kroton_checks(harness: Harness, cpfs: set[str], rounds: int = 40) -> None:
    import time

    for _ in range(rounds):
        statuses = by_cpf(harness)
        if all(set(statuses[("kroton", c)]) <= FINAL | {"duplicate"} for c in cpfs):
            return
        # imported registrations are weeks old: their checks are a day apart (a quarter of
        # their age); the test makes them due now
        assert harness.check("kroton", retry_now=True).success
        time.sleep(0.3)
    raise AssertionError(f"not final: { {c: by_cpf(harness)[('kroton', c)] for c in cpfs} }")


def estacio_csv(path: Path, lines: list[str]) -> Path:
    path.write_text(
        "order_id,cpf,integration,status,partner_id,sent_at\n" + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    return path


def import_kroton(db_url: str, legacy_url: str, **kwargs: Any) -> ImportReport:
    report, _ = run_import(db_url, "kroton", KrotonLegacyReader(legacy_url), tty=False, **kwargs)
    return report


# --- the first Done-when -----------------------------------------------------------
def test_import_go_live_and_a_full_pass_send_no_historic_student(
    kroton: KrotonSandbox,
    estacio: EstacioSandbox,  # noqa: F811
    anubis_env: str,
    legacy_url: str,
    tmp_path: Path,
) -> None:
    harness = Harness(anubis_env)  # after both sandboxes' settings
    go_live = NOW - timedelta(hours=1)
    estacio_go_live = go_live - timedelta(days=3)
    day = timedelta(days=1)
    estacio_offer_ = estacio_offer("DIR01")
    # historic orders: Kroton 1-6 (6 paid after Estácio's point but before Kroton's),
    # Estácio 11-13; all known to the legacy except 5 (pending there) and 6
    historic = [
        make_order(1, updated_at=NOW - 30 * day),
        make_order(2, updated_at=NOW - 20 * day),
        make_order(3, updated_at=NOW - 10 * day),
        make_order(4, updated_at=NOW - 9 * day),
        make_order(5, updated_at=NOW - 8 * day),
        make_order(6, updated_at=NOW - 2 * day),
        make_order(11, offer=estacio_offer_, updated_at=NOW - 30 * day),
        make_order(12, offer=estacio_offer_, updated_at=NOW - 20 * day),
        make_order(13, offer=estacio_offer_, updated_at=NOW - 10 * day),
    ]
    new = [
        make_order(21, updated_at=NOW - timedelta(minutes=30)),
        make_order(22, updated_at=NOW - timedelta(minutes=20)),
        make_order(31, offer=estacio_offer_, updated_at=NOW - timedelta(minutes=10)),
        # a new order of the student the legacy registered (order 1): a duplicate
        make_order(23, cpf=make_cpf(1), updated_at=NOW - timedelta(minutes=5)),
    ]
    harness.source.load(historic + new)

    # the legacy Kroton service's database
    partner = {n: legacy_registration(kroton, make_cpf(n)) for n in (1, 2, 3)}
    add_students(
        legacy_url,
        [
            {"id": 101, "cpf": fmt_cpf(make_cpf(1)), "status": "registered",
             "sent_at": NOW - 30 * day, "partner_id": partner[1]},
            {"id": 102, "cpf": make_cpf(2), "status": "awaiting_register",
             "sent_at": NOW - 20 * day, "partner_id": partner[2]},
            {"id": 103, "cpf": make_cpf(3), "status": "enrolled",
             "sent_at": NOW - 10 * day, "partner_id": partner[3]},
            {"id": 104, "cpf": make_cpf(4), "status": "failed", "sent_at": NOW - 9 * day},
            {"id": 105, "cpf": make_cpf(5), "status": "to_sync"},
            {"id": 106, "cpf": "123", "status": "registered"},  # unreadable CPF: skipped
        ],
    )  # fmt: skip
    csv_path = estacio_csv(
        tmp_path / "estacio.csv",
        [
            f"11,{fmt_cpf(make_cpf(11))},estacio,registered,E-11,{(NOW - 30 * day).isoformat()}",
            f",{make_cpf(12)},estacio,registered,E-12,{(NOW - 20 * day).isoformat()}",
            f"13,{make_cpf(13)},estacio,failed,,",
        ],
    )

    kroton_report = import_kroton(harness.db_url, legacy_url)
    assert kroton_report.imported == Counter(
        {"registered": 1, "awaiting_register": 1, "enrolled": 1, "failed": 1, "to_sync": 1}
    )
    assert kroton_report.skipped == Counter({"CPF missing or not valid": 1})
    estacio_report, errors = run_import(
        harness.db_url, "estacio", CsvLegacyReader(csv_path, "estacio"), tty=False
    )
    assert errors == [] and estacio_report.total_imported == 3

    # before go-live, the doctor-style check: no point while old orders wait
    from anubis_dagster.intake.orders_source import OrdersSource
    from anubis_dagster.legacy.go_live import missing_points

    with session_scope(harness.db_url) as session:
        assert len(missing_points(session, OrdersSource())) == 2
    from anubis_dagster.doctor import diagnose

    assert any("'kroton' has no go-live point" in w for w in diagnose().warnings)

    run_go_live(harness.db_url, "kroton", go_live)
    change = run_go_live(harness.db_url, "estacio", estacio_go_live)
    assert change.floor_after is not None  # both have a point: intake starts at the earliest
    with session_scope(harness.db_url) as session:
        assert missing_points(session, OrdersSource()) == []

    intake(harness)
    harness.deliver_until_settled("kroton")
    harness.deliver_until_settled("estacio")
    imported_open = {make_cpf(1), make_cpf(2)}
    settle_kroton_checks(harness, imported_open | {make_cpf(21), make_cpf(22)})

    historic_cpfs = {make_cpf(n) for n in (1, 2, 3, 4, 5, 6, 11, 12, 13)}
    # no historic student reached a sandbox with anything but a status check
    kroton_writes = [
        r for r in kroton.requests_log() if r["cpf"] in historic_cpfs
        and r["endpoint"] not in KROTON_CHECKS
    ]  # fmt: skip
    assert kroton_writes == []
    assert [r for r in estacio.requests_log() if r["cpf"] in historic_cpfs] == []
    # every new student registered once
    assert kroton.stats()["registrations_per_cpf"] == {make_cpf(21): 1, make_cpf(22): 1}
    estacio_registrations = Counter(
        r["cpf"] for r in estacio.requests_log() if r["endpoint"] == "register"
    )
    assert estacio_registrations == {make_cpf(31): 1}

    statuses = by_cpf(harness)
    # the legacy's open students were checked until final, with Kroton's inscription ids
    assert set(statuses[("kroton", make_cpf(1))]) <= FINAL | {"duplicate"}
    assert statuses[("kroton", make_cpf(1))][-1] == "duplicate"  # order 23
    assert statuses[("kroton", make_cpf(2))][0] in FINAL
    assert statuses[("kroton", make_cpf(3))] == ["enrolled"]
    assert statuses[("kroton", make_cpf(4))] == ["failed"]
    assert statuses[("kroton", make_cpf(5))] == ["taken_over"]  # its order is before go-live
    assert statuses[("kroton", make_cpf(6))] == ["before_go_live"]  # read, never sent
    checked = [
        r for r in kroton.requests_log()
        if r["cpf"] in imported_open and r["endpoint"] in KROTON_CHECKS
    ]  # fmt: skip
    assert checked, "the imported registrations were never checked"
    with session_scope(harness.db_url) as session:
        # orders 1-5 and 11-13 were never read: only the legacy's rows and 6
        assert (
            session.scalar(select(func.count()).where(Subscription.order_id.in_([1, 2, 3, 11])))
            == 1  # order 11: the CSV named it, so the legacy's row carries its id
        )
        # the conversion report counts the imported students
        report = {r.integration: r for r in build_report(session, days=60)}
        conversion = report["kroton"].by_modality
        assert sum(bucket.registered for bucket in conversion.values()) >= 3  # 1, 2, 3 and new
        assert report["kroton"].statuses["enrolled"] >= 1
        # `anubis student` shows the legacy's record and history
        views = find_student(session, parse_key(make_cpf(2)))
        text = render_markdown(parse_key(make_cpf(2)), views, lambda run: run)
    assert "imported from legacy" in text and "awaiting_register" in text
    assert partner[2] in text  # Kroton's inscription id from the legacy's follow-up
    assert make_cpf(2) not in text


# --- import: idempotent, updates, resumable, CSV validation -----------------------------------
def test_legacy_import_twice_changes_nothing_and_the_final_import_updates(
    anubis_env: str, legacy_url: str
) -> None:
    add_students(
        legacy_url,
        [
            {"id": n, "cpf": make_cpf(n), "status": s, "sent_at": NOW - timedelta(days=n),
             "partner_id": f"P{n}" if s != "to_sync" else None}
            for n, s in enumerate(["registered", "to_sync", "awaiting_register", "dropped"], 1)
        ],
    )  # fmt: skip
    first = import_kroton(anubis_env, legacy_url, batch_size=3)
    assert first.total_imported == 4

    def outbox_types() -> Counter[str]:
        with session_scope(anubis_env) as session:
            return Counter(session.scalars(select(OutboxEvent.event_type)))

    # other services hear "imported", never "sent": the legacy sent these students, not Anubis
    assert outbox_types() == Counter({"subscription.imported": 4})

    def snapshot() -> tuple[list[Any], int]:
        with session_scope(anubis_env) as session:
            rows = session.execute(
                select(
                    Subscription.id,
                    Subscription.status,
                    Subscription.active_cpf,
                    Subscription.legacy_status,
                    Subscription.external_id,
                ).order_by(Subscription.id)
            ).all()
            events = session.scalar(select(func.count()).select_from(SubscriptionEvent))
        return [tuple(r) for r in rows], int(events or 0)

    before = snapshot()
    second = import_kroton(anubis_env, legacy_url)
    assert second.total_imported == 0 and second.unchanged == 4
    assert snapshot() == before
    assert outbox_types() == Counter({"subscription.imported": 4})

    # the legacy sent its pending student before it stopped: the final import follows it
    set_status(legacy_url, 2, "registered")
    dry = import_kroton(anubis_env, legacy_url, dry_run=True)
    assert dry.updated == Counter({"registered": 1}) and snapshot() == before
    final = import_kroton(anubis_env, legacy_url)
    assert final.updated == Counter({"registered": 1})
    # the legacy's move is heard like any status change, in the import's transaction
    assert outbox_types() == Counter({"subscription.imported": 4, "subscription.sent": 1})
    rows = {r[0]: r for r in snapshot()[0]}
    updated = next(r for r in rows.values() if r[3] == "registered" and r[2] == make_cpf(2))
    assert updated[1] == "registered"


def test_legacy_import_resumes_after_a_crash(anubis_env: str, legacy_url: str) -> None:
    add_students(
        legacy_url,
        [{"id": n, "cpf": make_cpf(n), "status": "registered", "partner_id": f"P{n}"}
         for n in range(1, 11)],
    )  # fmt: skip

    class Crashing(KrotonLegacyReader):
        def batches(self, batch_size: int) -> Iterator[list[Any]]:
            for number, batch in enumerate(super().batches(batch_size)):
                if number == 2:
                    raise RuntimeError("killed")
                yield batch

    with pytest.raises(RuntimeError, match="killed"):
        run_import(anubis_env, "kroton", Crashing(legacy_url), batch_size=3, tty=False)
    with session_scope(anubis_env) as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 6
    report, _ = run_import(anubis_env, "kroton", KrotonLegacyReader(legacy_url), tty=False)
    assert report.total_imported == 4 and report.unchanged == 6
    with session_scope(anubis_env) as session:
        counts = Counter(session.scalars(select(Subscription.active_cpf)))
    assert len(counts) == 10 and set(counts.values()) == {1}


def test_legacy_csv_is_checked_whole_with_line_numbers(
    anubis_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = estacio_csv(
        tmp_path / "legacy.csv",
        [
            f"1,{make_cpf(1)},estacio,registered,E1,2026-11-01T10:00:00Z",  # line 2: good
            f"2,{make_cpf(2)},estacio,sent,E2,",  # line 3: unknown status
            "3,111.111.111-11,estacio,registered,E3,",  # line 4: bad CPF
            f"x,{make_cpf(4)},estacio,registered,E4,",  # line 5: bad order id
            f"5,{make_cpf(5)},kroton,registered,E5,",  # line 6: another integration
            f"6,{make_cpf(6)},estacio,registered,E6,yesterday",  # line 7: bad time
            f"7,{make_cpf(7)},estacio,failed,,",  # line 8: good
            f"1,{make_cpf(1)},estacio,registered,E1,2026-11-01T10:00:00Z",  # repeated: once
        ],
    )
    assert main(["legacy", "import", "--integration", "estacio", "--csv", str(path)]) == 1
    err = capsys.readouterr().err
    for line, field in [(3, "status"), (4, "cpf"), (5, "order_id"), (6, "integration"),
                        (7, "sent_at")]:  # fmt: skip
        assert f"line {line}: {field}" in err
    assert make_cpf(4) not in err and "nothing imported" in err
    with session_scope(anubis_env) as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 0

    with pytest.raises(LegacyCsvInvalid):
        run_import(anubis_env, "estacio", CsvLegacyReader(path, "estacio"), tty=False)
    code = main(["legacy", "import", "--integration", "estacio", "--csv", str(path), "--skip-bad"])
    assert code == 0
    out = capsys.readouterr().out
    assert "imported 2" in out and "skipped (bad CSV line): 5" in out
    with session_scope(anubis_env) as session:
        rows = dict(session.execute(select(Subscription.order_id, Subscription.status)).all())
    # a failed student's row takes a stand-in: its order's own id stays free for a takeover
    assert rows == {1: "registered", -7: "failed"}


# --- go-live and takeover ------------------------------------------------------------------
def test_go_live_holds_back_waiting_subscriptions_and_takeover_sends_a_range_once(
    harness: Harness, kroton: KrotonSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    day = timedelta(days=1)
    # Anubis ran before the point was set (a shadow run, or the first pass of the bug)
    harness.source.load([make_order(n, updated_at=NOW - (10 - n) * day) for n in range(1, 6)])
    intake(harness)
    assert set(harness.statuses().values()) == {"to_sync"}
    # dry run first: nothing changes
    point = (NOW - 6.5 * day).isoformat()
    assert main(["go-live", "kroton", "--at", point, "--dry-run"]) == 0
    assert "would move 3 waiting" in capsys.readouterr().out
    assert set(harness.statuses().values()) == {"to_sync"}
    assert main(["go-live", "kroton", "--at", point]) == 0
    assert harness.statuses() == {
        1: "before_go_live", 2: "before_go_live", 3: "before_go_live", 4: "to_sync", 5: "to_sync"
    }  # fmt: skip
    assert "go-live point" in (harness.subscription(1).last_error or "")
    harness.deliver_until_settled("kroton")
    assert set(kroton.stats()["registrations_per_cpf"]) == {make_cpf(4), make_cpf(5)}
    # status shows why
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "kroton: " in out and "3 orders paid before it not sent" in out

    # "the legacy failed 2 and 3: resend them": dry run, then the real thing, then again
    start, end = NOW - 8.5 * day, NOW - 6.5 * day
    dry = run_takeover(harness.db_url, "kroton", start, end, dry_run=True, tty=False)
    assert dry.taken_over == 2 and dry.by_status == Counter({"to_sync": 2})
    assert harness.statuses()[2] == "before_go_live"
    done = run_takeover(harness.db_url, "kroton", start, end, tty=False)
    assert done.taken_over == 2
    again = run_takeover(harness.db_url, "kroton", start, end, tty=False)
    assert again.taken_over == 0 and again.by_status == Counter()
    harness.deliver_until_settled("kroton")
    assert kroton.stats()["registrations_per_cpf"] == {
        make_cpf(n): 1 for n in (2, 3, 4, 5)
    }  # fmt: skip
    assert harness.statuses()[1] == "before_go_live"


def test_takeover_reads_orders_below_the_intake_floor(harness: Harness) -> None:
    day = timedelta(days=1)
    harness.source.load([make_order(n, updated_at=NOW - (10 - n) * day) for n in range(1, 6)])
    run_go_live(harness.db_url, "kroton", NOW - 3 * day)
    run_go_live(harness.db_url, "estacio", NOW - 3 * day)
    intake(harness)
    assert harness.statuses() == {}  # the history below the floor was never read
    done = run_takeover(harness.db_url, "kroton", NOW - 9.5 * day, NOW - 7.5 * day, tty=False)
    assert done.created == 2 and harness.statuses() == {1: "to_sync", 2: "to_sync"}


# --- cutover --------------------------------------------------------------------------------
def test_cutover_sends_each_student_paid_during_the_switch_exactly_once(
    harness: Harness, kroton: KrotonSandbox, legacy_url: str
) -> None:
    """The runbook (docs/cutover.md) without shadow mode: the legacy's last import of paid
    students was at L; the legacy is stopped, imported a final time, and Anubis goes live at
    T = L minus a margin. Students paid before L are the legacy's (sent, or pending there and
    taken over), those after L are Anubis's; those in (T, L] the legacy sent are duplicates by
    their imported CPF. Every paid student is registered once, by exactly one system."""
    minute = timedelta(minutes=1)
    last_legacy_import = NOW - 60 * minute
    go_live = last_legacy_import - 15 * minute  # a margin: safe, the imported CPFs dedupe
    orders = {
        1: NOW - 300 * minute,  # legacy registered
        2: NOW - 240 * minute,  # legacy registered
        3: NOW - 200 * minute,  # legacy had it pending (to_register) when stopped
        4: NOW - 70 * minute,  # in the margin, legacy registered it
        5: NOW - 65 * minute,  # in the margin, legacy had it pending
        6: NOW - 50 * minute,  # paid during the switch, after the legacy's last import
        7: NOW - 30 * minute,  # paid during the switch
        8: NOW - 5 * minute,  # paid after going live
    }
    harness.source.load([make_order(n, updated_at=t) for n, t in orders.items()])
    legacy_sent = {n: legacy_registration(kroton, make_cpf(n)) for n in (1, 2, 4)}
    add_students(
        legacy_url,
        [
            {"id": n, "cpf": make_cpf(n), "status": "registered", "sent_at": orders[n],
             "partner_id": legacy_sent[n]}
            for n in (1, 2, 4)
        ]
        + [{"id": n, "cpf": make_cpf(n), "status": "to_register"} for n in (3, 5)],
    )  # fmt: skip

    # 1. the legacy is stopped; 2. final import; 3. go-live; 4. Anubis's passes
    import_kroton(harness.db_url, legacy_url)
    run_go_live(harness.db_url, "kroton", go_live)
    run_go_live(harness.db_url, "estacio", go_live)
    intake(harness)
    # 5. the legacy's pending students paid before the point: taken over (its final import
    #    lists them as taken_over; the operator takes their range over)
    run_takeover(harness.db_url, "kroton", orders[3] - minute, go_live, tty=False)
    harness.deliver_until_settled("kroton")

    anubis_sent = Counter(kroton.stats()["registrations_per_cpf"])
    legacy = Counter(make_cpf(n) for n in legacy_sent)
    everyone = {make_cpf(n) for n in orders}
    assert anubis_sent + legacy == Counter({cpf: 1 for cpf in everyone})
    assert set(anubis_sent) == {make_cpf(n) for n in (3, 5, 6, 7, 8)}
    statuses = by_cpf(harness)
    assert statuses[("kroton", make_cpf(4))][-1] == "duplicate"  # in the margin, legacy's
    # a second pass and a second takeover change nothing
    intake(harness)
    run_takeover(harness.db_url, "kroton", orders[3] - minute, go_live, tty=False)
    harness.deliver_until_settled("kroton")
    assert Counter(kroton.stats()["registrations_per_cpf"]) == anubis_sent


@pytest.fixture
def harness(kroton: KrotonSandbox, anubis_env: str) -> Harness:
    return Harness(anubis_env)


def test_a_provisional_point_then_the_real_one_reads_from_the_real_one(harness: Harness) -> None:
    """Runbook step 1: a point far ahead keeps a new deployment from sending anything; the real
    point, earlier, moves the intake watermark back to it (the orders in between were never
    read)."""
    day = timedelta(days=1)
    harness.source.load([make_order(n, updated_at=NOW - (10 - n) * day) for n in range(1, 6)])
    for key in ("kroton", "estacio"):
        run_go_live(harness.db_url, key, datetime(2099, 1, 1, tzinfo=UTC))
    intake(harness)
    assert harness.statuses() == {}
    change = run_go_live(harness.db_url, "kroton", NOW - 6.5 * day)
    assert change.floor_after is not None
    intake(harness)
    assert harness.statuses() == {4: "to_sync", 5: "to_sync"}


def test_an_imported_dead_letter_is_never_requeued(anubis_env: str, legacy_url: str) -> None:
    """The legacy's failures are kept failed: "requeue every dead letter since…" leaves them
    (they have no order document to send; their order is taken over instead)."""
    from anubis_dagster.db.models import Integration
    from anubis_dagster.delivery.requeue import requeue

    add_students(legacy_url, [{"id": 1, "cpf": make_cpf(1), "status": "failed"}])
    import_kroton(anubis_env, legacy_url)
    with session_scope(anubis_env) as session:
        kroton_id = session.scalar(select(Integration.id).where(Integration.key == "kroton"))
        assert kroton_id is not None
        report = requeue(session, kroton_id, failed_since=NOW - timedelta(days=1))
    assert report.requeued == [] and "imported from the legacy" in report.skipped[0]["reason"]
    with session_scope(anubis_env) as session:
        assert session.scalar(select(Subscription.status)) == "failed"


def test_launchpad_jobs_take_their_source_from_the_settings(
    anubis_env: str, legacy_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`legacy_import` reads where the settings say (nothing to type at launch), `go_live`
    dry-runs by default; both carry their action tags."""
    import dagster as dg

    from anubis_dagster.definitions import build_definitions

    add_students(legacy_url, [{"id": 1, "cpf": make_cpf(1), "status": "registered"}])
    csv_path = estacio_csv(tmp_path / "e.csv", [f"9,{make_cpf(9)},estacio,registered,E9,"])
    monkeypatch.setenv("ANUBIS_LEGACY_KROTON_DATABASE_URL", legacy_url)
    monkeypatch.setenv("ANUBIS_LEGACY_ESTACIO_CSV", str(csv_path))
    defs = build_definitions()
    with dg.DagsterInstance.ephemeral() as instance:
        for key in ("kroton", "estacio"):
            result = defs.resolve_job_def("legacy_import").execute_in_process(
                partition_key=key,
                instance=instance,
                run_config={**QUIET, **partition_run_config("import_legacy_records", key)},
            )
            assert result.success
            assert result.dagster_run.tags["anubis/action"] == "legacy_import"
        go_live = defs.resolve_job_def("go_live").execute_in_process(
            partition_key="kroton",
            instance=instance,
            run_config={
                **QUIET,
                **partition_run_config("set_go_live_point", "kroton", {"at": NOW.isoformat()}),
            },
        )
        assert go_live.success
    with session_scope(anubis_env) as session:
        from anubis_dagster.db.models import Integration

        assert (
            session.scalar(select(Integration.go_live_at).where(Integration.key == "kroton"))
            is None
        )
        rows = dict(
            session.execute(select(Subscription.order_id, Subscription.legacy_status)).all()
        )
    assert rows == {-1: "registered", 9: "registered"}


def test_cutover_from_a_shadow_run_sends_each_student_once(
    harness: Harness, kroton: KrotonSandbox, legacy_url: str
) -> None:
    """The whole runbook with shadow mode: during the shadow run Anubis sends nobody (its
    students end `shadowed`); the final import makes the shadow students the legacy registered
    `duplicate`; go-live, shadow off, and a takeover of the shadow period releases the ones the
    legacy never sent or left pending. Every paid student is registered once, by one system."""
    from anubis_dagster.legacy.shadow import set_shadow
    from anubis_dagster.resources import prepare_database

    minute = timedelta(minutes=1)
    prepare_database(harness.db_url)  # the integrations file synced, as any command does
    with session_scope(harness.db_url) as session:
        set_shadow(session, "kroton", True)
    during_shadow = {
        1: NOW - 300 * minute,  # the legacy registers it
        2: NOW - 240 * minute,  # the legacy registers it
        3: NOW - 200 * minute,  # the legacy never saw it (its import missed it)
        4: NOW - 120 * minute,  # the legacy had it pending when it was stopped
    }
    harness.source.load([make_order(n, updated_at=t) for n, t in during_shadow.items()])
    intake(harness)
    harness.deliver_until_settled("kroton")
    assert kroton.stats()["registrations_per_cpf"] == {}  # shadow: nothing written
    assert {by_cpf(harness)[("kroton", make_cpf(n))][-1] for n in during_shadow} == {"shadowed"}

    # the legacy is stopped at L and imported a final time
    last_legacy_import = NOW - 60 * minute
    legacy_sent = {n: legacy_registration(kroton, make_cpf(n)) for n in (1, 2)}
    add_students(
        legacy_url,
        [
            {"id": n, "cpf": make_cpf(n), "status": "registered", "sent_at": during_shadow[n],
             "partner_id": legacy_sent[n]}
            for n in (1, 2)
        ]
        + [{"id": 4, "cpf": make_cpf(4), "status": "to_register"}],
    )  # fmt: skip
    report = import_kroton(harness.db_url, legacy_url)
    assert report.notes["superseded"] == 2 and not report.notes["both_sent"]
    for n in (1, 2):  # the shadow run's copies of the legacy's students: never sent
        assert by_cpf(harness)[("kroton", make_cpf(n))][0] == "duplicate"

    # go live at L, shadow off; new students arrive
    run_go_live(harness.db_url, "kroton", last_legacy_import)
    run_go_live(harness.db_url, "estacio", last_legacy_import)
    with session_scope(harness.db_url) as session:
        set_shadow(session, "kroton", False)
    after = {5: NOW - 50 * minute, 6: NOW - 5 * minute}
    harness.source.load([make_order(n, updated_at=t) for n, t in after.items()])
    intake(harness)
    harness.deliver_until_settled("kroton")
    # the shadow run's students are not sent on their own when the integration goes live
    assert set(kroton.stats()["registrations_per_cpf"]) == {make_cpf(5), make_cpf(6)}

    # the operator takes the shadow period over: a dry run first, then for real
    period = (during_shadow[1] - minute, last_legacy_import)
    dry = run_takeover(harness.db_url, "kroton", *period, dry_run=True, tty=False)
    assert dry.released == 2
    assert by_cpf(harness)[("kroton", make_cpf(3))] == ["shadowed"]
    done = run_takeover(harness.db_url, "kroton", *period, tty=False)
    assert done.released == 2
    harness.deliver_until_settled("kroton")

    anubis_sent = Counter(kroton.stats()["registrations_per_cpf"])
    everyone = {make_cpf(n) for n in (*during_shadow, *after)}
    assert anubis_sent + Counter(make_cpf(n) for n in legacy_sent) == Counter(
        {cpf: 1 for cpf in everyone}
    )
    # a second takeover and pass change nothing
    again = run_takeover(harness.db_url, "kroton", *period, tty=False)
    assert again.released == 0
    intake(harness)
    harness.deliver_until_settled("kroton")
    assert Counter(kroton.stats()["registrations_per_cpf"]) == anubis_sent


def test_a_pending_legacy_student_with_its_order_id_is_sent_by_the_takeover(
    harness: Harness, kroton: KrotonSandbox, tmp_path: Path
) -> None:
    """A CSV record the legacy left pending (`to_register`, with the real order id) becomes
    `taken_over` on a stand-in id: the takeover of its range sends the order itself, once."""
    minute = timedelta(minutes=1)
    paid = NOW - 90 * minute
    harness.source.load([make_order(2, updated_at=paid)])
    csv_path = estacio_csv(tmp_path / "k.csv", [f"2,{make_cpf(2)},kroton,to_register,,"])
    report, _ = run_import(harness.db_url, "kroton", CsvLegacyReader(csv_path, "kroton"), tty=False)
    assert report.total_imported == 1
    go_live = NOW - 60 * minute
    run_go_live(harness.db_url, "kroton", go_live)
    run_go_live(harness.db_url, "estacio", go_live)
    intake(harness)
    harness.deliver_until_settled("kroton")
    assert kroton.stats()["registrations_per_cpf"] == {}  # before the point: not sent
    run_takeover(harness.db_url, "kroton", paid - minute, go_live, tty=False)
    harness.deliver_until_settled("kroton")
    assert kroton.stats()["registrations_per_cpf"] == {make_cpf(2): 1}


@pytest.mark.parametrize("target", ["to_register", "register_failed", "registered"])
def test_bulk_moves_refuse_a_status_that_holds_a_cpf_or_publishes(target: str) -> None:
    """`transitions.move_many` (held back by a go-live point, superseded by the legacy) writes
    neither `active_cpf` nor outbox rows, so it must refuse a target that needs either."""
    from anubis_dagster.core.states import Status
    from anubis_dagster.db.transitions import move_many

    with pytest.raises(ValueError, match=target):
        move_many(
            None,  # type: ignore[arg-type]  # refused before any statement
            [1],
            Status(target),
            integration_id=1,
            note="",
            operation="test",
            run_id=None,
            now=NOW,
        )
