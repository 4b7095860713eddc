"""The app DB at the size a cutover gives it on day one (issue 20, item 5).

Builds, on PostgreSQL, in a database of its own (created and dropped here), an app DB of
1,000,000 subscriptions spread over a year (Kroton and Estácio, the four marketplaces, a
realistic mix of statuses: mostly final ones, a few hundred waiting for delivery, tens of
thousands of registered students still followed by status checks) with 5 events each (the
intake transition, two attempts with masked request/response bodies, a transition or retry, a
status check or note), generated in SQL (`generate_series`) on the real schema (the Alembic
migrations, `anubis_dagster.db.migrate.upgrade`), then `VACUUM ANALYZE` (what autovacuum does
after a bulk load). It then measures, in the same run:

- **due sensor tick**: `due_work_sensor` evaluated with `dg.build_sensor_context`, many ticks
  (every tick with no cursor: both flows of both integrations are asked; and steady ticks with
  the cursor a tick leaves), p50/p95;
- **`anubis student KEY`**: `find_student` + `render_markdown` over many keys (order ids,
  subscription ids, CPFs), and the CLI as a subprocess next to `anubis --help` (start-up);
- **`anubis status`**: the function and the CLI;
- **`anubis report --days 365`** (and `--days 30`): the CLI as a subprocess, wall time and its
  peak RSS (`wait4`); it runs under an address-space limit so that a report that loads the
  year into Python fails instead of taking the shared machine's memory;
- **health and metrics**: what the `health/<integration>` asset computes (`integration_health`,
  the probes aside: they are HTTP) and what `metrics/<integration>` computes (the 7-day report,
  24 h volume, anomalies, metrics and conversion table), per integration;
- **retention**: `maintenance.pii.apply_retention` in a subprocess over a backlog (the
  subscriptions and events older than `--retention-days`), wall time and peak RSS;
- **physical limits** beside them: a sequential scan (`count(*)`) of each table, one
  primary-key round trip, the interpreter's own start-up.

    .venv/bin/python -m benchmarks.appdb_scale_bench            # 1,000,000 subscriptions
    .venv/bin/python -m benchmarks.appdb_scale_bench --quick    # 50,000 (smoke run)
    ... --keep                                                   # keep the DB (EXPLAIN it)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.intake_bench import admin_url, machine_summary, markdown_table, percentile

DB_NAME = os.environ.get("ANUBIS_BENCH_APPDB_NAME", "anubis_bench_appdb_scale")  # one per engineer
EVENTS_PER_SUBSCRIPTION = 5
#: the report runs under this address-space limit (bytes): the old one needed ~10 GB here
REPORT_ADDRESS_LIMIT = 6 * 1024**3
CHILD_TIMEOUT_SECONDS = 600


# --------------------------------------------------------------------------------------------
# The database
# --------------------------------------------------------------------------------------------
def create_database() -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    engine.dispose()
    return make_url(admin_url()).set(database=DB_NAME).render_as_string(hide_password=False)


def drop_database() -> None:
    from sqlalchemy import create_engine, text

    from anubis_dagster.db.session import get_engine

    get_engine.cache_clear()
    engine = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
    engine.dispose()


# The generated rows. `g` holds one row per subscription with its random draws; the CASEs give
# each integration its statuses (deliver-open ones older than 14 days became dead letters, and
# followed students older than 150 days reached a final status, as they would have).
SUBSCRIPTIONS_SQL = """
WITH g AS (
  SELECT i,
         (i % 10) < 6 AS kroton,
         :start + (i::float8 / :n) * interval '365 days' AS created,
         random() AS r1, random() AS r2, random() AS r3, (i::bigint * 7919) % 400 AS campus
  FROM generate_series(1, :n) AS i
), s AS (
  SELECT g.*,
    extract(epoch FROM (:now - created)) / 86400 AS age,
    CASE WHEN kroton THEN
      CASE WHEN r1 < 0.30 THEN 'enrolled' WHEN r1 < 0.42 THEN 'dropped'
           WHEN r1 < 0.62 THEN 'registered' WHEN r1 < 0.64 THEN 'awaiting_register'
           WHEN r1 < 0.68 THEN 'failed' WHEN r1 < 0.72 THEN 'register_failed'
           WHEN r1 < 0.74 THEN 'empty_course' WHEN r1 < 0.80 THEN 'invalid'
           WHEN r1 < 0.83 THEN 'duplicate' WHEN r1 < 0.832 THEN 'unknown'
           WHEN r1 < 0.84 THEN 'to_sync' WHEN r1 < 0.845 THEN 'course_failed'
           WHEN r1 < 0.855 THEN 'to_register' ELSE 'enrolled' END
    ELSE
      CASE WHEN r1 < 0.70 THEN 'registered' WHEN r1 < 0.75 THEN 'failed'
           WHEN r1 < 0.80 THEN 'register_failed' WHEN r1 < 0.87 THEN 'invalid'
           WHEN r1 < 0.90 THEN 'duplicate' WHEN r1 < 0.905 THEN 'unknown'
           WHEN r1 < 0.915 THEN 'to_sync_lgpd' WHEN r1 < 0.92 THEN 'sync_lgpd_failed'
           WHEN r1 < 0.93 THEN 'to_register' ELSE 'registered' END
    END AS drawn
  FROM g
), t AS (
  SELECT s.*,
    CASE WHEN drawn IN ('to_sync', 'course_failed', 'to_register', 'to_sync_lgpd',
                        'sync_lgpd_failed') AND age > 14 THEN 'failed'
         WHEN kroton AND drawn IN ('registered', 'awaiting_register') AND age > 150
           THEN CASE WHEN r2 < 0.7 THEN 'enrolled' ELSE 'dropped' END
         ELSE drawn END AS status,
    created - (r2 * 600) * interval '1 second' AS paid,
    lpad(((i::bigint * 7919) % 100000000000)::text, 11, '0') AS cpf,
    (ARRAY['quero_bolsa', 'quero_bolsa', 'quero_bolsa', 'ead_com', 'ead_com',
           'guia_da_carreira', 'mundo_vestibular', 'quero_bolsa'])[1 + (i % 8)] AS origin
  FROM s
)
INSERT INTO subscriptions (
  id, integration_id, order_id, origin, cpf, payload, status, sent_at, checked_at,
  scheduled_to, attempts, last_error, active_cpf, order_updated_at, gender, first_name,
  external_id, ies_data, created_at, updated_at)
