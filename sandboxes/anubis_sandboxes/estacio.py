"""Estácio sandbox: the registration API, the OneTrust consent API and the CEP lookup.

Estácio publishes no partner guide, so this follows the provisional contract of reference
section 3; every guess is marked "assumption" where it is made. What matters most for the
adapter is reproduced faithfully: LGPD consent must be recorded before registering, refusals
often come with HTTP 200 and only an explicit `"sucesso": true` is a success, a CPF already
registered answers ATL016 with its number, an offer is known under only one of its campus codes
(MS004 for the other), and the volumes are small (40 registrations an hour, 10 consents per
150 s). Offers and CEPs come from the shared demo world (`anubis_sandboxes.demo.catalog`).

One server, three rate-limit buckets: `estacio` (`POST /inscricao`), `onetrust`
(`POST /consentimento`) and `cep` (`GET /cep/{cep}`).

    python -m anubis_sandboxes.estacio --port 8702 --no-require-consent
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from anubis_sandboxes.demo.catalog import CEP_DIRECTORY, ESTACIO_OFFERS
from anubis_sandboxes.server import (
    BRAZILIAN_STATES,
    Reply,
    Route,
    SandboxRequest,
    SandboxServer,
    SandboxSettings,
    is_blank,
    is_email,
    is_strict_int,
    is_valid_cpf,
    only_digits,
    plausible_birth_date,
    run_main,
    setting,
)

ESTACIO_BUCKET = "estacio"
ONETRUST_BUCKET = "onetrust"
CEP_BUCKET = "cep"

# Entry forms: 24 simplified entry (default), 2 second degree, 15 técnico. 1 (traditional
# entrance exam) is refused for partners, as the reference says "never send 1".
ACCEPTED_ENTRY_FORMS = frozenset({24, 2, 15})
# codAgentePdv: 11379 for a paid order, 14412833 otherwise.
ACCEPTED_SALES_AGENTS = frozenset({11379, 14412833})
# assumption: the ENEM score fields all start with "numNota" (numNotaRedacao, ...).
ENEM_FIELDS = ("numInscEnem", "anoEnem")
# assumption: the payment block's amount and link; the contract only says one may come back.
FIRST_PAYMENT_VALUE = 99.0
BOLETO_URL = "https://boleto.sandbox.invalid/{numero}"


def accepted_offer_pairs() -> frozenset[tuple[str, str]]:
    """(codCurso, codCampus) pairs the registration API knows, per `ESTACIO_OFFERS[*].accepts`."""
    pairs: set[tuple[str, str]] = set()
    for offer in ESTACIO_OFFERS:
        if offer["accepts"] == "pai":
            pairs.add((offer["codCurso"], offer["codCampusPai"]))
        elif offer["accepts"] == "campus":
            pairs.add((offer["codCurso"], offer["codCampus"]))
    return frozenset(pairs)


@dataclass
class EstacioSandboxSettings(SandboxSettings):
    canal: str = setting("sandbox-canal", "x-canal header accepted (API_ESTACIO_CLIENT_ID)")
    api_key: str = setting("sandbox-estacio-key", "x-api-key header accepted")
    onetrust_client_id: str = setting("sandbox-onetrust-id", "OneTrust client_id header")
    onetrust_client_secret: str = setting(
        "sandbox-onetrust-secret", "OneTrust client_secret header"
    )
    onetrust_token: str = setting("sandbox-collection-token", "pontoColetaToken accepted")
    onetrust_finalidade_id: str = setting("sandbox-finalidade", "finalidades[].id accepted")
    onetrust_topico_id: str = setting("sandbox-topico", "preferencias[].idTopico accepted")
    require_consent: bool = setting(True, "refuse (MS002) a CPF without a recorded consent")
    ambiguous_rate: float = setting(
        0.0, "fraction of registrations answered 200 'Solicitação recebida' without registering"
    )
    consent_error_rate: float = setting(0.0, "fraction of consent calls answered 503")
    rate_limits: dict[str, str] = field(
        default_factory=lambda: {
            # assumption: the current service's volumes, as the reference says, are the limits.
            ESTACIO_BUCKET: "40/3600",
            ONETRUST_BUCKET: "10/150",
            CEP_BUCKET: "600/60",
        }
    )


class EstacioSandbox(SandboxServer):
    """Estácio registration + OneTrust consent + CEP lookup; see the module docstring."""

    name = "Estácio"
    default_port = 8702
    settings_class = EstacioSandboxSettings
    default_bucket = ESTACIO_BUCKET

    _settings: EstacioSandboxSettings

    @property
    def settings(self) -> EstacioSandboxSettings:
        return self._settings

    # -- state --------------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.offer_pairs = accepted_offer_pairs()
        self._consent_receipts: dict[str, str] = {}  # CPF -> receiptId
        self._consents_per_cpf: Counter[str] = Counter()
        self._registrations: dict[str, str] = {}  # CPF -> numeroInscricao
        #: CPF -> what was registered (codCurso, codCampus, dataInscricao), for ATL016
        self._registered_as: dict[str, dict[str, str]] = {}
        self._registrations_per_cpf: Counter[str] = Counter()
        self._refusals: Counter[str] = Counter()  # MS002, ATL016, MS004, ambiguous
        self._next_registration_number = 202_700_001

    def extra_stats(self) -> dict[str, Any]:
        return {
            "registrations_per_cpf": dict(self._registrations_per_cpf),
            "atl016": self._refusals["ATL016"],
            "ms004": self._refusals["MS004"],
            "ms002": self._refusals["MS002"],
            "ambiguous": self._refusals["ambiguous"],
            "consents_per_cpf": dict(self._consents_per_cpf),
        }

    def body_cpf(self, request: SandboxRequest) -> str | None:
        body = request.json_object() or {}
        return body.get("cpfCandidato") or body.get("documento")

    def record_consent(self, cpf: str) -> str:
        """Record a consent without going through OneTrust (test set-up); answers the receipt."""
        with self.lock:
            return self._consent_receipt(only_digits(cpf))

    # -- routes -------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                "/inscricao",
                "register",
                self._register,
                ESTACIO_BUCKET,
                self._authorize_estacio,
            ),
            Route(
                "POST",
                "/consentimento",
                "consent",
                self._consent,
                ONETRUST_BUCKET,
                self._authorize_onetrust,
            ),
            # assumption: the CEP lookup takes the same headers as the registration API.
            Route("GET", "/cep/{cep}", "cep", self._cep, CEP_BUCKET, self._authorize_estacio),
        ]

    def _authorize_estacio(self, request: SandboxRequest) -> Reply | None:
        s = self._settings
        if request.header("x-canal") == s.canal and request.header("x-api-key") == s.api_key:
            return None
        return Reply(401, {"codigo": "AUT001", "mensagem": "Credenciais inválidas"})

    def _authorize_onetrust(self, request: SandboxRequest) -> Reply | None:
        s = self._settings
        if (
            request.header("client_id") == s.onetrust_client_id
            and request.header("client_secret") == s.onetrust_client_secret
        ):
            return None
        # assumption: OneTrust's error shape (code + message), as for its 400s.
        return Reply(401, {"code": "UNAUTHORIZED", "message": "Invalid client credentials"})

    # -- registration -------------------------------------------------------------------------
    def _register(self, request: SandboxRequest) -> Reply:
        if self._draws_below(self._settings.ambiguous_rate):
            # An upstream that accepted the call but says nothing: not a success.
            self._refusals["ambiguous"] += 1
            return Reply(200, {"mensagem": "Solicitação recebida"}, outcome="fault_ambiguous")
        body = request.json_object()
        errors = registration_errors(body)
        if body is None or errors:
            return self._validation_failure(errors)
        cpf = body["cpfCandidato"]
        if self._settings.require_consent and cpf not in self._consent_receipts:
            mensagem = "Consentimento LGPD não registrado para este CPF"
            return self._validation_failure([{"campo": "consentimento", "mensagem": mensagem}])
        if cpf in self._registrations:
            # Already registered: not a failure for the client, it adopts the number.
            self._refusals["ATL016"] += 1
            return Reply(
                200,
                {
                    "sucesso": False,
                    "codigo": "ATL016",
                    "mensagem": "CPF já inscrito",
                    "numeroInscricao": self._registrations[cpf],
                    # assumption (issue 21): the contract only says ATL016 means "CPF already
                    # registered"; the course, campus and time of that registration are shown
                    # so a client can tell its own from another one
                    **self._registered_as.get(cpf, {}),
                },
                outcome="refused",
            )
        if (body["codCurso"], body["codCampus"]) not in self.offer_pairs:
            self._refusals["MS004"] += 1
            return Reply(
                200,
                {"sucesso": False, "codigo": "MS004", "mensagem": "Oferta não encontrada"},
                outcome="refused",
            )
        numero = str(self._next_registration_number)
        self._next_registration_number += 1
        self._registrations[cpf] = numero
        self._registered_as[cpf] = {
            "codCurso": str(body["codCurso"]),
            "codCampus": str(body["codCampus"]),
            "dataInscricao": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._registrations_per_cpf[cpf] += 1
        return Reply(
            200,
            {
                "sucesso": True,
                "numeroInscricao": numero,
                "pagamento": {
                    "valor": FIRST_PAYMENT_VALUE,
                    "linkBoleto": BOLETO_URL.format(numero=numero),
                },
            },
        )

    def _validation_failure(self, errors: list[dict[str, str]]) -> Reply:
        self._refusals["MS002"] += 1
        body = {
            "sucesso": False,
            "codigo": "MS002",
            "mensagem": "Falha na validação dos dados",
            "erros": errors or [{"campo": "body", "mensagem": "JSON inválido"}],
        }
        return Reply(422, body)

    def _draws_below(self, rate: float) -> bool:
        return rate > 0 and self.random.random() < rate

    # -- OneTrust consent ---------------------------------------------------------------------
    def _consent(self, request: SandboxRequest) -> Reply:
        if self._draws_below(self._settings.consent_error_rate):
            unavailable = {"code": "SERVICE_UNAVAILABLE", "message": "Consent service unavailable"}
            return Reply(503, unavailable, outcome="fault_5xx")
        body = request.json_object()
        problems = consent_problems(body, self._settings)
        if body is None or problems:
            message = "; ".join(problems) or "the body must be a JSON object"
            return Reply(400, {"code": "INVALID_REQUEST", "message": message})
        cpf = body["documento"]
        self._consents_per_cpf[cpf] += 1
        return Reply(201, {"receiptId": self._consent_receipt(cpf), "status": "ACTIVE"})

    def _consent_receipt(self, cpf: str) -> str:
        """The CPF's receipt; recording a consent twice keeps the first one (idempotent)."""
        if cpf not in self._consent_receipts:
            self._consent_receipts[cpf] = str(
                uuid.UUID(int=self.random.getrandbits(128), version=4)
            )
        return self._consent_receipts[cpf]

    # -- CEP lookup ---------------------------------------------------------------------------
    def _cep(self, request: SandboxRequest) -> Reply:
        text = request.params["cep"]
        if not re.fullmatch(r"\d{5}-?\d{3}", text):
            return Reply(400, {"erro": "CEP inválido"})
        cep = only_digits(text)
        entry = CEP_DIRECTORY.get(cep)
        if entry is None:
            return Reply(404, {"erro": "CEP não encontrado"})
        return Reply(200, {"cep": cep, **entry})


