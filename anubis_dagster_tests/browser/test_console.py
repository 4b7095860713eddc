"""The operator's console in a real browser (issue 12): headless Chromium on the Dagster UI of a
demo instance (sandboxes, demo orders, one pass, webserver + daemon + code server).

- A `student_lookup` launched from the Launchpad shows, on its run page, the student's attempts
  exactly as the app DB holds them, with the CPF masked (app DB on SQLite and on PostgreSQL).
- A requeue date that is not a date is refused when Launch Run is clicked, with the reason,
  and no run is created.
- A partitioned job launched without a partition is refused at Launch Run, naming the
  integrations: no run, no alert.
- A partner's refusal (Estácio's MS004 inside an HTTP 200) shows as `refused` in the lookup,
  with the partner's code and message.
- Each integration's health asset lists its checks, each with a description naming the
  integration, evaluated by a health run.
- A run made by `anubis run` re-executes from its run page (one code location name for every
  launcher), and the new run succeeds.
- The needs-attention list (`student_lookup` with `needs_attention: true`) shows every student
  an operator must look at, with the reason, masked.
- Health is evaluated when the daemon starts, without a click (`health_first_evaluation_sensor`).
- A health check with a WARN shows as a warning (Dagster's yellow warning sign, not the red
  cross of an ERROR), its result starting with `WARN:`.

Not in `make test` (marker `browser`): `make test-browser`, and `.ci/run` when Chromium can be
installed. Skipped, saying why, when Playwright or Chromium is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from anubis_dagster.console.attention import needs_attention
from anubis_dagster.core.masking import mask_cpf
from anubis_dagster.db.models import Integration, Name, Subscription, SubscriptionEvent
from anubis_dagster.db.session import session_scope
from anubis_dagster_tests.browser.console import RUN_ID, Console, chromium_path, headless_chromium
from anubis_dagster_tests.browser.demo_instance import DemoInstance, running_demo
from anubis_dagster_tests.conftest import BACKENDS, _truncate_postgres

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (make test-browser installs it)"
)
pytestmark = [pytest.mark.browser, pytest.mark.slow]

HEALTH_GROUP = "health"
STARTUP_SENSOR = "health_first_evaluation_sensor"


@pytest.fixture(scope="module", params=BACKENDS)
def demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoInstance]:
    """A demo instance whose app DB is SQLite (the embedded default) or PostgreSQL."""
    if chromium_path() is None:  # before starting anything
        pytest.skip("no system Chromium (apt-get install chromium, or set CHROMIUM)")
    extra_env = {}
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        _truncate_postgres(url)
        extra_env["ANUBIS_DATABASE_URL"] = url
    with running_demo(tmp_path_factory.mktemp("ui"), extra_env=extra_env) as instance:
        # health is evaluated on start, by the daemon; waited for here, so that its first
        # alerts come before the tests that count alerts
        instance.wait_jobs_ran(health_jobs(instance))
        yield instance


def health_jobs(demo: DemoInstance) -> set[str]:
    """The health job of each enabled integration, and the platform's."""
    with session_scope(demo.app_db_url) as session:
        keys = session.scalars(select(Integration.key).where(Integration.enabled)).all()
    return {f"health_{key}_job" for key in (*keys, "platform")}


@pytest.fixture(scope="module")
def console(demo: DemoInstance) -> Iterator[Console]:
    executable = chromium_path()
    assert executable is not None  # the demo fixture skipped otherwise
    with headless_chromium(executable) as browser:
        yield Console(browser, demo.url)


