"""Intake's first pass in instructions per order, for A/B comparisons that the host cannot blur.

CPU time still moves with the host (the same code measured 125 to 180 µs of CPU per order in
one afternoon); the instructions a pass executes do not. This runs a SQLite first pass
(`intake_bench.service_pass`: `ingest` without Dagster, in intake's own chunks) under
valgrind's callgrind twice, with `--small` and `--large` orders, and prints the difference per
order: imports, migrations and start-up cancel out, and SQLite's own work is counted with
intake's (PostgreSQL's server is another process and is not). Give one or more source trees
(a `git archive` copy of another revision, say) to compare them in one run:

    .venv/bin/python -m benchmarks.intake_instructions . /tmp/base
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess  # nosec B404: runs valgrind and this interpreter, with fixed arguments
import sys
from pathlib import Path

_COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(tree: Path, count: int) -> int:
    """Instructions (callgrind's Ir) of a process that runs one SQLite first pass of `count`
    orders with `tree` first on its import path."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-W",
        "ignore",
        "-m",
        "benchmarks.intake_instructions",
        "--pass-only",
        str(count),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(  # nosec B603: fixed arguments
        command, cwd=tree, env=env, capture_output=True, text=True, check=True
    )
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def one_pass(count: int) -> None:
    """The measured process: load `count` demo orders (in a child, not counted), then one
    first pass on a fresh SQLite app DB."""
    from benchmarks import intake_bench as bench

    dbs = bench.Databases("sqlite")
    try:
        orders = dbs.fresh("orders")
        bench.load_orders(orders, count, 7)
        batches, _, _ = bench.plan_all(orders, 5000)
        app = dbs.fresh("app")
        with bench.app_env(app, orders):
            bench.service_pass("first pass", app, orders, batches)
    finally:
        dbs.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path, default=[Path(".")])
    parser.add_argument("--small", type=int, default=500, help="orders of the first process")
    parser.add_argument("--large", type=int, default=2500, help="orders of the second")
    parser.add_argument("--pass-only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pass_only is not None:
        one_pass(args.pass_only)
        return 0
    for tree in args.trees:
        tree = tree.resolve()
        small, large = instructions(tree, args.small), instructions(tree, args.large)
        per_order = (large - small) / (args.large - args.small)
        print(f"{tree}: {per_order:,.0f} instructions per order ({small:,} / {large:,})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
