"""The shadow comparison at scale (`legacy/shadow_report.compare`, issue 20): how fast it reads
the legacy side and how its memory grows with each side.

Generates, in this process, `--anubis` subscriptions of one integration (nine in ten
`shadowed` with a 9-field registration payload, one in ten `invalid`) and streams `--legacy`
legacy records (half with an order id, half matched by CPF; every payload differs from ours in
a number written as an integer, so no pair takes the equality fast path, and every 7th in a
course code). Prints the time, legacy rows per second and the peak RSS; run it at two legacy
sizes to see that memory does not follow the legacy side. The generator's own cost is included
(about a fifth of the time).

    .venv/bin/python -W ignore -m benchmarks.shadow_compare_bench --anubis 200000 --legacy 1000000
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from anubis_dagster.legacy.records import LegacyRecord
from anubis_dagster.legacy.shadow_report import AnubisRecord, compare

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=365)


def payload(i: int) -> dict[str, Any]:
    return {
        "nomeCandidato": f"Aluno {i}",
        "cpfCandidato": f"{i:011d}",
        "email": f"a{i}@example.com",
        "codCurso": str(i % 500),
        "codCampus": "E300",
        "telefone": "11975405666",
        "endereco": {"cep": "01310100", "numero": str(i % 999), "uf": "SP"},
        "dataNascimento": "1998-04-12",
        "indModalidade": "E",
    }


def anubis(count: int) -> Iterator[AnubisRecord]:
    for i in range(count):
        shadowed = i % 10 != 0
        yield AnubisRecord(
            "kroton",
            i + 1,
            i + 1,
            f"{i:011d}",
            "shadowed" if shadowed else "invalid",
            SINCE + timedelta(seconds=i * 30),
            None if shadowed else "base_user.cpf: not a valid CPF",
            payload(i) if shadowed else None,
        )


def legacy(count: int) -> Iterator[LegacyRecord]:
    for i in range(count):
        sent = payload(i)
        sent["endereco"] = {**sent["endereco"], "numero": i % 999}
        if i % 7 == 0:
            sent["codCurso"] = "X"
        yield LegacyRecord(
            "kroton",
            f"L{i}",
            f"{i:011d}",
            "registered",
            i + 1 if i % 2 else None,
            "P",
            SINCE + timedelta(seconds=i * 30 + 5),
            (),
            sent,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anubis", type=int, default=200_000)
    parser.add_argument("--legacy", type=int, default=1_000_000)
    args = parser.parse_args()
    started = time.perf_counter()
    report = compare(
        anubis(args.anubis), legacy(args.legacy), integration="kroton", since=SINCE, until=UNTIL
    )
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"anubis {args.anubis:,}, legacy {args.legacy:,}: {elapsed:.1f} s, "
        f"{args.legacy / elapsed:,.0f} legacy rows/s, peak RSS {peak:.0f} MB; both "
        f"{report.both.count:,}, only legacy {report.only_legacy.count:,}, only Anubis "
        f"{report.only_anubis.count:,}, payloads differing {report.differing_payloads:,}"
    )


if __name__ == "__main__":
    main()