SELECT
  i,
  CASE WHEN kroton THEN :kroton ELSE :estacio END,
  50000000 + i,
  origin,
  cpf,
  json_build_object(
    'id', 50000000 + i, 'origin', origin, 'checkout_step', 'paid',
    'price', round((299.9 + (i % 50) * 7.5)::numeric, 2),
    'created_at', to_char(paid, 'YYYY-MM-DD"T"HH24:MI:SS'),
    'updated_at', to_char(paid, 'YYYY-MM-DD"T"HH24:MI:SS'),
    'base_user', json_build_object(
      'id', 10000 + i,
      'cpf', substr(cpf, 1, 3) || '.' || substr(cpf, 4, 3) || '.' || substr(cpf, 7, 3)
             || '-' || substr(cpf, 10, 2),
      'email', 'aluno' || i || '@example.com.br', 'phone_number', '(11) 97540-5666',
      'gender', NULL, 'birth_date', '1998-04-12',
      'full_name', (ARRAY['Maria Aparecida dos Santos', 'João Pedro Oliveira',
                          'Ana Carolina Lima', 'Lucas Gabriel Souza'])[1 + (i % 4)],
      'rg', '20000000',
      'address', json_build_object(
        'zipcode', '01310-100', 'address', 'Avenida Paulista', 'address_number', '1000',
        'neighborhood', 'Bela Vista', 'city', 'São Paulo', 'state', 'SP')),
    'offer', json_build_object(
      'id', 500 + campus, 'uuid', md5(campus::text), 'discount_percentage', 40.0,
      'offered_price', 359.94, 'university_id', CASE WHEN kroton THEN 10 ELSE 40 END,
      'education_group_id', CASE WHEN kroton THEN 1 ELSE 2 END,
      'metadata', json_build_object('idUnidadeOrigem', 5000 + campus,
                                    'dsTipoCurso', 'GRADUACAO', 'periodoCaptacao', 20271),
      'course', json_build_object(
        'id', 300 + (i % 40),
        'name', (ARRAY['Administração', 'Direito', 'Enfermagem', 'Pedagogia',
                       'Engenharia Civil', 'Psicologia', 'Contabilidade', 'Nutrição'])
                [1 + (i % 8)],
        'level', 'Graduação',
        'kind', (ARRAY['EaD', 'Presencial', 'Semipresencial', 'EaD'])[1 + (i % 4)],
        'shift', (ARRAY['Noite', 'Manhã', 'Virtual'])[1 + (i % 3)],
        'campus', json_build_object(
          'id', campus, 'name', 'Unidade ' || campus,
          'city', (ARRAY['São Paulo', 'Rio de Janeiro', 'Belo Horizonte', 'Curitiba',
                         'Salvador'])[1 + (campus % 5)],
          'state', (ARRAY['SP', 'RJ', 'MG', 'PR', 'BA'])[1 + (campus % 5)]),
        'university_offer', json_build_object('id', campus, 'enrollment_semester', '2027.1',
                                              'full_price', 599.9)))),
  status,
  CASE WHEN status IN ('awaiting_register', 'registered', 'enrolled', 'dropped', 'unknown')
       THEN paid + (20 + power(r3, 4) * 172800) * interval '1 second' END,
  CASE WHEN status IN ('registered', 'enrolled', 'dropped') THEN created + interval '3 days' END,
  CASE WHEN status IN ('to_sync', 'course_failed', 'to_register', 'to_sync_lgpd',
                       'sync_lgpd_failed') THEN :now + (r2 * 26 - 2) * interval '1 hour'
       WHEN status IN ('registered', 'awaiting_register') AND kroton
       THEN :now + (r2 * 24 - 1) * interval '1 hour' END,
  CASE WHEN status = 'failed' THEN 8 WHEN status IN ('invalid', 'duplicate') THEN 0
       ELSE 1 + floor(r3 * 2)::int END,
  CASE WHEN status IN ('failed', 'register_failed', 'course_failed', 'sync_lgpd_failed')
       THEN 'HTTP 500 from the partner: internal error (attempt 8 of 8)' END,
  CASE WHEN status NOT IN ('invalid', 'duplicate', 'empty_course', 'register_failed',
                           'dropped', 'failed') THEN cpf END,
  paid,
  CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END,
  (ARRAY['MARIA', 'JOAO', 'ANA', 'LUCAS'])[1 + (i % 4)],
  CASE WHEN status IN ('awaiting_register', 'registered', 'enrolled', 'dropped')
       THEN 'KR-' || (7000000 + i) END,
  CASE WHEN kroton THEN json_build_object('offer', json_build_object(
         'idOferta', 80000 + campus, 'codCurso', 300 + (i % 40), 'idUnidade', 5000 + campus))
       ELSE json_build_object('consent_receipt', md5(i::text), 'cod_municipio', 3550308,
                              'cod_bairro', 1200 + campus) END,
  created,
  CASE WHEN status IN ('to_sync', 'course_failed', 'to_register', 'to_sync_lgpd',
                       'sync_lgpd_failed', 'registered', 'awaiting_register')
       THEN least(:now, created + interval '3 days')
       ELSE least(:now, created + r3 * interval '20 days') END
