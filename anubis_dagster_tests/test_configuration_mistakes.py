"""Configuration mistakes an operator makes, each refused at load or by `anubis doctor` with a
message naming the setting (issue 9 item 4).

Every case starts from a complete, valid environment (the control test proves `anubis doctor`
accepts it and the definitions load), changes one thing, and asserts that the mistake is not
accepted: the definitions refuse to load (mistakes the model can see) or the doctor exits 1
(mistakes only a look at the databases or a production rule can see), naming the setting, and
never echoing a secret's value.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from anubis_dagster.cli import main
from anubis_dagster.config.integrations import DEFAULT_FILE, ConfigError
from anubis_dagster.db.migrate import upgrade
from anubis_dagster.db.session import get_engine
from anubis_dagster.definitions import build_definitions
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster.settings import (
    Settings,
    SettingsError,
    owned_prefixes,
    reset_settings,
    shipped_environments,
)

GOOD_SECRETS = {
    "API_KROTON_SECRET": "kroton-secret-value-1",
    "API_KROTON_SUBSCRIPTION": "kroton-subscription-2",
    "CATALOG_KROTON_API_KEY": "catalog-api-key-3",
    "API_ESTACIO_NEW_TOKEN": "estacio-token-value-4",
    "API_ONETRUST_CLIENT_SECRET": "onetrust-secret-5",
    "API_ONETRUST_TOKEN": "onetrust-token-value-6",
}
GOOD_ENV = {
    "API_KROTON_BASE_URL": "http://127.0.0.1:9/kroton",
    "API_KROTON_CLIENT_ID": "anubis",
    "CATALOG_KROTON_BASE_URL": "http://127.0.0.1:9/catalog",
    "API_ESTACIO_NEW_BASE_URL": "http://127.0.0.1:9/estacio",
    "API_ESTACIO_CLIENT_ID": "quero",
    "API_ONETRUST_BASE_URL": "http://127.0.0.1:9/onetrust",
    "API_ONETRUST_CLIENT_ID": "quero",
    "API_ONETRUST_FINALIDADE_ID": "purpose-1",
    "API_ONETRUST_TOPICO_ID": "topic-1",
    **GOOD_SECRETS,
}

Yaml = dict[str, Any]


def _kroton(doc: Yaml) -> Yaml:
    return next(i for i in doc["integrations"] if i["key"] == "kroton")


def _estacio(doc: Yaml) -> Yaml:
    return next(i for i in doc["integrations"] if i["key"] == "estacio")


def _set(pick: Callable[[Yaml], Yaml], key: str, value: Any) -> Callable[[Yaml], None]:
    def edit(doc: Yaml) -> None:
        pick(doc)["settings"][key] = value

    return edit


def _address(key: str, value: Any) -> Callable[[Yaml], None]:
    def edit(doc: Yaml) -> None:
        address = _kroton(doc)["settings"]["default_address"]
        if value is None:
            del address[key]
        else:
            address[key] = value

    return edit


def _origin(origin: str, key: str | None, value: Any) -> Callable[[Yaml], None]:
    """Set `origins.<origin>.<key>` of Kroton (replacing the right key by a typo'd one when
    it is new); `key=None` removes the origin's block."""

    def edit(doc: Yaml) -> None:
        origins = _kroton(doc)["origins"]
        if key is None:
            del origins[origin]
        elif key in origins[origin]:
            origins[origin][key] = value
        else:
            origins[origin].pop("canal_vendas_id")
            origins[origin][key] = value

    return edit


def _top(pick: Callable[[Yaml], Yaml], key: str, value: Any) -> Callable[[Yaml], None]:
    def edit(doc: Yaml) -> None:
        pick(doc)[key] = value

    return edit


@dataclass(frozen=True)
class Mistake:
    id: str
    names: tuple[str, ...]  # what the message must name
    env: dict[str, str | None] = field(default_factory=dict)  # None = unset
    yaml_edit: Callable[[Yaml], None] | None = None
    #: "load": the definitions refuse to load (and the doctor reports it too);
    #: "doctor": only the doctor can see it (databases, production-only rules)
    at: Literal["load", "doctor"] = "load"
    secret: str | None = None  # must never appear in any message


