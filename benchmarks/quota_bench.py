"""One quota, several run workers with skewed clocks: is it used fully and never exceeded?

The Kroton sandbox runs in this process (port 0) with Kroton's quota shape scaled down
(`--quota 20/6`: the real 100/300 s in fewer, shorter windows). `--workers` processes (default
4) each play a run worker on a machine whose clock is off by its `--skews` value: the worker
replaces `time.time`/`time_ns` before it imports anything, so every library in it reads the
skewed clock (the limiter's `worker_clock`, pyrate-limiter's SQLite clock). Each worker sends,
through the product's Kroton API client (attempt rows, token cache, the limiter under test):

- **registrations** (`POST` inscription, `Priority.HIGH`), arriving at random (Poisson) so that
  all workers together ask for `--registration-share` of the quota;
- **status checks** (`GET` inscriptions by CPF, `Priority.LOW`), back to back: they take
  whatever the registrations leave, so the quota is always in demand.

`--pause-ms 500` stalls worker 0 in two ways, `--pause-every` seconds apart each: right after
the limiter hands it a slot and before the request leaves (the worst moment; one thread), and
the whole process with SIGSTOP/SIGCONT at a random moment (as a stop-the-world GC would, maybe
while it holds the bucket's lock).

`--limiter` picks what the workers use: `anubis` (the product: database clock, slots counted from
their answer), `worker-clock` (the product on the workers' own skewed clocks, the old
behaviour) or `pyrate` (pyrate-limiter 4's `PostgresBucket` / `SQLiteBucket` with a blocking
`Limiter`, one rate of `limit` per `period` + Anubis's margin; it has no priorities). The
sandbox counts what matters: 429s and the most requests it accepted in any window.

    .venv/bin/python -W ignore -m benchmarks.quota_bench --minutes 3
    .venv/bin/python -W ignore -m benchmarks.quota_bench --minutes 3 --pause-ms 500
    .venv/bin/python -W ignore -m benchmarks.quota_bench --minutes 3 --limiter pyrate --sqlite
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.intake_bench import (
    Databases,
    git_revision,
    load_average,
    machine_line,
    markdown_table,
    percentile,
    say,
)

LIMITERS = ("anubis", "worker-clock", "pyrate")
BUCKET = "kroton:api"


# --------------------------------------------------------------------------------------------
# A run worker (its own process)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerPlan:
    index: int
    skew: float
    db_url: str
    base_url: str
    quota: str
    limiter: str
    registrations_per_second: float  # this worker's share
    offer_id: str
    deadline: float  # real epoch seconds
    pause: float  # seconds; 0 = none (only worker 0 pauses)
    pause_every: float
    out: str
    integration_id: int


def cpf_number(n: int) -> str:
    """A valid CPF (check digits computed) from a serial number."""
    digits = [int(d) for d in f"{n % 10**9:09d}"]
    for length in (9, 10):
        total = sum(d * w for d, w in zip(digits, range(length + 1, 1, -1), strict=False))
        digits.append((total * 10 % 11) % 10)
    return "".join(map(str, digits))


def register_body(cpf: str, offer_id: str) -> dict[str, Any]:
    return {
        "dadosPessoais": {
            "celular": "11975405666",
            "cpf": cpf,
            "dataNascimento": "1989-08-31",
            "email": "candidata@example.com",
            "endereco": {
                "cep": "12243-740",
                "logradouro": "Rua Pedro de Toledo",
                "municipio": "São José dos Campos",
                "numero": "48",
                "uf": "SP",
            },
            "necessidadesEspeciais": [],
            "nome": "Maria Candidata",
            "rg": "20000000",
            "sexo": "F",
        },
        "inscricao": {
            "canalVendas": {"id": 85},
            "idAfiliado": "DL00QUERO12991",
            "idTipoProva": 1,
            "ofertas": {"primeiraOpcao": {"id": offer_id}},
        },
    }


class PyrateAdapter:
    """pyrate-limiter behind the three calls `ApiClient` makes on its limiter."""

    def __init__(self, db_url: str, limit: int, period: float, margin: float) -> None:
        from pyrate_limiter import Limiter, Rate

        rate = Rate(limit, round((period + margin) * 1000))
        if db_url.startswith("sqlite"):
            from pyrate_limiter import SQLiteBucket

            path = db_url.removeprefix("sqlite:///")
            bucket: Any = SQLiteBucket.init_from_file(
                [rate], table="pyrate_kroton", db_path=path, use_file_lock=True
            )
        else:
            from psycopg_pool import ConnectionPool
            from pyrate_limiter import PostgresBucket
            from sqlalchemy.engine import make_url

            url = make_url(db_url)
            conninfo = f"host={url.host} port={url.port} user={url.username} dbname={url.database}"
            pool = ConnectionPool(conninfo, min_size=1, max_size=4, open=True)
            bucket = PostgresBucket(pool, "pyrate_kroton", [rate])
        self.limiter = Limiter(bucket)
        self.bucket = BUCKET

    def acquire(self, priority: Any = None, *, max_wait: float = 3600) -> Any:
        from anubis_dagster.clients.quota import Acquired

        started = time.monotonic()
        while not self.limiter.try_acquire(BUCKET, blocking=True, timeout=max_wait):
            pass
        return Acquired(slot=0, waited=time.monotonic() - started)

    def finish(self, slot: int, *, answered_at: float | None, sent: bool = True) -> None:
        """pyrate counts a request from the moment it was let through: nothing to do."""

    def block_for(self, seconds: float) -> None:
        time.sleep(seconds)  # no shared block: this thread alone waits out the 429


def worker_main(plan: WorkerPlan) -> None:
    """Runs in its own process; writes one JSON line per request to `plan.out`."""
    real_time, real_time_ns = time.time, time.time_ns
    skew_ns = int(plan.skew * 1e9)
    time.time = lambda: real_time() + plan.skew
    time.time_ns = lambda: real_time_ns() + skew_ns

    from anubis_dagster.clients.quota import Priority, Quota
    from anubis_dagster.db.rate_limit import RateLimiter, worker_clock
    from anubis_dagster.delivery.attempts import call_context
    from anubis_dagster.integrations.kroton.client import CPF_PATH, REGISTER_PATH
    from anubis_dagster.integrations.kroton.resources import KrotonApiResource

    quota = Quota.parse(plan.quota, name="--quota")
    ctx = call_context(plan.db_url, plan.integration_id, log=lambda _line: None)
    api = KrotonApiResource(
        base_url=plan.base_url,
        client_id="sandbox-client",
        secret="sandbox-secret",
        subscription="sandbox-subscription",
        rate_limit=plan.quota,
    ).client(ctx, "kroton")
    if plan.limiter == "pyrate":
        api.limiter = PyrateAdapter(plan.db_url, quota.limit, quota.period, quota.margin)
    elif plan.limiter == "worker-clock":
        api.limiter = RateLimiter(plan.db_url, BUCKET, quota, clock=worker_clock())
    limiter = api.limiter

    granted = threading.local()  # when this thread's last slot was handed out (real time)
    acquire_slot = limiter.acquire

    def acquire_noted(*args: Any, **kwargs: Any) -> Any:
        granted.asking = real_time()
        slot = acquire_slot(*args, **kwargs)
        granted.at = real_time()
        return slot

    limiter.acquire = acquire_noted  # type: ignore[method-assign]

    if plan.pause and plan.index == 0:
        acquire = limiter.acquire
        next_pause = [time.monotonic() + plan.pause_every]

        def acquire_then_stall(*args: Any, **kwargs: Any) -> Any:
            granted = acquire(*args, **kwargs)
            if time.monotonic() >= next_pause[0]:
                next_pause[0] = time.monotonic() + plan.pause_every
                time.sleep(plan.pause)  # the slot is ours; the request has not left
            return granted

        limiter.acquire = acquire_then_stall  # type: ignore[method-assign]

    records: list[dict[str, Any]] = []
    lock = threading.Lock()

    def note(kind: str, asked: float, started: float, status: int | None) -> None:
        record = {"kind": kind, "asked": asked, "started": started, "granted": granted.at}
        record["asking"] = granted.asking
        with lock:
            records.append({**record, "done": real_time(), "status": status})

    def registrations() -> None:
        rng = random.Random(plan.index)
        serial = plan.index * 10_000_000
        due = real_time()
        while True:
            due += rng.expovariate(plan.registrations_per_second)
            if due >= plan.deadline:
                return
            if due > real_time():
                time.sleep(due - real_time())
            serial += 1
            body = register_body(cpf_number(serial), plan.offer_id)
            started = real_time()
            result = api.request(
                "register", "POST", REGISTER_PATH, json_body=body, idempotent=False
            )
            note("register", due, started, result.status)

    def checks() -> None:
        serial = plan.index * 10_000_000 + 5_000_000
        while real_time() < plan.deadline:
            serial += 1
            asked = real_time()
            cpf = cpf_number(serial)
            path = CPF_PATH.format(cpf=cpf)
            result = api.request("check_cpf", "GET", path, priority=Priority.LOW)
            note("check", asked, asked, result.status)

    threads = [threading.Thread(target=registrations), threading.Thread(target=checks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    api.close()
    Path(plan.out).write_text("\n".join(json.dumps(r) for r in records))


def pause_process(pid: int, pause: float, every: float, deadline: float, stop: threading.Event):
    """Stops worker 0 for `pause` seconds at a random moment of every `every` seconds."""
    rng = random.Random(42)
    while not stop.is_set() and time.time() < deadline:
        if stop.wait(rng.uniform(0, every)):
            return
        os.kill(pid, signal.SIGSTOP)
        time.sleep(pause)
        os.kill(pid, signal.SIGCONT)
        stop.wait(every)


# --------------------------------------------------------------------------------------------
# What the sandbox saw
# --------------------------------------------------------------------------------------------
def most_in_any_window(times: list[float], period: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - period:
            start += 1
        best = max(best, end - start + 1)
    return best


def spread(records: list[dict[str, Any]], since: str) -> str:
    waits = [r["granted"] - r[since] for r in records]
    if not waits:
        return "-"
    return f"{percentile(waits, 50):.2f} / {percentile(waits, 95):.2f} / {max(waits):.2f} s"


def report(
    args: argparse.Namespace,
    log: list[dict[str, Any]],
    stats: dict[str, Any],
    records: list[dict[str, Any]],
    window: tuple[float, float],
    load: tuple[str, str],
) -> str:
    from anubis_dagster.clients.quota import Quota

    quota = Quota.parse(args.quota, name="--quota")
    api = [e for e in log if e["api"] == "api"]
    accepted = sorted(e["ts"] for e in api if e["status"] != 429)
    rejected = [e for e in api if e["status"] == 429]
    start, end = window
    first = accepted[0]
    whole = math.floor((end - first) / quota.period)
    in_whole = sum(1 for t in accepted if t < first + whole * quota.period)
    utilisation = in_whole / (whole * quota.limit)
    # the steady rate: the calls after the first window's burst over the time they took (a
    # sender that reuses every slot the moment it frees scores 100%)
    steady = [t for t in accepted if t <= end]  # the workers stop asking at the end
    rate = (len(steady) - quota.limit) / ((steady[-1] - first) / quota.period * quota.limit)
    registrations = [r for r in records if r["kind"] == "register"]
    checks = [r for r in records if r["kind"] == "check"]
    # a check handed a slot while a registration had been asking the limiter for one for over
    # 50 ms (its first try): a slot the check took ahead of it
    jumped = sum(
        1
        for c in checks
        if any(r["asking"] + 0.05 < c["granted"] < r["granted"] for r in registrations)
    )
    # how long after a slot could be reused its next call reached Kroton: the time lost per
    # call (answer trip, margin, waking up, the next call's own writes), while calls queued
    turnaround = [
        accepted[i] - accepted[i - quota.limit] - quota.period
        for i in range(quota.limit, len(accepted))
    ]
    by_endpoint: dict[str, int] = {}
    for e in api:
        if e["status"] != 429:
            by_endpoint[e["endpoint"]] = by_endpoint.get(e["endpoint"], 0) + 1
    sent = end - start
    windows = sent / quota.period
    skews = ", ".join(f"{s:+g} s" for s in args.skews)
    pause = (
        f"{args.pause_ms:g} ms every {args.pause_every:g} s, after a slot and by SIGSTOP"
        if args.pause_ms
        else "none"
    )
    calls = (
        f"{len(accepted)} ({by_endpoint.get('token', 0)} / {by_endpoint.get('register', 0)} / "
        f"{by_endpoint.get('inscriptions_by_cpf', 0)})"
    )
    most = f"{stats['max_in_window'].get('api')} / {most_in_any_window(accepted, quota.period)}"
    share = len(registrations) / sent * quota.period / quota.limit
    rows = [
        ("limiter / app DB / revision", f"{args.limiter} / {args.backend} / {git_revision()}"),
        ("quota (sandbox and Anubis), margin", f"{args.quota}, {quota.margin * 1000:.0f} ms"),
        ("run workers, their clock skews", f"{args.workers}, {skews}"),
        ("forced pause in worker 0", pause),
        ("load average at start / end", f"{load[0]} / {load[1]}"),
        (
            "sending time",
            f"{sent:.0f} s = {windows:.0f} windows (at 100/300: {windows * 5:.0f} min)",
        ),
        ("calls accepted by Kroton (token / register / check)", calls),
        (
            "**utilisation, whole windows from the first call**",
            f"**{utilisation:.1%}** ({in_whole} in {whole} windows of {quota.limit})",
        ),
        (
            "**utilisation, steady: (calls − limit) ÷ (quota × first → last call by the end)**",
            f"**{rate:.1%}**",
        ),
        ("**429s (violations seen by the sandbox)**", f"**{len(rejected)}**"),
        ("most accepted in any window (sandbox / its log)", f"{most} (limit {quota.limit})"),
        (
            "slot turnaround: call − (call `limit` before + period), p50 / p95",
            f"{percentile(turnaround, 50) * 1000:.0f} / {percentile(turnaround, 95) * 1000:.0f} ms",
        ),
        ("registrations sent", f"{len(registrations)} ({share:.0%} of the quota)"),
        ("registration: due → slot, p50 / p95 / max", spread(registrations, "asked")),
        ("registration: asking → slot, p50 / p95 / max", spread(registrations, "asking")),
        ("check: asking → slot, p50 / p95 / max", spread(checks, "asking")),
        (
            "**checks given a slot while a registration waited**",
            f"**{jumped}** of {len(checks)}",
        ),
    ]
    return markdown_table(("measure", "result"), rows)


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sqlite", action="store_true", help="SQLite app DB (default PostgreSQL)")
    parser.add_argument("--limiter", choices=LIMITERS, default="anubis")
    parser.add_argument("--quota", default="20/6")
    parser.add_argument("--minutes", type=float, default=30.0, help="sending time, real minutes")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--skews", default="-2,-0.667,0.667,2", help="seconds, one per worker")
    parser.add_argument("--registration-share", type=float, default=0.75)
    parser.add_argument("--pause-ms", type=float, default=0.0)
    parser.add_argument("--pause-every", type=float, default=5.0)
    parser.add_argument("--save", help="write the sandbox's log and the workers' records here")
    args = parser.parse_args(argv)
    args.backend = "sqlite" if args.sqlite else "postgresql"
    args.skews = [float(s) for s in args.skews.split(",")]
    if len(args.skews) != args.workers:
        parser.error("--skews needs one value per worker")

    from anubis_dagster.clients.quota import Quota
    from anubis_dagster.db.migrate import upgrade
    from anubis_dagster.db.models import Integration
    from anubis_dagster.db.session import get_engine, session_scope
    from anubis_sandboxes.demo.catalog import kroton_catalog_documents
    from anubis_sandboxes.kroton import KrotonSandbox, KrotonSandboxSettings

    quota = Quota.parse(args.quota, name="--quota")
    say(machine_line())
    load_start = load_average()
    dbs = Databases(args.backend)
    try:
        db_url = dbs.fresh(f"quota_{os.getpid()}")  # runs side by side never share one
        upgrade(db_url)
        with session_scope(db_url) as session:
            integration = Integration(name="Kroton", type="kroton", key="kroton", interval=1)
            session.add(integration)
            session.flush()
            integration_id = integration.id
        get_engine(db_url).dispose()
        offer = next(
            d["id"]
            for d in kroton_catalog_documents()
            if d["dsCurso"] == "Direito" and d["id"][0].isdigit()
        )
        settings = KrotonSandboxSettings(
            token_lifetime=3600,
            rate_limits={"api": args.quota, "catalog": "100000/1", "captacao": "100000/1"},
        )
        with KrotonSandbox(settings) as sandbox:
            start = time.time() + 3.0  # the workers' imports
            deadline = start + args.minutes * 60
            plans = [
                WorkerPlan(
                    index=i,
                    skew=skew,
                    db_url=db_url,
                    base_url=sandbox.base_url,
                    quota=args.quota,
                    limiter=args.limiter,
                    registrations_per_second=args.registration_share
                    * quota.limit
                    / quota.period
                    / args.workers,
                    offer_id=offer,
                    deadline=deadline,
                    pause=args.pause_ms / 1000,
                    pause_every=args.pause_every,
                    out=str(dbs.home / f"worker{i}.jsonl"),
                    integration_id=integration_id,
                )
                for i, skew in enumerate(args.skews)
            ]
            context = multiprocessing.get_context("spawn")
            processes = [context.Process(target=worker_main, args=(p,)) for p in plans]
            say(
                f"{args.workers} workers, {args.limiter}, {args.backend}, quota {args.quota}, "
                f"{args.minutes:g} min, pause {args.pause_ms:g} ms"
            )
            for process in processes:
                process.start()
            stop = threading.Event()
            pauser = None
            if args.pause_ms:
                pauser = threading.Thread(
                    target=pause_process,
                    args=(processes[0].pid, args.pause_ms / 1000, args.pause_every, deadline, stop),
                )
                pauser.start()
            for process in processes:
                process.join()
            stop.set()
            if pauser:
                pauser.join()
            log, stats = sandbox.requests_log(), sandbox.stats()
        records = [
            json.loads(line)
            for p in plans
            if Path(p.out).exists()
            for line in Path(p.out).read_text().splitlines()
        ]
        if args.save:
            Path(args.save).write_text(json.dumps({"log": log, "records": records}))
        if any(process.exitcode for process in processes):
            say(f"worker exit codes: {[p.exitcode for p in processes]}")
        print(report(args, log, stats, records, (start, deadline), (load_start, load_average())))
    finally:
        dbs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