FROM t
"""

# 5 events per subscription, like the real ones: the intake transition; the prepare step's
# attempt (Kroton's catalog, Estácio's consent); the registration attempt with its masked
# request; its transition (a `retry` row for the students that needed one); a status check
# (Kroton) or a note.
EVENTS_SQL = """
INSERT INTO subscription_events (
  subscription_id, status, operation_name, error_message, request, response, model, kind,
  integration_id, dagster_run_id, http_status, duration_ms, outcome, created_at, updated_at)
SELECT
  s.id,
  CASE k WHEN 1 THEN CASE WHEN s.status IN ('invalid', 'duplicate') THEN s.status
                          WHEN s.integration_id = :kroton THEN 'to_sync' ELSE 'to_sync_lgpd' END
         WHEN 4 THEN s.status END,
  CASE k WHEN 1 THEN 'intake'
         WHEN 2 THEN CASE WHEN s.integration_id = :kroton THEN 'sync_courses' ELSE 'sync_lgpd' END
         WHEN 3 THEN 'register' WHEN 4 THEN 'register'
         ELSE CASE WHEN s.integration_id = :kroton THEN 'check_status' ELSE 'note' END END,
  CASE WHEN k = 4 AND s.last_error IS NOT NULL THEN s.last_error END,
  CASE WHEN k = 2 THEN json_build_object(
         'method', 'GET', 'url', '/api/v1/catalog/ofertas?idUnidade=' || (s.id % 400),
         'params', json_build_object('curso', 300 + s.id % 40, 'turno', 'Noite',
                                     'periodo', '20271', 'modalidade', 'PRESENCIAL'))
       WHEN k = 3 THEN json_build_object(
         'method', 'POST', 'url', '/api/v2/inscricoes',
         'body', json_build_object(
           'nome', 'M*** A*** d** S***', 'cpf', '***.575.841-**',
           'email', 'a****@example.com.br', 'telefone', '(11) *****-5666',
           'dataNascimento', '1998-04-12', 'sexo', 'F', 'idOferta', 80000 + s.id % 400,
           'idUnidade', 5000 + s.id % 400, 'endereco', json_build_object(
             'cep', '01310-***', 'logradouro', 'A****** P*******', 'numero', '****',
             'bairro', 'B*** V****', 'cidade', 'São Paulo', 'uf', 'SP'),
           'origem', s.origin, 'parceiro', 'QUERO_EDUCACAO', 'aceiteTermos', true))
       WHEN k = 5 AND s.integration_id = :kroton THEN json_build_object(
         'method', 'GET', 'url', '/api/v2/inscricoes/KR-' || (7000000 + s.id)) END,
  CASE WHEN k = 2 THEN json_build_object(
         'status', 200, 'body', json_build_object('total', 1, 'ofertas', json_build_array(
           json_build_object('idOferta', 80000 + s.id % 400, 'vagas', 40,
                             'mensalidade', 599.9, 'turno', 'Noite'))))
       WHEN k = 3 THEN json_build_object(
         'status', CASE WHEN s.last_error IS NULL THEN 201 ELSE 500 END,
         'body', json_build_object('idInscricao', 'KR-' || (7000000 + s.id),
                                   'situacao', 'INSCRITO', 'mensagem', 'Inscrição recebida'))
       WHEN k = 5 AND s.integration_id = :kroton THEN json_build_object(
         'status', 200, 'body', json_build_object('idInscricao', 'KR-' || (7000000 + s.id),
                                                  'situacao', upper(s.status))) END,
  'Subscription',
  CASE WHEN k IN (2, 3) THEN 'attempt'
       WHEN k = 4 AND s.status IN ('failed', 'course_failed', 'sync_lgpd_failed') THEN 'retry'
       WHEN k = 5 AND s.integration_id = :kroton THEN 'attempt'
       WHEN k = 5 THEN 'note' ELSE 'transition' END,
  s.integration_id,
  CASE WHEN k <> 1 THEN md5((s.id / 50)::text || ':' || k) END,
  CASE WHEN k IN (2, 5) THEN 200 WHEN k = 3 THEN
    CASE WHEN s.last_error IS NULL THEN 201 ELSE 500 END END,
  CASE WHEN k IN (2, 3, 5) THEN 80 + (s.id * 37 % 900) END,
  CASE WHEN k IN (2, 5) THEN 'ok' WHEN k = 3 THEN
    CASE WHEN s.last_error IS NULL THEN 'ok' ELSE 'http_5xx' END END,
  s.created_at + (CASE k WHEN 5 THEN 1440 ELSE k END) * interval '1 minute',
  s.created_at + (CASE k WHEN 5 THEN 1440 ELSE k END) * interval '1 minute'