MISTAKES = [
    # --- numbers out of range or not numbers
    Mistake("batch size 0", ("ANUBIS_INTAKE_BATCH_SIZE",), {"ANUBIS_INTAKE_BATCH_SIZE": "0"}),
    Mistake("batch size words", ("ANUBIS_INTAKE_BATCH_SIZE",), {"ANUBIS_INTAKE_BATCH_SIZE": "1k"}),
    Mistake(
        "runs per tick negative",
        ("ANUBIS_INTAKE_MAX_RUNS_PER_TICK",),
        {"ANUBIS_INTAKE_MAX_RUNS_PER_TICK": "-1"},
    ),
    Mistake(
        "runs per tick fraction",
        ("ANUBIS_INTAKE_MAX_RUNS_PER_TICK",),
        {"ANUBIS_INTAKE_MAX_RUNS_PER_TICK": "2.5"},
    ),
    Mistake(
        "settle negative", ("ANUBIS_INTAKE_SETTLE_SECONDS",), {"ANUBIS_INTAKE_SETTLE_SECONDS": "-5"}
    ),
    Mistake("lease 0", ("ANUBIS_LEASE_SECONDS",), {"ANUBIS_LEASE_SECONDS": "0"}),
    Mistake("lease unit", ("ANUBIS_LEASE_SECONDS",), {"ANUBIS_LEASE_SECONDS": "10m"}),
    Mistake(
        "kroton timeout negative",
        ("API_KROTON_TIMEOUT_SECONDS",),
        {"API_KROTON_TIMEOUT_SECONDS": "-1"},
    ),
    Mistake(
        "catalog timeout nan",
        ("CATALOG_KROTON_TIMEOUT_SECONDS",),
        {"CATALOG_KROTON_TIMEOUT_SECONDS": "nan"},
    ),
    Mistake(
        "estacio timeout 0", ("API_ESTACIO_TIMEOUT_SECONDS",), {"API_ESTACIO_TIMEOUT_SECONDS": "0"}
    ),
    Mistake(
        "onetrust timeout inf",
        ("API_ONETRUST_TIMEOUT_SECONDS",),
        {"API_ONETRUST_TIMEOUT_SECONDS": "inf"},
    ),
    Mistake(
        "check min above max",
        ("ANUBIS_CHECK_MIN_SECONDS", "ANUBIS_CHECK_MAX_SECONDS"),
        {"ANUBIS_CHECK_MIN_SECONDS": "90000"},
    ),
    Mistake(
        "quota alert negative",
        ("ANUBIS_QUOTA_ALERT_SECONDS",),
        {"ANUBIS_QUOTA_ALERT_SECONDS": "-120"},
    ),
    Mistake(
        "op retry delay negative",
        ("ANUBIS_OP_RETRY_DELAY_SECONDS",),
        {"ANUBIS_OP_RETRY_DELAY_SECONDS": "-1"},
    ),
    Mistake("run retention 0", ("ANUBIS_RUN_RETENTION_DAYS",), {"ANUBIS_RUN_RETENTION_DAYS": "0"}),
    Mistake(
        "pii retention words",
        ("ANUBIS_PII_RETENTION_DAYS",),
        {"ANUBIS_PII_RETENTION_DAYS": "one year"},
    ),
    # --- quotas
    Mistake(
        "quota in words",
        ("API_KROTON_RATE_LIMIT",),
        {"API_KROTON_RATE_LIMIT": "100 per 5 minutes"},
    ),
    Mistake("quota 0 requests", ("API_ESTACIO_RATE_LIMIT",), {"API_ESTACIO_RATE_LIMIT": "0/3600"}),
    Mistake("quota 0 seconds", ("API_ONETRUST_RATE_LIMIT",), {"API_ONETRUST_RATE_LIMIT": "10/0"}),
    Mistake(
        "quota without period", ("CATALOG_KROTON_RATE_LIMIT",), {"CATALOG_KROTON_RATE_LIMIT": "100"}
    ),
    Mistake(
        "quota negative",
        ("API_ESTACIO_CEP_RATE_LIMIT",),
        {"API_ESTACIO_CEP_RATE_LIMIT": "-5/60"},
    ),
    # --- retry schedule and window
    Mistake("schedule bad unit", ("ANUBIS_RETRY_SCHEDULE",), {"ANUBIS_RETRY_SCHEDULE": "1m,5x"}),
    Mistake("schedule empty item", ("ANUBIS_RETRY_SCHEDULE",), {"ANUBIS_RETRY_SCHEDULE": "1m,,5m"}),
    Mistake(
        "schedule 0 step (production)",
        ("ANUBIS_RETRY_SCHEDULE",),
        {"ANUBIS_RETRY_SCHEDULE": "0s,1m"},
        at="doctor",
    ),
    Mistake(
        "window in hours",
        ("API_ESTACIO_REGISTER_WINDOW",),
        {"API_ESTACIO_REGISTER_WINDOW": "8h-20h"},
    ),
    Mistake(
        "window past midnight hours",
        ("API_ESTACIO_REGISTER_WINDOW",),
        {"API_ESTACIO_REGISTER_WINDOW": "25:00-26:00"},
    ),
    # --- URLs
    Mistake(
        "db url mysql",
        ("ANUBIS_DATABASE_URL",),
        {"ANUBIS_DATABASE_URL": "mysql://anubis:db-pass-7@db/anubis"},
        secret="db-pass-7",
    ),
    Mistake(
        "db url unparsable",
        ("ANUBIS_DATABASE_URL",),
        {"ANUBIS_DATABASE_URL": "anubis:db-pass-8@db/anubis"},
        secret="db-pass-8",
    ),
    Mistake(
        "orders url without host",
        ("ANUBIS_ORDERS_DATABASE_URL",),
        {"ANUBIS_ORDERS_DATABASE_URL": "postgresql://reader:db-pass-9@/orders"},
        secret="db-pass-9",
    ),
    Mistake(
        "kroton url without scheme",
        ("API_KROTON_BASE_URL",),
        {"API_KROTON_BASE_URL": "api.kroton.com.br"},
    ),
    Mistake("ui url without scheme", ("ANUBIS_UI_URL",), {"ANUBIS_UI_URL": "localhost:3000"}),
    Mistake(
        "webhook without scheme",
        ("ANUBIS_SLACK_WEBHOOK_URL",),
        {"ANUBIS_SLACK_WEBHOOK_URL": "hooks.slack.com/services/T0/B0/webhook-token-10"},
        secret="webhook-token-10",
    ),
    # --- enums, names, files
    Mistake(
        "log level typo", ("ANUBIS_CONSOLE_LOG_LEVEL",), {"ANUBIS_CONSOLE_LOG_LEVEL": "verbose"}
    ),
    Mistake(
        "orders table injection",
        ("ANUBIS_ORDERS_TABLE",),
        {"ANUBIS_ORDERS_TABLE": "orders; drop table subscriptions"},
    ),
    Mistake(
        "integrations file missing",
        ("ANUBIS_INTEGRATIONS_FILE",),
        {"ANUBIS_INTEGRATIONS_FILE": "/nonexistent/integrations.yaml"},
    ),
    # --- integration settings in integrations.yaml
    Mistake(
        "unknown kroton settings key",
        ("kroton", "catalog_cache_secs"),
        yaml_edit=_set(_kroton, "catalog_cache_secs", 60),
    ),
    Mistake(
        "catalog cache as text",
        ("kroton", "catalog_cache_seconds"),
        yaml_edit=_set(_kroton, "catalog_cache_seconds", "3600"),
    ),
    Mistake(
        "catalog cache negative",
        ("kroton", "catalog_cache_seconds"),
        yaml_edit=_set(_kroton, "catalog_cache_seconds", -1),
    ),
    Mistake(
        "default address without city",
        ("kroton", "default_address.city"),
        yaml_edit=_address("city", None),
    ),
    Mistake(
        "default address state spelled out",
        ("kroton", "default_address.state"),
        yaml_edit=_address("state", "São Paulo"),
    ),
    Mistake(
        "default address unknown key",
        ("kroton", "default_address.bairro"),
        yaml_edit=_address("bairro", "Centro"),
    ),
    Mistake(
        "estacio window typo",
        ("estacio", "register_window"),
        yaml_edit=_set(_estacio, "register_window", "8-20"),
    ),
    Mistake(
        "estacio zone typo",
        ("estacio", "register_timezone"),
        yaml_edit=_set(_estacio, "register_timezone", "America/Sao_Paolo"),
    ),
    Mistake(
        "estacio retry schedule typo",
        ("estacio", "retry_schedule"),
        yaml_edit=_set(_estacio, "retry_schedule", "1m,2q"),
    ),
    Mistake(
        "integration retry schedule 0 (production)",
        ("kroton", "retry_schedule"),
        yaml_edit=_set(_kroton, "retry_schedule", "0s"),
        at="doctor",
    ),
    Mistake(
        "unknown estacio settings key",
        ("estacio", "register_windows"),
        yaml_edit=_set(_estacio, "register_windows", "08:00-20:00"),
    ),
    Mistake("interval 0", ("kroton", "interval"), yaml_edit=_top(_kroton, "interval", 0)),
    Mistake(
        "kroton origin key typo",
        ("kroton", "origins.ead_com.canal_venda_id"),
        yaml_edit=_origin("ead_com", "canal_venda_id", 86),
    ),
    Mistake(
        "kroton origin id as text",
        ("kroton", "origins.quero_bolsa.id_tipo_prova"),
        yaml_edit=_origin("quero_bolsa", "id_tipo_prova", "1"),
    ),
    Mistake(
        "kroton origin routed but missing",
        ("kroton", "origins.mundo_vestibular"),
        yaml_edit=_origin("mundo_vestibular", None, None),
    ),
    Mistake("type typo", ("krotom",), yaml_edit=_top(_kroton, "type", "krotom")),
    # --- only the doctor can see these
    Mistake(
        "orders table missing",
        ("ANUBIS_ORDERS_TABLE", "paid_orders"),
        {"ANUBIS_ORDERS_TABLE": "paid_orders"},
        at="doctor",
    ),
    Mistake(
        "typo'd variable name",
        ("ANUBIS_INTAKE_BATCHSIZE", "ANUBIS_INTAKE_BATCH_SIZE"),
        {"ANUBIS_INTAKE_BATCHSIZE": "10"},
        at="doctor",
    ),
    Mistake(
        "kroton enabled without its secret",
        ("API_KROTON_SECRET",),
        {"API_KROTON_SECRET": None},
        at="doctor",
    ),
    Mistake(
        "app db unreachable",
        ("ANUBIS_DATABASE_URL",),
        {"ANUBIS_DATABASE_URL": "postgresql://anubis:db-pass-11@127.0.0.1:1/anubis"},
        at="doctor",
        secret="db-pass-11",
    ),
]


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mistakes") / "app.db"
    upgrade(f"sqlite:///{path}")
    get_engine(f"sqlite:///{path}").dispose()  # checkpoints the WAL into the file we copy
    return path


