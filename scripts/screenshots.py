"""`make screenshots`: the pictures of docs/operating.md, taken by a real headless Chromium on the
Dagster UI of a demo instance, so they can be refreshed after a UI change.

The story the pictures tell: the Kroton catalog is down during the demo's first passes, so its
students are dead-lettered; the catalog comes back; the operator finds one of them, re-sends
it, pauses sending, requeues an Estácio refusal and previews its payload with a dry run,
resumes, re-sends every other dead letter since midnight, and reads the health and metrics.

    .venv/bin/python scripts/screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from anubis_dagster.db.models import Integration, Subscription
from anubis_dagster.db.session import session_scope
from anubis_dagster_tests.browser.console import Console, chromium_path, headless_chromium
from anubis_dagster_tests.browser.demo_instance import ROOT, DemoInstance, running_demo

#: one quick retry, then the dead letter: the demo's outage leaves dead letters in seconds;
#: the circuit breaker would take the catalog outage for what it is (the partner down: nobody
#: charged, no dead letter), so it is kept closed for the pictures' story
RETRY_SCHEDULE = "5s"
PICTURE_ENV = {"ANUBIS_RETRY_SCHEDULE": RETRY_SCHEDULE, "ANUBIS_BREAKER_FAILURES": "1000"}


def break_the_catalog(demo: DemoInstance) -> None:
    demo.configure_sandbox("kroton", fault_endpoints="catalog_search", error_rate=1.0)


def students(demo: DemoInstance, integration: str, status: str) -> list[tuple[int, int]]:
    """(subscription id, order id) of the integration's students in this status."""
    with session_scope(demo.app_db_url) as session:
        rows = session.execute(
            select(Subscription.id, Subscription.order_id)
            .join(Integration, Integration.id == Subscription.integration_id)
            .where(Integration.key == integration, Subscription.status == status)
            .order_by(Subscription.id)
        )
        return [(int(sub), int(order)) for sub, order in rows]


def launch_and_wait(console: Console, demo: DemoInstance) -> str:
    run_id = console.launch()
    status = demo.wait_run(run_id, timeout=240)
    if status != "SUCCESS":
        raise SystemExit(f"run {run_id} ended {status}\n{demo.logs()}")
    return run_id


def take(demo: DemoInstance, console: Console, out: Path) -> None:
    failed = students(demo, "kroton", "failed")
    if len(failed) < 2:
        raise SystemExit(f"the outage left {len(failed)} dead letters; expected several")
    sub_id, order_id = failed[0]

    # find a student
    console.launchpad(
        "student_lookup", f'ops:\n  find_student_op:\n    config:\n      key: "order:{order_id}"\n'
    )
    console.shot(out / "lookup-launchpad.png")
    console.run_page(launch_and_wait(console, demo))
    console.markdown("report")
    console.shot(out / "lookup-report.png")

    # re-send one
    console.launchpad(
        "deliver_job",
        "ops:\n  delivery_request:\n    config:\n      integration: kroton\n"
        f"      requeue_ids: [{sub_id}]\n      subscription_ids: [{sub_id}]\n",
        partition="kroton",
    )
    console.shot(out / "resend-one-launchpad.png")
    console.run_page(launch_and_wait(console, demo))
    console.filter_events("subscriptions")
    console.shot(out / "resend-one-run.png")

    # pause sending: the due-work sensor off (intake goes on; new students wait)
    console.set_sensor("due_work_sensor", running=False)
    console.shot(out / "pause-sensor.png")

    # dry run: an Estácio refusal whose cause was fixed, requeued and previewed, nothing sent
    refused = students(demo, "estacio", "register_failed")
    if not refused:
        raise SystemExit("the demo left no refused Estácio registration to preview")
    refused_id = refused[0][0]
    console.launchpad(
        "deliver_job",
        "ops:\n  delivery_request:\n    config:\n      integration: estacio\n"
        "      dry_run: true\n"
        f"      requeue_ids: [{refused_id}]\n      subscription_ids: [{refused_id}]\n",
        partition="estacio",
    )
    console.shot(out / "dry-run-launchpad.png")
    console.run_page(launch_and_wait(console, demo))
    console.filter_events("payload")
    console.shot(out / "dry-run-run.png")
    console.set_sensor("due_work_sensor", running=True)

    # a date that is not one is refused at launch, with the reason
    console.launchpad(
        "deliver_job",
        "ops:\n  delivery_request:\n    config:\n      integration: kroton\n"
        '      requeue_failed_since: "yesterday"\n',
        partition="kroton",
    )
    console.launch_refused()
    console.shot(out / "bad-date-refused.png")

    # re-send every dead letter since midnight
    midnight = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00+00:00")
    console.launchpad(
        "deliver_job",
        "ops:\n  delivery_request:\n    config:\n      integration: kroton\n"
        f'      requeue_failed_since: "{midnight}"\n',
        partition="kroton",
    )
    console.shot(out / "requeue-since-launchpad.png")
    console.run_page(launch_and_wait(console, demo))
    console.filter_events("requeued")
    console.shot(out / "requeue-since-run.png")

    # health and metrics
    for scope in ("kroton", "estacio", "platform"):
        demo.wait_run(demo.launch(f"health_{scope}_job"), timeout=240)
    console.asset_checks(["health", "kroton"])
    console.shot(out / "health-checks.png")
    console.open("/assets/metrics/kroton")
    console.page.get_by_text("Latest materialization", exact=False).first.wait_for()
    console.shot(out / "metrics.png")
    console.open("/runs?q%5B0%5D=tag%3Aanubis%2Fintegration%3Dkroton")
    console.page.get_by_text("deliver_job").first.wait_for()
    console.shot(out / "runs-by-integration.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    executable = chromium_path()
    if executable is None:
        print("no system Chromium: apt-get install chromium (or set CHROMIUM)", file=sys.stderr)
        return 1
    with running_demo(extra_env=PICTURE_ENV, before_pass=break_the_catalog) as demo:
        # the one retry of the schedule comes due, and fails too, once the planner's back-off
        # after the outage's failed runs (a minute) has passed
        demo.anubis("run", "--settle-seconds", "0", "--watch", "90", timeout=400)
        demo.configure_sandbox("kroton", error_rate=0.0)  # the catalog is back
        with headless_chromium(executable) as browser:
            take(demo, Console(browser, demo.url), args.out)
    print(f"screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
