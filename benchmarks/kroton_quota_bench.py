"""Kroton's quota: how much of it Anubis uses, whether it ever overshoots, and how long a paid
order waits for its registration when the quota is free.

The Kroton sandbox runs in this process (port 0) with a scaled-down quota, the same numbers in
the sandbox and in Anubis's environment (`API_KROTON_RATE_LIMIT`, `CATALOG_KROTON_RATE_LIMIT`),
so minutes of production traffic fit in seconds. Three phases, each on students of its own:

1. **backlog**: N valid Kroton orders ingested, then `deliver_job[kroton]` run after run (as the
   sensor would, back to back) until nothing is due;
2. **two runs at once**: another backlog delivered by two concurrent runs, each in its own thread
   with its own ephemeral Dagster instance; they share only the app DB (the quota's rows);
3. **latency**: orders paid one by one over time while a loop does what the sensors and
   `anubis run` do: every interval, intake what has settled, then a deliver run if work is due.

Utilisation = requests the sandbox accepted / (quota × elapsed windows), where the elapsed
windows run from the first accepted request to the last, plus the window the last one counts in
(a sender that fills every window exactly scores 100%).

    .venv/bin/python -m benchmarks.kroton_quota_bench              # SQLite app DB
    .venv/bin/python -m benchmarks.kroton_quota_bench --postgres   # PostgreSQL app DB
    .venv/bin/python -m benchmarks.kroton_quota_bench --quick
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from benchmarks.intake_bench import (
    Databases,
    git_revision,
    load_average,
    machine_line,
    markdown_table,
    orders_start_time,
    percentile,
    remember,
    say,
)

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
KEY = "kroton"
#: Kroton courses whose catalog holds a single offer end `empty_course` without a registration;
#: they are left out so that every subscription of the benchmark is a registration.
SINGLE_OFFER_COURSES = {"Filosofia"}


# --------------------------------------------------------------------------------------------
# Orders
# --------------------------------------------------------------------------------------------
def kroton_orders(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` valid Kroton orders of distinct students (one generator call: CPFs are unique)."""
    from anubis_sandboxes.demo.catalog import KROTON_EDUCATION_GROUP_ID
    from anubis_sandboxes.demo.orders import generate_orders

    wanted: list[dict[str, Any]] = []
    total = count * 3
    while len(wanted) < count:
        orders = generate_orders(
            total,
            seed=seed,
            invalid_share=0,
            duplicate_share=0,
            start_time=orders_start_time(total),
        )
        wanted = [
            o
            for o in orders
            if o["offer"]["education_group_id"] == KROTON_EDUCATION_GROUP_ID
            and o["offer"]["course"]["name"] not in SINGLE_OFFER_COURSES
        ]
        total *= 2
    return wanted[:count]


def cpf_of(order: dict[str, Any]) -> str:
    return "".join(ch for ch in order["base_user"]["cpf"] if ch.isdigit())


# --------------------------------------------------------------------------------------------
# When Anubis's limiter handed out each slot (to explain a 429, should one happen)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grant:
    bucket: str
    stamped: float  # the clock reading the slot row is stamped with (read when asking)
    granted: float  # when `try_acquire` returned with the slot


class SlotRecorder:
    """Wraps `RateLimiter.try_acquire` (in this process only; the product is unchanged) to
    note each slot granted. Before the limiter counted a slot from its answer, it counted it
    from this stamp, and the quota's margin had to cover the time to Kroton's count."""

    def __init__(self) -> None:
        self.grants: list[Grant] = []
        self.gc_pauses: list[tuple[float, float, int]] = []  # (start, end, generation)
        self._lock = threading.Lock()
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """Python's collector stops every thread; long pauses are kept to explain a 429."""
        if phase == "start":
            self._gc_started = time.time()
        elif time.time() - self._gc_started > 0.01:
            self.gc_pauses.append((self._gc_started, time.time(), info["generation"]))

    def install(self) -> None:
        from anubis_dagster.clients.quota import Grant as Grant_
        from anubis_dagster.clients.quota import Priority
        from anubis_dagster.db.rate_limit import RateLimiter

        original = RateLimiter.try_acquire
        recorder = self

        def try_acquire(self: RateLimiter, priority: Priority = Priority.HIGH) -> Grant_:
            asked = time.time()
            grant = original(self, priority)
            if grant.taken:
                with recorder._lock:
                    recorder.grants.append(Grant(self.bucket, asked, time.time()))
            return grant

        RateLimiter.try_acquire = try_acquire  # type: ignore[method-assign]
        gc.callbacks.append(self._on_gc)