FROM subscriptions s CROSS JOIN generate_series(1, 5) AS k
WHERE s.id BETWEEN :low AND :high
ORDER BY s.id, k
"""


def valid_cpf(seed: int) -> str:
    base = [int(d) for d in f"{(seed * 104729 + 987654321) % 10**9:09d}"]
    for length in (9, 10):
        total = sum(d * (length + 1 - i) for i, d in enumerate(base[:length]))
        base.append((total * 10 % 11) % 10)
    return "".join(map(str, base))


def build(url: str, n: int, now: datetime) -> dict[str, Any]:
    """The app DB: migrations, integrations synced, the rows, VACUUM ANALYZE. The two big
    tables' secondary indexes are dropped during the load and created again from their own
    definitions (`pg_indexes`), as a bulk load would."""
    from sqlalchemy import create_engine, text

    from anubis_dagster.db.models import Integration
    from anubis_dagster.db.session import session_scope
    from anubis_dagster.resources import prepare_database

    started = time.perf_counter()
    prepare_database(url)  # Alembic upgrade (`db.migrate.upgrade`) + the integrations file
    with session_scope(url) as session:
        ids = {k: i for i, k in session.execute(text("SELECT id, key FROM integrations"))}
        session.execute(
            Integration.__table__.update().values(enabled=True)  # type: ignore[attr-defined]
        )
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    timings: dict[str, float] = {}
    with engine.connect() as c:
        c.execute(text("SET synchronous_commit = off"))
        c.execute(text("SET maintenance_work_mem = '512MB'"))
        c.execute(text("SET session_replication_role = replica"))  # no FK triggers in the load
        indexes = c.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
                "('subscriptions', 'subscription_events') AND indexname NOT LIKE '%pkey' "
                "AND indexdef NOT LIKE 'CREATE UNIQUE%'"
            )
        ).all()
        for name, _ in indexes:
            c.execute(text(f'DROP INDEX "{name}"'))
        c.execute(text("SELECT setseed(0.2026)"))
        t = time.perf_counter()
        params = {
            "n": n,
            "now": now,
            "start": now - timedelta(days=365),
            "kroton": ids["kroton"],
            "estacio": ids["estacio"],
        }
        c.execute(text(SUBSCRIPTIONS_SQL), params)
        timings["subscriptions_s"] = time.perf_counter() - t
        t = time.perf_counter()
        step = 200_000
        for low in range(1, n + 1, step):
            c.execute(
                text(EVENTS_SQL),
                {"kroton": ids["kroton"], "low": low, "high": min(n, low + step - 1)},
            )
            print(f"  events for subscriptions up to {min(n, low + step - 1):,}", flush=True)
        timings["events_s"] = time.perf_counter() - t
        # operator-typed keys need valid CPFs: a few students get one
        for sub_id in range(1, n + 1, max(1, n // 200)):
            c.execute(
                text(
                    "UPDATE subscriptions SET cpf = CAST(:cpf AS varchar), active_cpf = CASE WHEN "
                    "active_cpf IS NULL THEN NULL ELSE CAST(:cpf AS varchar) END WHERE id = :id"
                ),
                {"cpf": valid_cpf(sub_id), "id": sub_id},
            )
        for table in ("subscriptions", "subscription_events"):
            c.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
        t = time.perf_counter()
        for _, definition in indexes:
            c.execute(text(definition))
        timings["indexes_s"] = time.perf_counter() - t
        c.execute(text("SET session_replication_role = origin"))
        # the generated rows lack the report's offer columns, as an app DB upgraded to
        # 0012_scale_report_status would before its backfill: run that backfill, and time it
        t = time.perf_counter()
        with create_engine(url).begin() as migration:  # one transaction, as the upgrade's
            filled = offer_backfill()(migration)
        timings["offer_backfill_s"] = time.perf_counter() - t
        timings["offer_backfill_rows"] = filled
        print(f"  offer columns backfilled: {filled:,} rows", flush=True)
        t = time.perf_counter()
        c.execute(text("VACUUM ANALYZE subscriptions"))
        c.execute(text("VACUUM ANALYZE subscription_events"))
        c.execute(text("VACUUM ANALYZE follow_ups"))
        timings["vacuum_analyze_s"] = time.perf_counter() - t
        counts = dict(
            c.execute(
                text("SELECT status, count(*) FROM subscriptions GROUP BY status ORDER BY 2 DESC")
            ).all()
        )
        sizes = {
            table: c.execute(
                text(f"SELECT pg_size_pretty(pg_total_relation_size('{table}'))")
            ).scalar()
            for table in ("subscriptions", "subscription_events")
        }
        events = int(c.execute(text("SELECT count(*) FROM subscription_events")).scalar() or 0)
    engine.dispose()
    timings["total_s"] = time.perf_counter() - started
    return {
        "subscriptions": n,
        "events": events,
        "statuses": counts,
        "sizes": sizes,
        "timings": timings,
        "integration_ids": ids,
        "indexes": [d for _, d in indexes],
    }


def offer_backfill() -> Callable[[Any], int]:
    """`backfill` of migration 0012 (the migrations folder is not a package)."""
    import importlib.util

    from anubis_dagster.db.migrate import MIGRATIONS_DIR

    path = MIGRATIONS_DIR / "versions" / "0012_scale_report_status.py"
    spec = importlib.util.spec_from_file_location("migration_0012", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.backfill  # type: ignore[no-any-return]


def load() -> str:
    """The host's load averages (1, 5, 15 min), printed beside each figure."""
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def summary_ms(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50), 1),
        "p95_ms": round(percentile(samples, 95), 1),
        "max_ms": round(max(samples), 1),
    }


