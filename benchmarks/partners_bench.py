"""Every partner at full quota at once: Kroton, Estácio (with OneTrust and the CEP lookup) and the
test-only Tiny IES drain their backlogs concurrently, each at its own quota, through the real
`intake_job` and `deliver_job`, sharing one PostgreSQL app DB (and orders DB).

The three sandboxes run in this process on port 0, with quotas scaled down (`--kroton 20/6`,
`--estacio 10/5`, `--onetrust 30/5`, `--cep 30/3`, `--tiny 25/5`: the same numbers in each
sandbox and in Anubis's settings; OneTrust allows 3× Estácio's API, as its real quota, 10/150 s
against 40/3600 s, allows 6×) and no faults; each partner answers SUCCESS at once, so a
student costs its prepare and register calls only. Each integration's backlog is sized to keep its
slowest quota busy for `--minutes`. Then each integration drains in a process of its own: `--runs`
threads (each with its own ephemeral Dagster instance, as separate run workers would have) run
`deliver_job[key]` (`limit` = `--batch`) back to back until nothing is due, the first runs
`--stagger` seconds apart; the three integrations at once.

Per quota the sandbox's request log gives: calls accepted, 429s, utilisation over whole windows
from its first call, and the drain time (first call to last) against calls ÷ quota.

    .venv/bin/python -W ignore -m benchmarks.partners_bench --minutes 3
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.intake_bench import (
    Databases,
    git_revision,
    load_average,
    machine_line,
    markdown_table,
    say,
)

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def quota_of(text: str) -> tuple[int, float]:
    limit, period = text.split("/")
    return int(limit), float(period)


def environment(args: argparse.Namespace, urls: dict[str, str], home: Path) -> dict[str, str]:
    return {
        "ANUBIS_HOME": str(home / "home"),
        "API_KROTON_BASE_URL": urls["kroton"],
        "API_KROTON_CLIENT_ID": "sandbox-client",
        "API_KROTON_SECRET": "sandbox-secret",
        "API_KROTON_SUBSCRIPTION": "sandbox-subscription",
        "CATALOG_KROTON_BASE_URL": urls["kroton"],
        "CATALOG_KROTON_API_KEY": "sandbox-catalog-key",
        "API_KROTON_RATE_LIMIT": args.kroton,
        "CATALOG_KROTON_RATE_LIMIT": args.kroton,
        "API_ESTACIO_NEW_BASE_URL": urls["estacio"],
        "API_ESTACIO_CLIENT_ID": "sandbox-canal",
        "API_ESTACIO_NEW_TOKEN": "sandbox-api-key",
        "API_ESTACIO_RATE_LIMIT": args.estacio,
        "API_ESTACIO_CEP_RATE_LIMIT": args.cep,
        "API_ONETRUST_BASE_URL": urls["estacio"],
        "API_ONETRUST_CLIENT_ID": "sandbox-onetrust-id",
        "API_ONETRUST_CLIENT_SECRET": "sandbox-onetrust-secret",
        "API_ONETRUST_FINALIDADE_ID": "sandbox-finalidade",
        "API_ONETRUST_TOPICO_ID": "sandbox-topico",
        "API_ONETRUST_TOKEN": "sandbox-onetrust-token",
        "API_ONETRUST_RATE_LIMIT": args.onetrust,
        "TINY_IES_URL": urls["tiny"],
        "TINY_IES_RATE_LIMIT": args.tiny,
        "ANUBIS_RETRY_SCHEDULE": ",".join(["1s"] * 20),
    }


def backlog(args: argparse.Namespace) -> dict[str, int]:
    """Students per integration: enough to keep its slowest quota busy for `--minutes`."""
    seconds = args.minutes * 60

    def students(*quotas: str) -> int:
        return int(min(limit / period for limit, period in map(quota_of, quotas)) * seconds)

    return {
        "kroton": students(args.kroton),
        "estacio": students(args.estacio, args.onetrust),
        "tiny": students(args.tiny),
    }


def drain(app_url: str, key: str, runs: int, batch: int, stagger: float, out: str) -> None:
    """One integration's `runs` run workers (threads of this process, each with its own
    Dagster instance), back to back until nothing is due; the result goes to `out` (JSON)."""
    import dagster as dg

    import anubis_dagster_tests.third_ies.adapter  # noqa: F401  (registers `tiny_ies`)
    from anubis_dagster.config.integrations import load_integrations
    from anubis_dagster_tests.harness import Harness

    harness = Harness(app_url, load_integrations())
    started = time.time()
    outcomes: list[bool] = []

    def worker() -> None:
        with dg.DagsterInstance.ephemeral() as instance:
            while harness.due(key):
                result = harness.run("deliver_job", key, instance, limit=batch)
                outcomes.append(result.success)

    threads = [threading.Thread(target=worker) for _ in range(runs)]
    for thread in threads:
        thread.start()
        time.sleep(stagger)  # run workers are not launched in the same instant
    for thread in threads:
        thread.join()
    result = {"seconds": round(time.time() - started, 1), "runs": len(outcomes)}
    result["failed"] = outcomes.count(False)
    Path(out).write_text(json.dumps(result))


def bucket_rows(name: str, quota: str, log: list[dict[str, Any]], bucket: str) -> tuple:
    limit, period = quota_of(quota)
    calls = [e for e in log if e["api"] == bucket]
    accepted = sorted(e["ts"] for e in calls if e["status"] != 429)
    rejected = sum(1 for e in calls if e["status"] == 429)
    if not accepted:
        return (name, quota, 0, rejected, "-", "-", "-", "-", "-")
    first, last = accepted[0], accepted[-1]
    whole = math.floor((last - first) / period)
    if whole:
        in_whole = sum(1 for t in accepted if t < first + whole * period)
        utilisation = f"{in_whole / (whole * limit):.1%}"
    else:
        utilisation = "- (under one window)"
    ideal = len(accepted) / limit * period
    drain = last - first
    # the first window's calls all go at once, so the last call can leave one window before
    # calls ÷ quota: the physical minimum of first → last call
    return (
        name,
        quota,
        len(accepted),
        rejected,
        utilisation,
        f"{drain:.1f} s",
        f"{ideal:.1f} s",
        f"{drain / ideal - 1:+.1%}",
        f"{drain / (ideal - period) - 1:+.1%}" if ideal > period else "-",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--kroton", default="20/6")
    parser.add_argument("--estacio", default="10/5")
    parser.add_argument("--onetrust", default="30/5")
    parser.add_argument("--cep", default="30/3")
    parser.add_argument("--tiny", default="25/5")
    parser.add_argument("--runs", type=int, default=6, help="run workers per integration")
    parser.add_argument("--batch", type=int, default=40, help="deliver_job `limit`")
    parser.add_argument("--stagger", type=float, default=3.0, help="seconds between run starts")
    args = parser.parse_args(argv)

    import anubis_dagster_tests.third_ies.adapter  # noqa: F401  (registers `tiny_ies`)
    from anubis_dagster.config.integrations import DEFAULT_FILE, FILE_ENV, load_integrations
    from anubis_dagster.db.migrate import upgrade
    from anubis_dagster_tests.factories import ESTACIO_OFFER, make_order
    from anubis_dagster_tests.harness import Harness
    from anubis_dagster_tests.test_third_adapter import TINY_ENTRY, TINY_OFFER
    from anubis_dagster_tests.third_ies.server import TinyServer, TinySettings
    from anubis_sandboxes.estacio import EstacioSandbox, EstacioSandboxSettings
    from anubis_sandboxes.kroton import KrotonSandbox, KrotonSandboxSettings

    say(machine_line())
    load_start = load_average()
    dbs = Databases("postgresql")
    sandboxes: dict[str, Any] = {
        "kroton": KrotonSandbox(
            KrotonSandboxSettings(
                processing_delay=0.0,
                token_lifetime=3600,
                rate_limits={"api": args.kroton, "catalog": args.kroton},
            )
        ),
        "estacio": EstacioSandbox(
            EstacioSandboxSettings(
                api_key="sandbox-api-key",
                onetrust_client_secret="sandbox-onetrust-secret",
                onetrust_token="sandbox-onetrust-token",
                rate_limits={"estacio": args.estacio, "onetrust": args.onetrust, "cep": args.cep},
            )
        ),
        "tiny": TinyServer(TinySettings(rate_limits={"api": args.tiny})),
    }
    try:
        app_url = dbs.fresh(f"partners_app_{os.getpid()}")
        orders_url = dbs.fresh(f"partners_orders_{os.getpid()}")
        upgrade(app_url)
        urls = {key: sandbox.start() for key, sandbox in sandboxes.items()}
        os.environ.update(environment(args, urls, dbs.home))
        os.environ["ANUBIS_DATABASE_URL"] = app_url
        os.environ["ANUBIS_ORDERS_DATABASE_URL"] = orders_url
        os.environ.pop("API_ESTACIO_REGISTER_WINDOW", None)
        config = yaml.safe_load(DEFAULT_FILE.read_text())
        config["integrations"].append(TINY_ENTRY)
        path = dbs.home / "integrations.yaml"
        path.write_text(yaml.safe_dump(config))
        os.environ[FILE_ENV] = str(path)

        students = backlog(args)
        offers = {"kroton": None, "estacio": ESTACIO_OFFER, "tiny": TINY_OFFER}
        orders, next_id = [], 1
        for key, count in students.items():
            for _ in range(count):
                orders.append(make_order(next_id, offer=offers[key]))
                next_id += 1
        harness = Harness(app_url, load_integrations())
        started = time.perf_counter()
        harness.ingest(orders)
        say(f"{len(orders)} orders ingested in {time.perf_counter() - started:.1f} s: {students}")
        for sandbox in sandboxes.values():
            sandbox.reset()  # the log and windows of the delivery only

        # one process per integration: separate run workers, as in production
        context = multiprocessing.get_context("spawn")
        outs = {key: str(dbs.home / f"{key}.json") for key in students}
        processes = [
            context.Process(
                target=drain, args=(app_url, key, args.runs, args.batch, args.stagger, outs[key])
            )
            for key in students
        ]
        started = time.perf_counter()
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        results = {
            key: json.loads(Path(out).read_text()) if Path(out).exists() else "crashed"
            for key, out in outs.items()
        }
        wall = time.perf_counter() - started
        load_end = load_average()
        statuses = harness.statuses()
        left = {s: n for s, n in _count(statuses.values()).items() if s != "registered"}

        logs = {key: sandbox.requests_log() for key, sandbox in sandboxes.items()}
        rows = [
            bucket_rows("Kroton API (token, register)", args.kroton, logs["kroton"], "api"),
            bucket_rows("Kroton catalog", args.kroton, logs["kroton"], "catalog"),
            bucket_rows("Estácio API (register)", args.estacio, logs["estacio"], "estacio"),
            bucket_rows("OneTrust (consent)", args.onetrust, logs["estacio"], "onetrust"),
            bucket_rows("Estácio CEP lookup", args.cep, logs["estacio"], "cep"),
            bucket_rows("Tiny API (register)", args.tiny, logs["tiny"], "api"),
        ]
        print()
        print(
            f"revision {git_revision()}, PostgreSQL app and orders DB, {args.runs} run workers "
            f"per integration, batch {args.batch}, load average {load_start} at start / "
            f"{load_end} at end; students {students}; all drained in {wall:.1f} s; "
            f"left not registered: {left or 'none'}; runs: {results}"
        )
        print()
        print(
            markdown_table(
                (
                    "quota",
                    "REQUESTS/SECONDS",
                    "calls accepted",
                    "429s",
                    "utilisation (whole windows)",
                    "drain (first → last call)",
                    "calls ÷ quota",
                    "drain vs calls ÷ quota",
                    "vs one window less",
                ),
                rows,
            )
        )
    finally:
        for sandbox in sandboxes.values():
            sandbox.stop()
        dbs.close()
    return 0


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