SLOTS = SlotRecorder()


def slot_delays(phase: Phase, bucket: str = "api") -> list[tuple[dict[str, Any], Grant]]:
    """Each request that reached the bucket, paired in order with the slot it was sent on."""
    arrivals = [e for e in phase.log if e["api"] == bucket]
    grants = sorted(
        (g for g in phase.grants if g.bucket.endswith(f":{bucket}")), key=lambda g: g.granted
    )
    return list(zip(arrivals, grants, strict=False))


def gc_note(start: float, end: float) -> str:
    """The garbage-collection pauses between a slot's stamp and its request's arrival."""
    pauses = [
        (b - a, generation)
        for a, b, generation in SLOTS.gc_pauses
        if a < end and b > start  # overlapping
    ]
    if not pauses:
        return " (no garbage-collection pause in between)"
    described = ", ".join(f"{d * 1000:.0f} ms (generation {g})" for d, g in pauses)
    return f" (Python's garbage collector paused every thread in between: {described})"


def explain_429s(phase: Phase, quota: Quota) -> list[str]:
    """For each 429: the request in the window before it whose slot was stamped longest before
    it arrived (the one Anubis's window had already let go)."""
    pairs = slot_delays(phase)
    margin = quota.margin
    lines = []
    t0 = phase.log[0]["ts"] if phase.log else 0.0
    for index, (entry, _grant) in enumerate(pairs):
        if entry["status"] != 429:
            continue
        window = [p for p in pairs[:index] if p[0]["ts"] > entry["ts"] - quota.period]
        worst_entry, worst = max(window, key=lambda p: p[0]["ts"] - p[1].stamped)
        lines.append(
            f"429 at +{entry['ts'] - t0:.3f} s ({entry['endpoint']}): {len(window)} requests "
            f"had arrived in the {quota.period:g} s before it. The one at "
            f"+{worst_entry['ts'] - t0:.3f} s was stamped in Anubis's window at "
            f"+{worst.stamped - t0:.3f} s but granted at +{worst.granted - t0:.3f} s "
            f"({(worst.granted - worst.stamped) * 1000:.0f} ms inside `try_acquire`) and arrived "
            f"{(worst_entry['ts'] - worst.stamped) * 1000:.0f} ms after its stamp"
            + gc_note(worst.stamped, worst_entry["ts"])
            + (
                f", more than the {margin * 1000:.0f} ms margin: Anubis's window let go of "
                "its slot before Kroton's did."
                if worst_entry["ts"] - worst.stamped > margin
                else f", within the {margin * 1000:.0f} ms margin: not this; look further."
            )
        )
    return lines


# --------------------------------------------------------------------------------------------
# Anubis, driven in process
# --------------------------------------------------------------------------------------------
@dataclass
class RunStats:
    """What the deliver runs' op metadata say, summed."""

    runs: int = 0
    failed_runs: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    cache_hits: int = 0
    http_429: int = 0
    quota_waits: int = 0
    quota_wait_seconds: float = 0.0
    registered: int = 0

    def add(self, result: Any) -> None:
        self.runs += 1
        self.failed_runs += 0 if result.success else 1
        for event in result.all_events:
            if event.event_type_value != "STEP_OUTPUT":
                continue
            data = {k: v.value for k, v in event.event_specific_data.metadata.items()}
            self.calls.update(data.get("calls_by_operation") or {})
            self.cache_hits += int(data.get("catalog_cache_hits") or 0)
            self.http_429 += int(data.get("http_429") or 0)
            self.quota_waits += int(data.get("quota_waits") or 0)
            self.quota_wait_seconds += float(data.get("quota_wait_seconds") or 0)
            if event.step_key == "register":
                self.registered += int(data.get("processed") or 0)