def run_child(
    args: list[str], env: dict[str, str], address_limit: int | None = None
) -> dict[str, Any]:
    """Wall time, peak RSS (`wait4`), exit code and the output's size of one subprocess."""

    def limit() -> None:
        if address_limit:
            resource.setrlimit(resource.RLIMIT_AS, (address_limit, address_limit))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=err, preexec_fn=limit)
        deadline = t + CHILD_TIMEOUT_SECONDS
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    return {
        "wall_s": round(wall, 3),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "rc": proc.returncode,
        "stdout_lines": stdout.count("\n"),
        "stderr_tail": stderr.strip().splitlines()[-1:] if proc.returncode else [],
        "stdout": stdout,
    }


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "anubis_dagster.cli", *args]


def measure(url: str, n: int, env: dict[str, str], retention_days: int) -> dict[str, Any]:
    import dagster as dg
    from sqlalchemy import create_engine, select, text

    from anubis_dagster.alerts.webhook import run_url
    from anubis_dagster.cli.status import attempt_counts, status_counts
    from anubis_dagster.console.report import build_report
    from anubis_dagster.console.student import find_student, parse_key, render_markdown
    from anubis_dagster.db.models import Integration
    from anubis_dagster.db.session import session_scope
    from anubis_dagster.definitions import build_definitions
    from anubis_dagster.delivery.pause import paused_integrations
    from anubis_dagster.health import service
    from anubis_dagster.health.metrics import METRICS_DAYS, integration_health
    from anubis_dagster.resources import AppDatabase

    results: dict[str, Any] = {}
    rng = random.Random(20)

    # -- physical limits ----------------------------------------------------------------------
    engine = create_engine(url)
    with engine.connect() as c:
        c.execute(text("SELECT 1"))
        physical = {
            "seq_scan_events_ms": summary_ms(
                timed(lambda: c.execute(text("SELECT count(*) FROM subscription_events")), 3)
            ),
            "seq_scan_subscriptions_ms": summary_ms(
                timed(lambda: c.execute(text("SELECT count(*) FROM subscriptions")), 3)
            ),
            # the floor of the report's conversion breakdown: one JSON path out of every
            # payload of the year (`json` is text, parsed on each access)
            "json_path_year_ms": summary_ms(
                timed(
                    lambda: c.execute(
                        text(
                            "SELECT count(payload #> '{offer,course,kind}') FROM subscriptions "
                            "WHERE created_at >= now() - interval '365 days'"
                        )
                    ),
                    1,
                )
            ),
            # the floor of `anubis status`'s attempt counts: counting the attempt rows
            "count_attempts_ms": summary_ms(
                timed(
                    lambda: c.execute(
                        text("SELECT count(*) FROM subscription_events WHERE kind = 'attempt'")
                    ),
                    3,
                )
            ),
            "pk_lookup_ms": summary_ms(
                timed(
                    lambda: c.execute(
                        text("SELECT status FROM subscriptions WHERE id = :id"),
                        {"id": rng.randint(1, n)},
                    ),
                    200,
                )
            ),
        }
    engine.dispose()
    python_start = [run_child([sys.executable, "-c", "pass"], env)["wall_s"] for _ in range(3)]
    physical["python_start_s"] = statistics.median(python_start)
    results["physical"] = physical
    results["loads"] = {"physical": load()}
    print("physical:", json.dumps(physical), "load", load(), flush=True)

    # -- due sensor tick ------------------------------------------------------------------------
    defs = build_definitions()
    sensor = defs.get_sensor_def("due_work_sensor")
    instance = dg.DagsterInstance.ephemeral()
    app_db = AppDatabase(url=url)

    def tick(cursor: str | None) -> Any:
        context = dg.build_sensor_context(
            cursor=cursor, instance=instance, resources={"app_db": app_db}
        )
        return sensor(context)

    first = tick(None)  # warms the engine and `prepare_database`
    requests = len(first.run_requests) if isinstance(first, dg.SensorResult) else 0
    steady_cursor = first.cursor if isinstance(first, dg.SensorResult) else None
    cold = timed(lambda: tick(None), 60)
    steady = timed(lambda: tick(steady_cursor), 60)
    results["sensor_tick"] = {
        "every_flow_asked": summary_ms(cold),
        "steady_paced": summary_ms(steady),
        "run_requests": requests,
    }
    results["loads"]["sensor_tick"] = load()
    print("sensor:", json.dumps(results["sensor_tick"]), "load", load(), flush=True)

    # -- anubis student --------------------------------------------------------------------------
    keys = [f"order:{50000000 + rng.randint(1, n)}" for _ in range(20)]
    keys += [f"#{rng.randint(1, n)}" for _ in range(20)]
    keys += [str(50000000 + rng.randint(1, n)) for _ in range(10)]  # order or subscription id
    cpf_ids = list(range(1, n + 1, max(1, n // 200)))
    keys += [f"cpf:{valid_cpf(rng.choice(cpf_ids))}" for _ in range(20)]

    def lookup(key: str) -> None:
        with session_scope(url) as session:
            render_markdown(parse_key(key), find_student(session, parse_key(key)), run_url)

    lookup(keys[0])
    student = [timed(lambda k=k: lookup(k), 1)[0] for k in keys]  # type: ignore[misc]
    help_runs = [run_child(cli("--help"), env)["wall_s"] for _ in range(5)]
    student_cli = [run_child(cli("student", keys[i]), env) for i in (0, 25, 55)]
    help_s = statistics.median(help_runs)
    results["student"] = {
        "function": summary_ms(student),
        "cli_help_start_s": help_s,
        "cli_s": [r["wall_s"] for r in student_cli],
        "cli_beyond_start_ms": round(
            (statistics.median(r["wall_s"] for r in student_cli) - help_s) * 1000
        ),
        "cli_rc": [r["rc"] for r in student_cli],
    }
    results["loads"]["student"] = load()
    print("student:", json.dumps(results["student"]), "load", load(), flush=True)

    # -- anubis status ---------------------------------------------------------------------------
    def status() -> None:
        with session_scope(url) as session:
            status_counts(session)
            attempt_counts(session)
            paused_integrations(session)

    def status_by_origin() -> None:
        with session_scope(url) as session:
            status_counts(session, by_origin=True)

    def counted(fn: Callable[[Any], Any]) -> Callable[[], None]:
        def run() -> None:
            with session_scope(url) as session:
                fn(session)

        return run

    status_runs = timed(status, 5)
    by_origin_runs = timed(status_by_origin, 3)
    # its parts: the status counts, the attempts of the window it shows, every attempt
    parts = {
        "status_counts_ms": summary_ms(timed(counted(status_counts), 3)),
        "attempts_window_ms": summary_ms(timed(counted(attempt_counts), 3)),
        "attempts_all_ms": summary_ms(timed(counted(lambda s: attempt_counts(s, days=0)), 3)),
    }
    status_cli = [run_child(cli("status"), env) for _ in range(3)]
    results["status"] = {
        "function": summary_ms(status_runs),
        "function_by_origin": summary_ms(by_origin_runs),
        **parts,
        "cli_s": [r["wall_s"] for r in status_cli],
        "cli_beyond_start_ms": round(
            (statistics.median(r["wall_s"] for r in status_cli) - help_s) * 1000
        ),
        "cli_rc": [r["rc"] for r in status_cli],
    }
    results["loads"]["status"] = load()
    print("status:", json.dumps(results["status"]), "load", load(), flush=True)

    # -- anubis report ---------------------------------------------------------------------------
    results["report"] = {}
    for days in (365, 30):
        run = run_child(cli("report", "--days", str(days)), env, REPORT_ADDRESS_LIMIT)
        run.pop("stdout")
        run["beyond_start_s"] = round(run["wall_s"] - help_s, 3)
        results["report"][f"days_{days}"] = run
        results["loads"][f"report_{days}"] = load()
        print(f"report --days {days}:", json.dumps(run), "load", load(), flush=True)

    # -- health and metrics assets' computations -------------------------------------------------
    now = datetime.now(UTC)
    results["health"] = {}
    with session_scope(url) as session:
        integrations = list(session.scalars(select(Integration).order_by(Integration.key)))
    for integration in integrations:

        def health(i: Integration = integration) -> None:
            with session_scope(url) as session:
                integration_health(session, i, now)

        def metrics(i: Integration = integration) -> None:
            with session_scope(url) as session:
                (report,) = build_report(session, days=METRICS_DAYS, now=now, integration=i.key)
            volume = service.volume_by_origin(url, i.id, now)
            service.find_anomalies(url, i.id, now)
            service.business_metrics(report, volume)
            service.conversion_table(report)

        results["health"][integration.key] = {
            "health_ms": summary_ms(timed(health, 3)),
            "metrics_ms": summary_ms(timed(metrics, 3)),
        }
    results["loads"]["health"] = load()
    print("health:", json.dumps(results["health"]), "load", load(), flush=True)

    # -- retention (last: it changes the data) ---------------------------------------------------
    cutoff = now - timedelta(days=retention_days)
    with session_scope(url) as session:
        backlog = session.execute(
            text(
                "SELECT count(*) FROM subscriptions WHERE updated_at < :cutoff AND status IN "
                "('invalid','duplicate','empty_course','unknown','register_failed','enrolled',"
                "'dropped','failed')"
            ),
            {"cutoff": cutoff},
        ).scalar()
        old_events = session.execute(
            text("SELECT count(*) FROM subscription_events WHERE created_at < :cutoff"),
            {"cutoff": cutoff},
        ).scalar()
    script = (
        "import functools, json, sys\n"
        "from datetime import datetime\n"
        "from anubis_dagster.db.session import session_scope\n"
        "from anubis_dagster.maintenance.pii import apply_retention\n"
        "r = apply_retention(functools.partial(session_scope, sys.argv[1]),"
        " datetime.fromisoformat(sys.argv[2]))\n"
        "print(json.dumps(r.as_metadata()))\n"
    )
    retention = run_child([sys.executable, "-c", script, url, cutoff.isoformat()], env)
    retention["report"] = retention.pop("stdout").strip()
    retention["backlog_subscriptions"] = backlog
    retention["backlog_events"] = old_events
    retention["retention_days"] = retention_days
    results["retention"] = retention
    results["loads"]["retention"] = load()
    print("retention:", json.dumps(retention), "load", load(), flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 subscriptions")
    parser.add_argument("-n", type=int, default=None, help="subscriptions (default 1,000,000)")
    parser.add_argument("--retention-days", type=int, default=345)
    parser.add_argument("--keep", action="store_true", help=f"keep the database {DB_NAME}")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    n = args.n or (50_000 if args.quick else 1_000_000)

    url = create_database()
    home = Path(tempfile.mkdtemp(prefix="anubis_appdb_bench_"))
    os.environ["ANUBIS_DATABASE_URL"] = url
    os.environ["ANUBIS_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    (home / "dagster_home").mkdir(parents=True)
    env = dict(os.environ)
    revision = (
        os.environ.get("ANUBIS_BENCH_REVISION")
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    )
    results: dict[str, Any] = {"machine": machine_summary(), "revision": revision, "n": n}
    try:
        now = datetime.now(UTC)
        print(f"building {n:,} subscriptions x {EVENTS_PER_SUBSCRIPTION} events…", flush=True)
        results["build"] = build(url, n, now)
        print("build:", json.dumps(results["build"]["timings"]), results["build"]["sizes"])
        results.update(measure(url, n, env, args.retention_days))
    finally:
        if not args.keep:
            drop_database()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print()
    print(render(results))
    return 0


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    where = f"{m['cpus']} CPUs ({m['cpu']}), {m['date']}, rev {r['revision']}"
    p = r["physical"]
    rows = [
        (
            "due sensor tick, every flow asked (p50 / p95)",
            "p95 ≤ 100 ms",
            f"{r['sensor_tick']['every_flow_asked']['p50_ms']} / "
            f"{r['sensor_tick']['every_flow_asked']['p95_ms']} ms",
            f"PK lookup {p['pk_lookup_ms']['p50_ms']} ms",
        ),
        (
            "due sensor tick, paced (p50 / p95)",
            "p95 ≤ 100 ms",
            f"{r['sensor_tick']['steady_paced']['p50_ms']} / "
            f"{r['sensor_tick']['steady_paced']['p95_ms']} ms",
            "",
        ),
        (
            "`anubis student` function (p50 / p95)",
            "≤ 200 ms",
            f"{r['student']['function']['p50_ms']} / {r['student']['function']['p95_ms']} ms",
            f"PK lookup {p['pk_lookup_ms']['p50_ms']} ms",
        ),
        (
            "`anubis student` CLI beyond `--help`",
            "≤ 200 ms",
            f"{r['student']['cli_beyond_start_ms']} ms "
            f"(`--help` {r['student']['cli_help_start_s']} s)",
            f"python start {p['python_start_s']} s",
        ),
        (
            "`anubis status` function (p50)",
            "≤ 500 ms",
            f"{r['status']['function']['p50_ms']} ms "
            f"(by origin {r['status']['function_by_origin']['p50_ms']} ms)",
            f"seq scan subscriptions {p['seq_scan_subscriptions_ms']['p50_ms']} ms",
        ),
        (
            "`anubis status` CLI beyond `--help`",
            "≤ 500 ms",
            f"{r['status']['cli_beyond_start_ms']} ms",
            f"count attempts {p.get('count_attempts_ms', {}).get('p50_ms', '-')} ms",
        ),
    ]
    st = r["status"]
    if "status_counts_ms" in st:
        rows.append(
            (
                "`anubis status` parts: status counts / attempts of 7 days / every attempt (p50)",
                "",
                f"{st['status_counts_ms']['p50_ms']} / {st['attempts_window_ms']['p50_ms']} / "
                f"{st['attempts_all_ms']['p50_ms']} ms",
                "",
            )
        )
    for days, rep in r["report"].items():
        state = (
            "" if rep["rc"] == 0 else f" (exit {rep['rc']}: {' '.join(rep['stderr_tail'])[:80]})"
        )
        rows.append(
            (
                f"`anubis report --days {days.removeprefix('days_')}` CLI",
                "≤ 5 s, ≤ 300 MB" if days == "days_365" else "",
                f"{rep['wall_s']} s, {rep['max_rss_mb']} MB{state}",
                f"seq scan events {p['seq_scan_events_ms']['p50_ms']} ms; one JSON path "
                f"a year {p.get('json_path_year_ms', {}).get('p50_ms', '-')} ms",
            )
        )
    for key, h in r["health"].items():
        rows.append(
            (
                f"health/{key} computation (p50)",
                "≤ 10 s",
                f"{h['health_ms']['p50_ms']} ms",
                "",
            )
        )
        rows.append(
            (f"metrics/{key} computation (p50)", "≤ 10 s", f"{h['metrics_ms']['p50_ms']} ms", "")
        )
    ret = r["retention"]
    rows.append(
        (
            f"retention over {ret['backlog_subscriptions']:,} subscriptions / "
            f"{ret['backlog_events']:,} events",
            "bounded memory",
            f"{ret['wall_s']} s, peak RSS {ret['max_rss_mb']} MB, rc {ret['rc']}: {ret['report']}",
            "",
        )
    )
    b = r["build"]
    if "offer_backfill_s" in b["timings"]:
        rows.append(
            (
                f"offer columns backfill (migration 0012), {b['timings']['offer_backfill_rows']:,}"
                " rows",
                "",
                f"{b['timings']['offer_backfill_s']:.1f} s",
                "",
            )
        )
    head = (
        f"{r['n']:,} subscriptions, {b['events']:,} events ({b['sizes']}); built in "
        f"{b['timings']['total_s']:.0f} s; {where}; load (1/5/15 min) by section: "
        f"{r.get('loads', {})}"
    )
    return head + "\n\n" + markdown_table(("figure", "target", "measured", "physical limit"), rows)


if __name__ == "__main__":
    sys.exit(main())