def known_student(demo: DemoInstance) -> tuple[int, str, list[tuple[str, str, str]]]:
    """The demo student with the most attempts: order id, CPF, and (operation, outcome, HTTP)
    of each attempt in order, as the app DB holds them."""
    e = SubscriptionEvent
    with session_scope(demo.app_db_url) as session:
        sub_id = session.scalar(
            select(e.subscription_id)
            .where(e.kind == "attempt", e.subscription_id.is_not(None))
            .group_by(e.subscription_id)
            .order_by(func.count().desc(), e.subscription_id)
            .limit(1)
        )
        sub = session.get(Subscription, sub_id)
        assert sub is not None and sub.cpf, "the demo pass made no attempt"
        attempts = [
            (op, outcome or "-", str(http) if http else "-")
            for op, outcome, http in session.execute(
                select(e.operation_name, e.outcome, e.http_status)
                .where(e.subscription_id == sub_id, e.kind == "attempt")
                .order_by(e.created_at, e.id)
            )
        ]
        return int(sub.order_id), str(sub.cpf), attempts


def test_lookup_from_the_launchpad_shows_the_attempts(demo: DemoInstance, console: Console) -> None:
    order_id, cpf, attempts = known_student(demo)
    assert len(attempts) >= 2

    console.launchpad(
        "student_lookup", f'ops:\n  find_student_op:\n    config:\n      key: "order:{order_id}"\n'
    )
    run_id = console.launch()
    assert demo.wait_run(run_id) == "SUCCESS", demo.logs()
    tags = {t["key"]: t["value"] for t in demo.run(run_id)["tags"]}
    assert tags.get("anubis/action") == "lookup"

    page = console.run_page(run_id)
    assert page.get_by_text("Success", exact=True).first.is_visible()
    report = console.markdown("report")
    text = report.inner_text()
    assert f"Student lookup: order {order_id}" in text
    # the CPF shows masked, asterisks and all (a code span, not bold), and never in full
    assert mask_cpf(cpf) in text
    assert cpf not in re.sub(r"[^\d\n]", "", text)
    rows = [
        [cell.strip() for cell in row.split("\t")]
        for row in report.locator("tbody tr").all_inner_texts()
    ]
    shown = [(row[1], row[2], row[3]) for row in rows]
    assert shown == attempts
    # every attempt links to the run that made it, on this UI
    links = report.locator("tbody a").evaluate_all("els => els.map(e => e.href)")
    assert links and all(link.startswith(f"{demo.url}/runs/") for link in links)


def test_a_bad_date_is_refused_at_launch_with_its_reason(
    demo: DemoInstance, console: Console
) -> None:
    def deliver_runs() -> int:
        data = demo.graphql(
            '{ runsOrError(filter: {pipelineName: "deliver_job"}) { ... on Runs { count } } }'
        )
        return int(data["runsOrError"]["count"])

    before = deliver_runs()
    console.launchpad(
        "deliver_job",
        "ops:\n  delivery_request:\n    config:\n      integration: kroton\n"
        '      requeue_failed_since: "yesterday"\n',
        partition="kroton",
    )
    text = console.launch_refused()
    assert "requeue_failed_since: must be an ISO 8601 time" in text, text
    assert "/playground" in console.page.url
    assert deliver_runs() == before


def runs_of(demo: DemoInstance, job: str) -> int:
    data = demo.graphql(
        "query($job: String!) { runsOrError(filter: {pipelineName: $job}) "
        "{ ... on Runs { count } } }",
        {"job": job},
    )
    return int(data["runsOrError"]["count"])


def test_a_launch_without_a_partition_is_refused_with_no_run_and_no_alert(
    demo: DemoInstance, console: Console
) -> None:
    before, alerts = runs_of(demo, "deliver_job"), demo.alerts()
    console.forget_sessions()  # the Launchpad would keep the partition an earlier test picked
    # no partition picked; the config as an operator might type it
    console.launchpad(
        "deliver_job", "ops:\n  delivery_request:\n    config:\n      subscription_ids: [1]\n"
    )
    text = console.launch_refused(confirm=True)  # after Dagster's "Are you sure?"
    assert "integration: no integration: pick one in the Partition box" in text, text
    assert "one of: estacio, kroton" in text, text
    assert "/playground" in console.page.url
    assert runs_of(demo, "deliver_job") == before
    console.page.wait_for_timeout(3000)  # the failure sensor's interval: nothing to report
    assert demo.alerts() == alerts