class Anubis:
    """Intake and delivery runs in process, as the sensors or `anubis run` would start them."""

    def __init__(self, app_url: str, orders_url: str) -> None:
        import dagster as dg

        from anubis_dagster.definitions import build_definitions
        from anubis_dagster.intake.orders_source import OrdersSource

        self.app_url = app_url
        self.defs = build_definitions()  # reads the quotas from the environment now
        self.instance = dg.DagsterInstance.ephemeral()
        self.source = OrdersSource(orders_url)
        self.source.ensure_table()
        self.cursor: Any = None

    def intake(self, settle_seconds: float) -> int:
        """Every settled batch after the cursor through `intake_job`; answers how many orders."""
        from anubis_dagster.intake.planning import plan_batches

        job = self.defs.resolve_job_def("intake_job")
        count = 0
        while batches := plan_batches(self.source, self.cursor, settle_seconds=settle_seconds):
            for batch in batches:
                result = job.execute_in_process(
                    run_config={**batch.run_config(), **QUIET}, instance=self.instance
                )
                if not result.success:
                    raise RuntimeError("intake run failed")
                self.cursor = batch.until
                count += batch.size
        return count

    def deliver(self, instance: Any = None) -> Any:
        from anubis_dagster.runtime.partitions import partition_run_config

        return self.defs.resolve_job_def("deliver_job").execute_in_process(
            partition_key=KEY,
            instance=instance or self.instance,
            run_config={**QUIET, **partition_run_config("delivery_request", KEY)},
            raise_on_error=False,
        )

    def deliver_concurrently(self, runs: int) -> list[Any]:
        import dagster as dg

        def one(_: int) -> Any:
            with dg.DagsterInstance.ephemeral() as instance:
                return self.deliver(instance)

        with ThreadPoolExecutor(runs) as pool:
            return list(pool.map(one, range(runs)))

    def due(self) -> bool:
        from sqlalchemy import select

        from anubis_dagster.db.models import Integration
        from anubis_dagster.db.session import session_scope
        from anubis_dagster.delivery.due import deliver_statuses, has_due
        from anubis_dagster.integrations.base import adapter_class

        with session_scope(self.app_url) as session:
            integration = session.scalars(select(Integration).where(Integration.key == KEY)).one()
            statuses = deliver_statuses(adapter_class(integration.type))
            return has_due(session, integration.id, statuses)

    def statuses(self, order_ids: set[int]) -> Counter[str]:
        from sqlalchemy import select

        from anubis_dagster.db.models import Subscription
        from anubis_dagster.db.session import session_scope

        with session_scope(self.app_url) as session:
            rows = session.execute(select(Subscription.order_id, Subscription.status)).all()
        return Counter(status for order_id, status in rows if order_id in order_ids)

    def created_at(self, order_ids: set[int]) -> dict[int, float]:
        from sqlalchemy import select

        from anubis_dagster.db.models import Subscription
        from anubis_dagster.db.session import session_scope

        with session_scope(self.app_url) as session:
            rows = session.execute(select(Subscription.order_id, Subscription.created_at)).all()
        return {i: c.timestamp() for i, c in rows if i in order_ids}


# --------------------------------------------------------------------------------------------
# What the sandbox saw
# --------------------------------------------------------------------------------------------
@dataclass
class Quota:
    limit: int
    period: float

    @classmethod
    def parse(cls, text: str) -> Quota:
        limit, period = text.split("/")
        return cls(int(limit), float(period))

    @property
    def margin(self) -> float:
        """The product's `Quota.margin` (db.rate_limit) for this quota."""
        from anubis_dagster.clients.quota import Quota as AnubisQuota

        return AnubisQuota(self.limit, self.period).margin


def utilisation(log: list[dict[str, Any]], bucket: str, quota: Quota) -> tuple[int, float, float]:
    """(accepted requests, seconds from the first to the last, utilisation): the brief's
    definition, the last window counted whole even when the work ran out in it."""
    times = [e["ts"] for e in log if e["api"] == bucket and e["status"] != 429]
    if not times:
        return 0, 0.0, float("nan")
    span = times[-1] - times[0]
    return len(times), span, len(times) / (quota.limit * (span / quota.period + 1))