# --------------------------------------------------------------------------------------------
# Body validation
# --------------------------------------------------------------------------------------------
def registration_errors(body: dict[str, Any] | None) -> list[dict[str, str]]:
    """Field-level problems of a `POST /inscricao` body, as Estácio's MS002 lists them."""
    if body is None:
        return [{"campo": "body", "mensagem": "JSON inválido (esperado um objeto)"}]
    problems: dict[str, str | None] = {
        "codFormaIngresso": _entry_form_problem(body.get("codFormaIngresso")),
        "codCampus": _required_text(body.get("codCampus")),
        "numHabilitacao": _required_code(body.get("numHabilitacao")),
        "codTurno": _required_text(body.get("codTurno")),
        "indModalidade": None if body.get("indModalidade") in ("P", "E") else "deve ser P ou E",
        "nomeCandidato": _required_text(body.get("nomeCandidato")),
        "enderecoEmail": None if is_email(body.get("enderecoEmail")) else "e-mail inválido",
        "numTelefoneCelular": _phone_problem(body.get("numTelefoneCelular")),
        "cpfCandidato": _cpf_problem(body.get("cpfCandidato")),
        "dataNascimento": _birth_date_problem(body.get("dataNascimento")),
        "siglaUF": None if body.get("siglaUF") in BRAZILIAN_STATES else "UF inválida",
        "endCandidato": _required_text(body.get("endCandidato")),
        "numEndCandidato": _required_code(body.get("numEndCandidato")),
        "codAgentePdv": _sales_agent_problem(body.get("codAgentePdv")),
        "codCurso": _required_text(body.get("codCurso")),
        **_location_problems(body),
        **{name: "deve ser nulo" for name in _enem_fields(body) if body[name] is not None},
    }
    return [{"campo": name, "mensagem": problem} for name, problem in problems.items() if problem]