def test_a_partner_refusal_shows_as_a_refusal_in_the_lookup(
    demo: DemoInstance, console: Console
) -> None:
    e = SubscriptionEvent
    with session_scope(demo.app_db_url) as session:
        refused = session.execute(
            select(Subscription.order_id, e.error_message)
            .join(Subscription, Subscription.id == e.subscription_id)
            .where(e.kind == "attempt", e.outcome == "refused", e.http_status == 200)
            .order_by(e.id)
            .limit(1)
        ).first()
    assert refused is not None, "the demo made no partner refusal"
    order_id, error = refused
    assert error and error.startswith("MS0"), error  # Estácio's code, then its message

    console.launchpad(
        "student_lookup", f'ops:\n  find_student_op:\n    config:\n      key: "order:{order_id}"\n'
    )
    run_id = console.launch()
    assert demo.wait_run(run_id) == "SUCCESS", demo.logs()
    console.run_page(run_id)
    report = console.markdown("report")
    rows = [
        [cell.strip() for cell in row.split("\t")]
        for row in report.locator("tbody tr").all_inner_texts()
    ]
    shown = [row for row in rows if row[1] == "register" and row[2] == "refused"]
    assert shown, rows
    assert shown[0][3] == "200" and shown[0][6].startswith(error.split(":")[0] + ":"), shown
    assert "refused by the partner" in report.inner_text()  # the status's meaning


def test_a_run_made_by_anubis_run_re_executes_from_its_page(
    demo: DemoInstance, console: Console
) -> None:
    made = [
        r
        for r in demo.runs_tagged("anubis/launched_by", "anubis run")
        if r["jobName"] == "intake_job" and r["status"] == "SUCCESS"
    ]
    assert made, "the demo's anubis run made no intake run"
    original = made[-1]["runId"]
    page = console.run_page(original)
    page.get_by_role("button", name=re.compile(r"^Re-execute all")).first.click()
    page.wait_for_url(lambda url: (m := RUN_ID.search(url)) is not None and m[1] != original)
    match = RUN_ID.search(page.url)
    assert match, page.url
    new_id = match.group(1)
    # re-executed on the code location the run was made on: it ran, no "Location … does not
    # exist in workspace"
    assert demo.wait_run(new_id) == "SUCCESS", demo.logs()
    data = demo.graphql(
        "query($id: ID!) { runOrError(runId: $id) { ... on Run { parentRunId rootRunId } } }",
        {"id": new_id},
    )
    assert data["runOrError"]["parentRunId"] == original


def test_the_needs_attention_list_shows_every_student_to_look_at(
    demo: DemoInstance, console: Console
) -> None:
    with session_scope(demo.app_db_url) as session:
        expected = needs_attention(session)
    assert expected.total, "the demo left nobody needing attention"
    console.launchpad(
        "student_lookup", "ops:\n  find_student_op:\n    config:\n      needs_attention: true\n"
    )
    run_id = console.launch()
    assert demo.wait_run(run_id) == "SUCCESS", demo.logs()
    console.run_page(run_id)
    report = console.markdown("report")
    text = report.inner_text()
    assert f"{expected.total} students need attention" in text, text
    rows = [
        [cell.strip() for cell in row.split("\t")]
        for row in report.locator("tbody tr").all_inner_texts()
    ]
    shown = {(row[1], row[3]) for row in rows}  # (#subscription, status)
    assert shown == {(f"#{i.subscription_id}", i.status) for i in expected.items}, rows
    assert all(row[5] for row in rows), rows  # every one with its reason
    # CPFs masked, as the list holds them (`console/attention.py` masks them)
    assert {row[4] for row in rows} == {i.cpf for i in expected.items}, rows
    assert all("*" in row[4] for row in rows if row[4] not in ("", "-")), rows