def sustained_utilisation(log: list[dict[str, Any]], bucket: str, quota: Quota) -> float:
    """The same over whole windows only, while work was waiting: with n accepted requests and
    k = the largest multiple of the limit below n, k requests were sent between the first and
    the (k+1)-th; a sender that fills every window sends them in exactly k / limit windows."""
    times = [e["ts"] for e in log if e["api"] == bucket and e["status"] != 429]
    k = (len(times) - 1) // quota.limit * quota.limit
    if k == 0:
        return float("nan")
    return k / (quota.limit * (times[k] - times[0]) / quota.period)


@dataclass
class Phase:
    name: str
    subscriptions: int
    seconds: float  # first deliver run started → last one ended
    log: list[dict[str, Any]]  # the sandbox's requests during the phase
    stats: RunStats
    statuses: Counter[str]
    registered_twice: int  # students with more than one inscription at Kroton
    max_in_window: dict[str, int]
    grants: list[Grant]  # the slots Anubis's limiter handed out during the phase


def phase_rows(phase: Phase, quota: Quota) -> list[tuple[str, str]]:
    """The phase's lines of the results table."""
    served = Counter(e["endpoint"] for e in phase.log if e["status"] != 429)
    rejected = sum(1 for e in phase.log if e["status"] == 429)
    accepted, span, used = utilisation(phase.log, "api", quota)
    whole = accepted / (quota.limit * (phase.seconds / quota.period + 1))
    registered = phase.statuses["awaiting_register"] + phase.statuses["registered"]
    others = {
        s: n for s, n in phase.statuses.items() if s not in ("awaiting_register", "registered")
    }
    token, catalog, register = served["token"], served["catalog_search"], served["register"]
    other = sum(served.values()) - token - catalog - register
    per_student = f"{sum(served.values()) / registered:.3f}" if registered else "-"
    failed = f" ({phase.stats.failed_runs} failed)" if phase.stats.failed_runs else ""
    others_text = ", ".join(f"{s} {n}" for s, n in sorted(others.items())) or "none"
    windows_text = f"{phase.max_in_window.get('api', 0)} / {phase.max_in_window.get('catalog', 0)}"
    lookups = phase.stats.cache_hits + catalog
    margin = quota.margin
    delays = [e["ts"] - g.stamped for e, g in slot_delays(phase)]
    api_times = [e["ts"] for e in phase.log if e["api"] == "api"]
    pauses = sorted((b - a for a, b in pairwise(api_times)), reverse=True)
    pauses_text = ", ".join(f"{p:.2f} s" for p in pauses[:4]) or "-"
    late = sum(1 for d in delays if d > margin)
    delays_text = (
        f"{statistics.median(delays) * 1000:.0f} / {max(delays) * 1000:.0f} ms; "
        f"{late} over the {margin * 1000:.0f} ms margin"
        if delays
        else "-"
    )
    return [
        ("subscriptions / deliver runs", f"{phase.subscriptions} / {phase.stats.runs}{failed}"),
        ("registered (awaiting_register or registered)", str(registered)),
        ("left in other statuses", others_text),
        ("students registered twice at Kroton", str(phase.registered_twice)),
        ("total time (first deliver run start → last end)", f"{phase.seconds:.1f} s"),
        ("API requests accepted, first → last", f"{accepted} in {span:.1f} s"),
        (
            "**API quota utilisation, whole windows while work waited**",
            f"**{sustained_utilisation(phase.log, 'api', quota) * 100:.1f}%**",
        ),
        ("API quota utilisation, first → last request + 1 window", f"{used * 100:.1f}%"),
        ("API utilisation over the whole phase (wall time)", f"{whole * 100:.1f}%"),
        ("**429s caused**", f"**{rejected}** (Anubis counted {phase.stats.http_429})"),
        ("most requests accepted in one window, api / catalog", windows_text),
        ("slot stamp → arrival at Kroton, median / max", delays_text),
        ("longest pauses between API requests", pauses_text),
        (
            "IES calls: token / catalog / register / other",
            f"{token} / {catalog} / {register} / {other}",
        ),
        ("IES calls per registered student", per_student),
        ("catalog calls saved by the cache", f"{phase.stats.cache_hits} of {lookups} lookups"),
        (
            "quota waits inside Anubis",
            f"{phase.stats.quota_waits} waits, {phase.stats.quota_wait_seconds:.1f} s in all",
        ),
    ]