@pytest.fixture
def good_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_sqlite: Path
) -> Iterator[Path]:
    """A complete, valid configuration on SQLite files; yields the integrations file path."""
    import os

    for name in list(os.environ):
        if name.startswith(owned_prefixes()) and not name.startswith("ANUBIS_TEST_"):
            monkeypatch.delenv(name)
    app_db = tmp_path / "app.db"
    shutil.copyfile(migrated_sqlite, app_db)
    orders_url = f"sqlite:///{tmp_path / 'orders.db'}"
    OrdersSource(orders_url).ensure_table()
    integrations = tmp_path / "integrations.yaml"
    shutil.copyfile(DEFAULT_FILE, integrations)
    for name, value in {
        **GOOD_ENV,
        "ANUBIS_HOME": str(tmp_path / "home"),
        "ANUBIS_DATABASE_URL": f"sqlite:///{app_db}",
        "ANUBIS_ORDERS_DATABASE_URL": orders_url,
        "ANUBIS_INTEGRATIONS_FILE": str(integrations),
    }.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield integrations
    reset_settings()


def _doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["doctor"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_good_configuration_is_accepted(
    good_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control: without it every mistake below could 'fail' for an unrelated reason."""
    build_definitions()
    code, output = _doctor(capsys)
    assert code == 0, output
    assert "no problems found" in output
    for secret in GOOD_SECRETS.values():
        assert secret not in output
    assert re.search(r"API_KROTON_SECRET +set +\[env\]", output)


def test_there_are_at_least_25_mistakes() -> None:
    assert len(MISTAKES) >= 25
    assert len({m.id for m in MISTAKES}) == len(MISTAKES)


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_a_mistake_is_refused_naming_the_setting(
    mistake: Mistake,
    good_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in mistake.env.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    if mistake.yaml_edit:
        doc = yaml.safe_load(good_env.read_text(encoding="utf-8"))
        mistake.yaml_edit(doc)
        good_env.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    messages = []
    if mistake.at == "load":
        with pytest.raises((SettingsError, ConfigError)) as refused:
            build_definitions()
        messages.append(str(refused.value))
        assert "Traceback" not in messages[0]
    code, output = _doctor(capsys)
    messages.append(output)
    assert code == 1, f"anubis doctor accepted {mistake.id!r}:\n{output}"
    for message in messages:
        for name in mistake.names:
            assert name in message, f"{name!r} not named in:\n{message}"
        if mistake.secret:
            assert mistake.secret not in message
        for secret in GOOD_SECRETS.values():
            assert secret not in message


def test_every_variable_of_the_model_is_in_the_readme() -> None:
    """The README's table is `anubis doctor --markdown`, verbatim: it cannot drift."""
    from anubis_dagster.settings import markdown_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme
    # the core's and every shipped integration's (a test IES's are not the product's)
    shipped = [m.own_variables() for m in shipped_environments()]
    assert len(shipped) >= 2  # Kroton's and Estácio's, found in their packages
    for variable in Settings.own_variables() + sum(shipped, ()):
        assert f"`{variable}`" in readme


def test_the_doctor_checks_the_app_db_on_each_backend(
    db_url: str,
    good_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A migrated app DB (SQLite or PostgreSQL) passes; the same server with the migration
    table emptied is reported as not migrated, naming the variable."""
    from sqlalchemy import text

    monkeypatch.setenv("ANUBIS_DATABASE_URL", db_url)
    code, output = _doctor(capsys)
    assert code == 0, output
    assert "reachable, at migration" in output
    with get_engine(db_url).begin() as connection:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        connection.execute(text("DELETE FROM alembic_version"))
    try:
        code, output = _doctor(capsys)
        assert code == 1
        assert "ANUBIS_DATABASE_URL: the app DB" in output and "anubis db upgrade" in output
    finally:
        with get_engine(db_url).begin() as connection:
            connection.execute(
                text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": revision}
            )