def _health_assets(demo: DemoInstance) -> list[dict[str, Any]]:
    data = demo.graphql(
        """query($group: AssetGroupSelector!) { assetNodes(group: $group) {
             assetKey { path } jobNames
             assetChecksOrError { ... on AssetChecks { checks { name description
               executionForLatestMaterialization { status } } } } } }""",
        {
            "group": {
                "groupName": HEALTH_GROUP,
                "repositoryName": "__repository__",
                "repositoryLocationName": "anubis",
            }
        },
    )
    return list(data["assetNodes"])


def test_each_integration_health_asset_shows_its_described_checks(
    demo: DemoInstance, console: Console, tmp_path: Path
) -> None:
    with session_scope(demo.app_db_url) as session:
        integrations = {
            i.key: i.name for i in session.scalars(select(Integration).where(Integration.enabled))
        }
    assert integrations
    assets = {tuple(a["assetKey"]["path"]): a for a in _health_assets(demo)}
    for key, name in sorted(integrations.items()):
        asset = assets.get((HEALTH_GROUP, key))
        assert asset, f"no health asset for {key}: {sorted(assets)}"
        checks = asset["assetChecksOrError"]["checks"]
        assert checks, f"health/{key} has no checks"
        for check in checks:
            description = check["description"] or ""
            assert key in description or name in description, (key, check)
        job = next(j for j in asset["jobNames"] if not j.startswith("__"))
        assert demo.wait_run(demo.launch(job)) == "SUCCESS", f"the {job} run failed"

        page = console.asset_checks([HEALTH_GROUP, key])
        assert page.get_by_text(f"Checks ({len(checks)})", exact=True).is_visible()
        for check in checks:
            page.get_by_text(check["name"], exact=True).first.click()
            # the UI renders the description as markdown: `failed` shows as code, no backticks
            sync_api.expect(page.locator("body")).to_contain_text(
                check["description"].replace("`", "")
            )
        assert page.get_by_text("Not Evaluated").count() == 0, f"health/{key} not evaluated"


def test_health_is_evaluated_on_start_without_a_click(demo: DemoInstance) -> None:
    by_sensor = demo.runs_tagged("dagster/sensor_name", STARTUP_SENSOR)
    started = {r["jobName"] for r in by_sensor}
    assert len(by_sensor) == len(started) and started <= health_jobs(demo)  # each once at most
    # the start-up sensor, or a 15-minute schedule that ticked first (then the sensor leaves
    # that job alone): the daemon, either way
    for job in health_jobs(demo) - started:
        tags = {t["key"]: t["value"] for t in demo.run(demo.runs_of(job)[-1]["runId"])["tags"]}
        assert tags.get("dagster/schedule_name") == job.removesuffix("_job") + "_schedule", tags
    assert all(r["status"] == "SUCCESS" for r in by_sensor), by_sensor
    for asset in _health_assets(demo):
        for check in asset["assetChecksOrError"]["checks"]:
            assert check["executionForLatestMaterialization"], (asset["assetKey"], check["name"])


def test_a_health_warning_shows_as_a_warning(demo: DemoInstance, console: Console) -> None:
    """An empty names table is the platform's WARN (Kroton students would go with gender NI):
    the Checks tab draws it with Dagster's yellow warning sign, not an ERROR's red cross."""
    with session_scope(demo.app_db_url) as session:
        session.execute(delete(Name))
    try:
        assert demo.wait_run(demo.launch("health_platform_job")) == "SUCCESS", demo.logs()
        page = console.asset_checks([HEALTH_GROUP, "platform"])
        name = page.get_by_text("names_table", exact=True).first
        # the check's row: the nearest element around its name that holds a status icon
        row = name.locator("xpath=ancestor::*[.//*[@role='img']][1]")
        sync_api.expect(row.locator("[role='img']").first).to_have_attribute(
            "aria-label", "warning_outline"
        )
        assert row.locator("[role='img'][aria-label='cancel']").count() == 0
        name.click()
        sync_api.expect(page.locator("body")).to_contain_text("WARN: ")
    finally:
        demo.anubis("names", "import")