# --------------------------------------------------------------------------------------------
# The phases
# --------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, anubis: Anubis, sandbox: Any) -> None:
        self.args = args
        self.anubis = anubis
        self.sandbox = sandbox
        self.quota = Quota.parse(args.quota)

    def backlog(self, name: str, orders: list[dict[str, Any]], concurrent: int) -> Phase:
        """Ingest `orders`, then deliver until nothing is due, `concurrent` runs at a time."""
        self.anubis.source.load(orders)
        started = time.perf_counter()
        self.anubis.intake(settle_seconds=0)
        say(f"{name}: {len(orders)} orders ingested in {time.perf_counter() - started:.1f} s")
        self.idle_quota()
        self.sandbox.rate_limiter.reset()  # max_in_window of this phase only
        since, grants_from = self.last_seq(), len(SLOTS.grants)
        stats = RunStats()
        started = time.perf_counter()
        for _ in range(self.args.max_runs):
            results = (
                self.anubis.deliver_concurrently(concurrent)
                if concurrent > 1
                else [self.anubis.deliver()]
            )
            for result in results:
                stats.add(result)
            if not self.anubis.due():
                break
        seconds = time.perf_counter() - started
        return self.phase(name, orders, seconds, since, stats, grants_from)

    def phase(
        self,
        name: str,
        orders: list[dict[str, Any]],
        seconds: float,
        since: int,
        stats: RunStats,
        grants_from: int,
    ) -> Phase:
        cpfs = {cpf_of(o) for o in orders}
        per_cpf = self.sandbox.stats()["registrations_per_cpf"]
        say(f"{name}: done in {seconds:.1f} s, {stats.runs} runs")
        return Phase(
            name=name,
            subscriptions=len(orders),
            seconds=seconds,
            log=self.sandbox.requests_log(since),
            stats=stats,
            statuses=self.anubis.statuses({o["id"] for o in orders}),
            registered_twice=sum(1 for cpf, n in per_cpf.items() if cpf in cpfs and n > 1),
            max_in_window=self.sandbox.stats()["max_in_window"],
            grants=SLOTS.grants[grants_from:],
        )

    def last_seq(self) -> int:
        log = self.sandbox.requests_log()
        return log[-1]["seq"] if log else 0

    def idle_quota(self) -> None:
        """Let the previous phase's requests leave every window (Anubis's and the sandbox's)."""
        time.sleep(self.quota.period * 1.1 + 1)

    def latency(self, orders: list[dict[str, Any]]) -> tuple[Phase, dict[str, float]]:
        """Orders paid one by one (Poisson arrivals); a loop ticks every `sensor_interval`:
        intake of the settled orders, then one deliver run if work is due."""
        args = self.args
        rng = random.Random(args.seed)
        arrivals, at = [], 0.0
        for _ in orders:
            at += rng.expovariate(1 / args.arrival_mean)
            arrivals.append(at)
        paid_at: dict[int, float] = {}
        self.idle_quota()
        self.sandbox.rate_limiter.reset()
        since, grants_from = self.last_seq(), len(SLOTS.grants)
        stats = RunStats()
        start = time.time()

        def feed() -> None:
            for order, offset in zip(orders, arrivals, strict=True):
                time.sleep(max(0.0, start + offset - time.time()))
                now = datetime.now(UTC)
                order["created_at"] = (now - timedelta(minutes=3)).isoformat()
                order["updated_at"] = now.isoformat()
                paid_at[order["id"]] = now.timestamp()
                self.anubis.source.load([order])

        feeder = threading.Thread(target=feed, name="paid-orders", daemon=True)
        feeder.start()
        ids = {o["id"] for o in orders}
        deadline = start + arrivals[-1] + args.settle + 3 * args.sensor_interval + 120
        tick = 0
        while time.time() < deadline:
            tick += 1
            self.anubis.intake(settle_seconds=args.settle)
            if self.anubis.due():
                stats.add(self.anubis.deliver())
            statuses = self.anubis.statuses(ids)
            done = statuses["awaiting_register"] + statuses["registered"]
            if not feeder.is_alive() and done + statuses["register_failed"] >= len(orders):
                break
            time.sleep(max(0.0, start + tick * args.sensor_interval - time.time()))
        seconds = time.time() - start
        phase = self.phase("latency", orders, seconds, since, stats, grants_from)

        registered_at: dict[str, float] = {}
        for entry in phase.log:
            if entry["endpoint"] == "register" and entry["status"] == 201 and entry["cpf"]:
                registered_at.setdefault(entry["cpf"], entry["ts"])
        created = self.anubis.created_at(ids)
        waits, intake_waits, deliver_waits = [], [], []
        for order in orders:
            done_at = registered_at.get(cpf_of(order))
            if done_at is None or order["id"] not in paid_at:
                continue
            waits.append(done_at - paid_at[order["id"]])
            intake_waits.append(created[order["id"]] - paid_at[order["id"]])
            deliver_waits.append(done_at - created[order["id"]])
        summary = {
            "orders": len(orders),
            "measured": len(waits),
            "p50": statistics.median(waits) if waits else float("nan"),
            "p95": percentile(waits, 95) if waits else float("nan"),
            "max": max(waits, default=float("nan")),
            "intake_p50": statistics.median(intake_waits) if intake_waits else float("nan"),
            "deliver_p50": statistics.median(deliver_waits) if deliver_waits else float("nan"),
            "deliver_p95": percentile(deliver_waits, 95) if deliver_waits else float("nan"),
        }
        return phase, summary


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def configure_env(
    args: argparse.Namespace, sandbox_url: str, app_url: str, orders_url: str
) -> None:
    """The environment a deployment would have, pointed at the sandbox and these databases."""
    os.environ.update(
        {
            "API_KROTON_BASE_URL": sandbox_url,
            "API_KROTON_CLIENT_ID": "sandbox-client",
            "API_KROTON_SECRET": "sandbox-secret",
            "API_KROTON_SUBSCRIPTION": "sandbox-subscription",
            "CATALOG_KROTON_BASE_URL": sandbox_url,
            "CATALOG_KROTON_API_KEY": "sandbox-catalog-key",
            "API_KROTON_RATE_LIMIT": args.quota,
            "CATALOG_KROTON_RATE_LIMIT": args.quota,
            "ANUBIS_DATABASE_URL": remember(app_url),
            "ANUBIS_ORDERS_DATABASE_URL": remember(orders_url),
            "ANUBIS_INTAKE_SETTLE_SECONDS": str(args.settle),
        }
    )
    os.environ.pop("DAGSTER_HOME", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.kroton_quota_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quota", default="20/2", help="REQUESTS/SECONDS, API and catalog")
    parser.add_argument("--backlog", type=int, default=500, help="subscriptions of phase 1")
    parser.add_argument("--concurrent-backlog", type=int, default=300, help="… of phase 2")
    parser.add_argument("--runs-at-once", type=int, default=2, help="phase 2's concurrent runs")
    parser.add_argument("--latency-orders", type=int, default=50, help="orders of phase 3")
    parser.add_argument("--arrival-mean", type=float, default=4.0, help="s between paid orders")
    parser.add_argument("--sensor-interval", type=float, default=30.0, help="s between ticks")
    parser.add_argument("--settle", type=float, default=10.0, help="ANUBIS_INTAKE_SETTLE_SECONDS")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="sandbox latency per call")
    parser.add_argument("--max-runs", type=int, default=50, help="deliver runs per phase, at most")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL app and orders DBs")
    parser.add_argument("--quick", action="store_true", help="smaller phases, 10 s ticks")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.quick:
        args.backlog, args.concurrent_backlog = (
            min(args.backlog, 150),
            min(args.concurrent_backlog, 100),
        )
        args.latency_orders, args.arrival_mean = min(args.latency_orders, 15), 2.0
        args.sensor_interval = min(args.sensor_interval, 10.0)
    backend = "postgresql" if args.postgres else "sqlite"
    dbs = Databases(backend)
    os.environ["ANUBIS_HOME"] = str(dbs.home / "home")
    try:
        print(run(args, dbs))
    finally:
        dbs.close()
    return 0


