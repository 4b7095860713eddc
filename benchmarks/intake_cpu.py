"""Intake's first pass in CPU time per order, for A/B comparisons on a loaded host.

On a host shared with other work, wall-clock orders/s move by 2× from one run to the next (and
the physical limit with them); the CPU time a pass costs moves much less, and its minimum over
a few passes on fresh app DBs least of all. This prints, for `intake.service.ingest` alone (the
op's loop without Dagster: `intake_bench.service_pass`), the smallest and the median CPU time
per order of this process, and on PostgreSQL the CPU time of the server backends that served
the pass (from `/proc`, so the server must run on this machine). Run it for revision A, then
B, then A again (a `git archive` copy run with `PYTHONPATH` pointing at it):

    .venv/bin/python -W ignore -m benchmarks.intake_cpu --sqlite --count 5000 --passes 6
    .venv/bin/python -W ignore -m benchmarks.intake_cpu --postgres --count 5000 --passes 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks import intake_bench as bench


def server_cpu_seconds(url: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to `url`'s database (0 on
    SQLite). The pass's pooled connections live until the end, so a difference is the pass's."""
    if not url.startswith("postgresql"):
        return 0.0
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(bench.admin_url())
    with engine.connect() as connection:
        pids = connection.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
            {"name": make_url(url).database},
        ).all()
    engine.dispose()
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument("--sqlite", action="store_true")
    backend.add_argument("--postgres", action="store_true", help="the default")
    parser.add_argument("--count", type=int, default=5000, help="orders")
    parser.add_argument("--passes", type=int, default=5, help="first passes, each on a fresh DB")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    dbs = bench.Databases("sqlite" if args.sqlite else "postgresql")
    try:
        orders = dbs.fresh("orders")
        bench.load_orders(orders, args.count, args.seed)
        bench.analyze(orders)
        batches, _, _ = bench.plan_all(orders, 5000)
        cpu, server, wall = [], [], []
        load = bench.load_average()
        for number in range(args.passes):
            app = dbs.fresh(f"app_{number}")
            with bench.app_env(app, orders):
                server_before = server_cpu_seconds(app)
                cpu_before, wall_before = time.process_time(), time.perf_counter()
                done = bench.service_pass("first pass", app, orders, batches)
                cpu.append(time.process_time() - cpu_before)
                wall.append(time.perf_counter() - wall_before)
                server.append(server_cpu_seconds(app) - server_before)
        per_order = 1e6 / done.orders
        print(
            f"{dbs.backend}, {done.orders} orders, {done.created} created, {args.passes} passes, "
            f"load {load} → {bench.load_average()}, revision {bench.git_revision()}\n"
            f"  intake process CPU per order: min {min(cpu) * per_order:.1f} µs, "
            f"median {statistics.median(cpu) * per_order:.1f} µs\n"
            f"  server CPU per order (PostgreSQL backends): min {min(server) * per_order:.1f} µs\n"
            f"  wall: best {done.orders / min(wall):,.0f} orders/s"
        )
    finally:
        dbs.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