def _enem_fields(body: dict[str, Any]) -> list[str]:
    return [name for name in body if name in ENEM_FIELDS or name.startswith("numNota")]


def _location_problems(body: dict[str, Any]) -> dict[str, str | None]:
    """CEP, municipality and district must agree with the CEP lookup's answer."""
    cep = body.get("cepCandidato")
    if not isinstance(cep, str) or not re.fullmatch(r"\d{8}", cep):
        return {"cepCandidato": "CEP deve ter 8 dígitos", **_location_codes_required(body)}
    entry = CEP_DIRECTORY.get(cep)
    if entry is None:
        return {"cepCandidato": "CEP não encontrado", **_location_codes_required(body)}
    return {
        code: None if str(body.get(code)) == entry[code] else "não corresponde ao CEP informado"
        for code in ("codMunicipio", "codBairro")
    }


def _location_codes_required(body: dict[str, Any]) -> dict[str, str | None]:
    return {code: _required_code(body.get(code)) for code in ("codMunicipio", "codBairro")}


def _as_int(value: Any) -> int | None:
    """An integer given as a number or as a string of digits (assumption: both are accepted)."""
    if is_strict_int(value):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _entry_form_problem(value: Any) -> str | None:
    entry_form = _as_int(value)
    if entry_form == 1:
        return "forma de ingresso 1 (vestibular tradicional) não permitida para parceiros"
    if entry_form not in ACCEPTED_ENTRY_FORMS:
        return "forma de ingresso inválida (aceitas: 24, 2, 15)"
    return None