def run(args: argparse.Namespace, dbs: Databases) -> str:
    from anubis_sandboxes.kroton import KrotonSandbox, KrotonSandboxSettings

    sandbox = KrotonSandbox(
        KrotonSandboxSettings(
            rate_limits={"api": args.quota, "catalog": args.quota},
            latency_ms=args.latency_ms,
            token_lifetime=300.0,
        )
    )
    url = sandbox.start()
    SLOTS.install()
    args.load_at_start = load_average()
    try:
        app_url, orders_url = dbs.fresh("kroton_app"), dbs.fresh("kroton_orders")
        configure_env(args, url, app_url, orders_url)
        from anubis_dagster.resources import prepare_database

        prepare_database(app_url)
        anubis = Anubis(app_url, orders_url)
        bench = Bench(args, anubis, sandbox)
        total = args.backlog + args.concurrent_backlog + args.latency_orders
        orders = kroton_orders(total, args.seed)
        first = orders[: args.backlog]
        second = orders[args.backlog : args.backlog + args.concurrent_backlog]
        third = orders[args.backlog + args.concurrent_backlog :]
        say(f"quota {args.quota}, {backend_label(dbs)}; phase 1: backlog of {len(first)}")
        phases = [bench.backlog("backlog, one run at a time", first, 1)]
        say(f"phase 2: backlog of {len(second)}, {args.runs_at_once} runs at once")
        phases.append(bench.backlog(f"{args.runs_at_once} runs at once", second, args.runs_at_once))
        latency: tuple[Phase, dict[str, float]] | None = None
        if third:
            say(
                f"phase 3: {len(third)} orders paid over time, "
                f"a tick every {args.sensor_interval:g} s"
            )
            latency = bench.latency(third)
    finally:
        sandbox.stop()
    return report(args, dbs, bench.quota, phases, latency)


