"""The one factory of partner clients (`integrations/partner_api.py`), without Dagster runs:
which variables a resource reads, what it reports unset, and the refusal naming them."""

from __future__ import annotations

import pytest

from anubis_dagster.clients.probes import Level
from anubis_dagster.integrations.estacio.resources import (
    EstacioApiResource,
    EstacioCepResource,
    OneTrustResource,
)
from anubis_dagster.integrations.kroton.resources import (
    KrotonApiResource,
    KrotonCaptacaoResource,
)
from anubis_dagster.integrations.partner_api import (
    AdapterNotConfigured,
    PartnerClients,
    credential,
)
from anubis_dagster.settings import get_settings

ESTACIO = {
    "API_ESTACIO_NEW_BASE_URL": "http://estacio.test",
    "API_ESTACIO_CLIENT_ID": "canal",
    "API_ESTACIO_NEW_TOKEN": "estacio-token",
}
PARTNER_VARIABLES = (
    *ESTACIO,
    "API_ESTACIO_CEP_BASE_URL",
    *(f"API_KROTON_{n}" for n in ("BASE_URL", "CLIENT_ID", "SECRET", "SUBSCRIPTION")),
    *(f"API_KROTON_{n}" for n in ("BASE_URL_CAPTACAO", "EMAIL", "PASSWORD")),
)


@pytest.fixture(autouse=True)
def no_partner_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PARTNER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_credentials_and_tunables_come_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ESTACIO.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("API_ESTACIO_RATE_LIMIT", "7/60")
    api = EstacioApiResource.from_settings()
    assert api.token == "estacio-token"
    assert "estacio-token" not in repr(api)  # credentials are left out of repr
    assert api.rate_limit == "7/60" == get_settings().value("API_ESTACIO_RATE_LIMIT")
    assert api.missing_settings() == []


def test_the_cep_lookup_falls_back_to_the_api_url() -> None:
    assert EstacioCepResource.env()["base_url"] == (
        "API_ESTACIO_CEP_BASE_URL",
        "API_ESTACIO_NEW_BASE_URL",
    )
    cep = EstacioCepResource.from_settings()
    assert cep.missing_settings() == [
        "API_ESTACIO_NEW_BASE_URL",  # the main one of the alternatives
        "API_ESTACIO_CLIENT_ID",
        "API_ESTACIO_NEW_TOKEN",
    ]


def test_an_optional_api_left_unset_is_fine_half_set_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert KrotonCaptacaoResource.from_settings().missing_settings() == []
    monkeypatch.setenv("API_KROTON_EMAIL", "anubis@example.com")
    assert KrotonCaptacaoResource.from_settings().missing_settings() == [
        "API_KROTON_BASE_URL_CAPTACAO",
        "API_KROTON_PASSWORD",
    ]


def _clients(**resources: object) -> PartnerClients:
    from anubis_dagster.clients.http import CallContext

    class Recorder:
        def started(self, *args: object) -> int:
            raise AssertionError("nothing is sent here")

        def finished(self, *args: object) -> None:
            raise AssertionError("nothing is sent here")

    call = CallContext("sqlite://", None, recorder=Recorder())
    return PartnerClients(resources, call, "somewhere")  # type: ignore[arg-type]


def test_a_run_of_an_unconfigured_partner_is_refused_naming_each_variable_once() -> None:
    clients = _clients(
        estacio_api=EstacioApiResource.from_settings(),
        estacio_cep=EstacioCepResource.from_settings(),
        kroton_captacao=KrotonCaptacaoResource.from_settings(),  # optional: never blocks
    )
    with pytest.raises(AdapterNotConfigured) as refused:
        clients.require("Estácio")
    assert str(refused.value) == (
        "Estácio is not configured: set API_ESTACIO_NEW_BASE_URL, API_ESTACIO_CLIENT_ID, "
        "API_ESTACIO_NEW_TOKEN (see the README)"
    )
    with pytest.raises(AdapterNotConfigured):
        clients["estacio_api"]  # no client is built without its settings


def test_probes_of_unset_apis_say_so_without_sending() -> None:
    clients = _clients(
        kroton_api=KrotonApiResource.from_settings(),
        kroton_captacao=KrotonCaptacaoResource.from_settings(),
    )
    unset = clients.unprobed("kroton_api")
    assert unset is not None and unset.level is Level.ERROR
    assert "API_KROTON_SECRET" in unset.summary
    optional = clients.unprobed("kroton_captacao")
    assert optional is not None and optional.level is Level.OK
    assert "not configured" in optional.summary and optional.metadata == {"probed": False}


def test_the_credentials_named_on_a_refusal() -> None:
    assert OneTrustResource.from_settings().credential_settings() == (
        "API_ONETRUST_BASE_URL",
        "API_ONETRUST_CLIENT_ID",
        "API_ONETRUST_CLIENT_SECRET",
    )
    field = credential(("A_URL", "B_URL"), "where")
    assert field.description == "A_URL or B_URL (where)"