def _sales_agent_problem(value: Any) -> str | None:
    return None if _as_int(value) in ACCEPTED_SALES_AGENTS else "agente PDV inválido"


def _required_text(value: Any) -> str | None:
    return "obrigatório" if is_blank(value) else None


def _required_code(value: Any) -> str | None:
    """A code sent as text or as a number."""
    return None if is_strict_int(value) or not is_blank(value) else "obrigatório"


def _phone_problem(value: Any) -> str | None:
    valid = isinstance(value, str) and re.fullmatch(r"\d{10,11}", value) is not None
    return None if valid else "celular deve ter 10 ou 11 dígitos (somente números)"


def _cpf_problem(value: Any) -> str | None:
    valid = isinstance(value, str) and re.fullmatch(r"\d{11}", value) and is_valid_cpf(value)
    return None if valid else "CPF inválido (11 dígitos, somente números)"


def _birth_date_problem(value: Any) -> str | None:
    if plausible_birth_date(value, "%d/%m/%Y") is None:
        return "data de nascimento inválida (DD/MM/AAAA, a partir de 1900)"
    return None


def consent_problems(body: dict[str, Any] | None, settings: EstacioSandboxSettings) -> list[str]:
    """What is wrong with a OneTrust consent body (empty when it is valid)."""
    if body is None:
        return ["the body must be a JSON object"]
    problems: list[str] = []
    document = body.get("documento")
    if not (isinstance(document, str) and re.fullmatch(r"\d{11}", document)):
        problems.append("documento must be the 11 CPF digits")
    elif not is_valid_cpf(document):
        problems.append("documento is not a valid CPF")
    if body.get("pontoColetaToken") != settings.onetrust_token:
        problems.append("pontoColetaToken is unknown")
    purposes = body.get("finalidades")
    if not isinstance(purposes, list) or not purposes:
        problems.append("finalidades must be a non-empty list")
    else:
        problems.extend(_purpose_problems(purposes, settings))
    attributes = body.get("atributos")
    if not isinstance(attributes, list) or not all(
        isinstance(a, dict) and not is_blank(a.get("atributo")) and "valor" in a for a in attributes
    ):
        problems.append("atributos must be a list of {atributo, valor}")
    return problems


def _purpose_problems(purposes: list[Any], settings: EstacioSandboxSettings) -> list[str]:
    problems: list[str] = []
    for index, purpose in enumerate(purposes):
        where = f"finalidades[{index}]"
        if not isinstance(purpose, dict):
            problems.append(f"{where} must be an object")
            continue
        if purpose.get("id") != settings.onetrust_finalidade_id:
            problems.append(f"{where}.id is an unknown purpose")
        preferences = purpose.get("preferencias")
        if not isinstance(preferences, list) or not preferences:
            problems.append(f"{where}.preferencias must be a non-empty list")
        elif any(
            not isinstance(p, dict) or p.get("idTopico") != settings.onetrust_topico_id
            for p in preferences
        ):
            problems.append(f"{where}.preferencias[].idTopico is an unknown topic")
    return problems


#: what `anubis-sandbox serve estacio` serves, and the flags `make demo` starts it with
SANDBOX = EstacioSandbox
DEMO_FLAGS = ["--rate-limit", "600/60"]


def main(argv: list[str] | None = None) -> int:
    """`anubis-sandbox serve estacio`: serve in the foreground until SIGINT/SIGTERM."""
    return run_main(EstacioSandbox, argv)


if __name__ == "__main__":
    raise SystemExit(main())