def backend_label(dbs: Databases) -> str:
    return f"{dbs.backend} app DB"


def report(
    args: argparse.Namespace,
    dbs: Databases,
    quota: Quota,
    phases: list[Phase],
    latency: tuple[Phase, dict[str, float]] | None,
) -> str:
    header = ("measure", *(p.name for p in phases))
    columns = [dict(phase_rows(p, quota)) for p in phases]
    rows = [(label, *(c[label] for c in columns)) for label in columns[0]]
    out = [
        machine_line(),
        "",
        f"quota {args.quota} (API and catalog, sandbox and Anubis), {backend_label(dbs)}, "
        f"sandbox latency {args.latency_ms:g} ms, revision {git_revision()}, "
        f"load average {args.load_at_start} at start / {load_average()} at end",
        "",
        markdown_table(header, rows),
    ]
    if latency is not None:
        phases = [*phases, latency[0]]
        title = ("time from a paid order to its registration", "result")
        out += ["", markdown_table(title, latency_rows(args, *latency))]
    explanations = [line for p in phases for line in explain_429s(p, quota)]
    if explanations:
        out += ["", "Why the 429s:", *(f"- {line}" for line in explanations)]
    return "\n".join(out)


def latency_rows(
    args: argparse.Namespace, phase: Phase, latency: dict[str, float]
) -> list[tuple[str, str]]:
    return [
        ("orders paid / registered in time", f"{latency['orders']} / {latency['measured']}"),
        ("sensor interval / settle", f"{args.sensor_interval:g} s / {args.settle:g} s"),
        ("mean time between paid orders", f"{args.arrival_mean:g} s"),
        ("**paid → registered, p50**", f"**{latency['p50']:.1f} s**"),
        ("**paid → registered, p95**", f"**{latency['p95']:.1f} s**"),
        ("paid → registered, max", f"{latency['max']:.1f} s"),
        ("of which paid → subscription created (p50)", f"{latency['intake_p50']:.1f} s"),
        (
            "of which subscription → register call (p50 / p95)",
            f"{latency['deliver_p50']:.1f} s / {latency['deliver_p95']:.1f} s",
        ),
        ("deliver runs", str(phase.stats.runs)),
        ("429s caused", str(sum(1 for e in phase.log if e["status"] == 429))),
    ]


if __name__ == "__main__":
    sys.exit(main())
