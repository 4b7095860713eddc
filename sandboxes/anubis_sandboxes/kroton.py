"""Kroton sandbox: the Kroton API and its catalog middleware, over real HTTP.

Follows reference section 2 (seed 001) so the Kroton adapter can be exercised end to end without
the real partner: OAuth2 client-credentials tokens that expire or get revoked, the Azure API
Management subscription header, field-by-field validation of the register body, one inscription
per CPF, asynchronous processing (NEW → PROCESSING → SUCCESS | ERROR), classifications that
move over time, enrolments once a candidate becomes "Aluno", and the Elasticsearch-like catalog
over the shared demo world (`anubis_sandboxes.demo.catalog`).

One server serves every host: the API (`/oauth2`, `/ms/...`, bucket `api`, where the Captação
API's login `/auth/login` counts too) and the catalog (`/elasticlayer/...`, bucket `catalog`),
each with its own rate limit (default 100 per 300 s).

    python -m anubis_sandboxes.kroton --port 8701 --processing-delay 1
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from anubis_sandboxes.demo.catalog import kroton_catalog_documents
from anubis_sandboxes.server import (
    BRAZILIAN_STATES,
    Handler,
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

API_BUCKET = "api"
CATALOG_BUCKET = "catalog"

UNAUTHORIZED_BODY = {
    "statusCode": 401,
    "message": "Unauthorized. Access token is missing or invalid.",
}
STATUSES = ("NEW", "PROCESSING", "SUCCESS", "ERROR")

#: Where a candidate's classification goes after SUCCESS, one step every `classification_step`
#: seconds. The path is chosen from the CPF (see `classification_path`), out of ten slots, so
#: most demo candidates enrol and every outcome shows up.
CLASSIFICATION_PATHS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("Inscrito", "Classificado", "Convocado", "Aluno"), 4),
    (("Inscrito", "Itinerante", "Aluno"), 2),
    (("Inscrito", "Inscrito VG Online", "Ausente"), 2),
    (("Inscrito", "Desclassificado"), 1),
    (("Inscrito", "DESCLASSIFICADO POR NOTA"), 1),
)


def classification_path(cpf: str) -> tuple[str, ...]:
    """The classifications an inscription of this CPF goes through (deterministic)."""
    slot = int(hashlib.sha256(only_digits(cpf).encode()).hexdigest(), 16) % 10
    for path, slots in CLASSIFICATION_PATHS:
        if slot < slots:
            return path
        slot -= slots
    raise AssertionError("the slots add up to ten")


@dataclass
class KrotonSandboxSettings(SandboxSettings):
    client_id: str = setting("sandbox-client", "OAuth2 client_id accepted")
    client_secret: str = setting("sandbox-secret", "OAuth2 client_secret accepted")
    subscription_key: str = setting(
        "sandbox-subscription", "token scope and Ocp-Apim-Subscription-Key header accepted"
    )
    catalog_api_key: str = setting("sandbox-catalog-key", "catalog 'Authorization: apiKey' key")
    captacao_email: str = setting("captacao@sandbox.invalid", "Captação API login e-mail")
    captacao_password: str = setting("sandbox-password", "Captação API login password")
    token_lifetime: float = setting(300.0, "seconds a token stays valid (expires_in)")
    processing_delay: float = setting(2.0, "seconds per step NEW -> PROCESSING -> SUCCESS")
    processing_error_rate: float = setting(0.0, "fraction of inscriptions that end ERROR")
    classification_step: float = setting(5.0, "seconds between classification changes")
    rate_limits: dict[str, str] = field(
        default_factory=lambda: {API_BUCKET: "100/300", CATALOG_BUCKET: "100/300"}
    )


@dataclass
class Inscription:
    id: str
    cpf: str
    offer: dict[str, Any]  # the catalog document of the first option
    created_at: float  # on the sandbox clock
    ends_in_error: bool
    pinned_status: str | None = None
    pinned_classification: str | None = None
    #: When the classification path starts; None = when processing ends (created + 2 delays).
    classified_since: float | None = None
    #: wall-clock creation time, shown as `dataInscricao` (see `_view`)
    created_wall: float = field(default_factory=time.time)


class KrotonSandbox(SandboxServer):
    """The Kroton API and catalog; see the module docstring. Use as a context manager."""

    name = "Kroton"
    default_port = 8701
    settings_class = KrotonSandboxSettings
    default_bucket = API_BUCKET

    _settings: KrotonSandboxSettings

    @property
    def settings(self) -> KrotonSandboxSettings:
        return self._settings

    # -- state --------------------------------------------------------------------------------
    def reset_state(self) -> None:
        self.catalog = kroton_catalog_documents()
        self._offers_by_id = {doc["id"]: doc for doc in self.catalog}
        self._tokens: dict[str, float] = {}  # access token -> expiry on the sandbox clock
        self._tokens_issued = 0
        self._inscriptions: list[Inscription] = []
        self._registrations_per_cpf: Counter[str] = Counter()
        self._duplicates_refused = 0
        self._next_inscription_number = 7_000_001

    def extra_stats(self) -> dict[str, Any]:
        return {
            "tokens_issued": self._tokens_issued,
            "inscriptions": len(self._inscriptions),
            "registrations_per_cpf": dict(self._registrations_per_cpf),
            "duplicates_refused": self._duplicates_refused,
        }

    def body_cpf(self, request: SandboxRequest) -> str | None:
        personal = (request.json_object() or {}).get("dadosPessoais")
        return personal.get("cpf") if isinstance(personal, dict) else None

    # -- Python helpers (the same as the control endpoints) ------------------------------------
    def revoke_tokens(self) -> int:
        """Invalidate every issued token, as if they all expired now; answers how many."""
        with self.lock:
            revoked = len(self._tokens)
            self._tokens.clear()
            return revoked

    def pin_inscription(self, cpf: str, **changes: str | None) -> dict[str, Any]:
        """Fix the `status` and/or `classificacao` of the CPF's newest inscription.

        Creates the inscription (on `oferta`, default the first open offer) when the CPF has
        none. Any string is accepted, so tests can also feed values the contract doesn't list;
        None un-pins (back to the timed progression). Answers the inscription as the API shows it.
        """
        with self.lock:
            return self._pin(cpf, changes)

    # -- routes -------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        v4 = "/ms/inscricao/v4/captacao/inscricao"
        v5 = "/ms/inscricaocqrs/captacao/v5/inscricao"
        enrolments = "/ms/matricula/captacao/v1/ms/matricula/candidato/cpf/{cpf}"

        def api(method: str, path: str, name: str, handler: Handler) -> Route:
            return Route(method, path, name, handler, API_BUCKET, self._authorize_api)

        return [
            Route("POST", "/oauth2/token", "token", self._token, API_BUCKET),
            # assumption: the Captação API's login (seed 001 gives only `{email, password}`);
            # no quota is documented for it, so it counts in the API's
            Route("POST", "/auth/login", "captacao_login", self._captacao_login, API_BUCKET),
            api("POST", v4, "register", self._register),
            api("POST", v5, "register_v5", self._register),
            api("GET", v4 + "/cpf/{cpf}", "inscriptions_by_cpf", self._inscriptions_by_cpf),
            api("GET", v5 + "/cpf/{cpf}", "inscriptions_by_cpf_v5", self._inscriptions_by_cpf),
            api("GET", v4 + "/{inscricao}/sistema/{sistema}", "inscription", self._inscription),
            api("GET", enrolments, "enrolments_by_cpf", self._enrolments_by_cpf),
            Route(
                "POST",
                "/elasticlayer/middleware/oferta/_search",
                "catalog_search",
                self._catalog_search,
                CATALOG_BUCKET,
                self._authorize_catalog,
            ),
        ]

    def control_routes(self) -> list[Route]:
        return [
            Route("POST", "/__sandbox/revoke-tokens", "revoke_tokens", self._control_revoke),
            Route("POST", "/__sandbox/inscriptions/{cpf}", "pin", self._control_pin),
        ]

    # -- authentication -----------------------------------------------------------------------
    def _token(self, request: SandboxRequest) -> Reply:
        form = request.form()
        s = self._settings
        if form.get("client_id") != s.client_id or form.get("client_secret") != s.client_secret:
            return Reply(401, {"error": "invalid_client"})
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        if form.get("scope") != s.subscription_key:  # the scope is the subscription value
            return Reply(400, {"error": "invalid_scope"})
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self.clock() + s.token_lifetime
        self._tokens_issued += 1
        lifetime = s.token_lifetime
        expires_in = int(lifetime) if lifetime.is_integer() else lifetime
        return Reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in})

    def _captacao_login(self, request: SandboxRequest) -> Reply:
        """The Captação API's e-mail/password login: a longer-lived token (seed 001)."""
        body = request.json_object() or {}
        s = self._settings
        if body.get("email") != s.captacao_email or body.get("password") != s.captacao_password:
            return Reply(401, {"message": "E-mail ou senha inválidos"})
        return Reply(200, {"token": secrets.token_urlsafe(32), "expiresIn": 86400})

    def _authorize_api(self, request: SandboxRequest) -> Reply | None:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        expires_at = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        token_valid = expires_at is not None and expires_at > self.clock()
        subscription_valid = (
            request.header("Ocp-Apim-Subscription-Key") == self._settings.subscription_key
        )
        if token_valid and subscription_valid:
            return None
        return Reply(401, dict(UNAUTHORIZED_BODY))

    def _authorize_catalog(self, request: SandboxRequest) -> Reply | None:
        if request.header("Authorization") == f"apiKey {self._settings.catalog_api_key}":
            return None
        reason = "missing or invalid API key (expected 'Authorization: apiKey <key>')"
        return Reply(401, search_error_body("security_exception", reason, 401))

    # -- registration -------------------------------------------------------------------------
    def _register(self, request: SandboxRequest) -> Reply:
        body = request.json_object()
        errors = register_body_errors(body, self._offer_problem)
        if body is None or errors:
            return Reply(400, _kroton_error("Dados inválidos", errors))
        cpf = only_digits(body["dadosPessoais"]["cpf"])
        existing = self._active_inscription(cpf)
        if existing is not None:
            self._duplicates_refused += 1
            message = "Candidato já possui inscrição para este CPF"
            errors = [f"dadosPessoais.cpf: já existe a inscrição {existing.id}"]
            return Reply(409, _kroton_error(message, errors))
        offer = self._offers_by_id[body["inscricao"]["ofertas"]["primeiraOpcao"]["id"]]
        inscription = self._new_inscription(cpf, offer)
        self._registrations_per_cpf[cpf] += 1
        return Reply(
            201,
            {"success": True, "inscricaoId": inscription.id, "status": self._status(inscription)},
        )

    def _offer_problem(self, offer_id: str) -> str | None:
        offer = self._offers_by_id.get(offer_id)
        if offer is None:
            return "oferta não encontrada"
        if not offer["ativa"]:
            return "oferta inativa"
        if offer["dtTerminoInscricao"] < date.today().isoformat():
            return "inscrições encerradas para esta oferta"
        return None

    def _active_inscription(self, cpf: str) -> Inscription | None:
        """One active inscription per CPF; one that ended ERROR no longer blocks a new one."""
        for inscription in reversed(self._inscriptions):
            if inscription.cpf == cpf and self._status(inscription) != "ERROR":
                return inscription
        return None

    def _new_inscription(self, cpf: str, offer: dict[str, Any]) -> Inscription:
        error_rate = self._settings.processing_error_rate
        inscription = Inscription(
            id=str(self._next_inscription_number),
            cpf=cpf,
            offer=offer,
            created_at=self.clock(),
            ends_in_error=error_rate > 0 and self.random.random() < error_rate,
        )
        self._next_inscription_number += 1
        self._inscriptions.append(inscription)
        return inscription

    # -- asynchronous processing and classification ------------------------------------------
    def _status(self, inscription: Inscription) -> str:
        if inscription.pinned_status is not None:
            return inscription.pinned_status
        elapsed = self.clock() - inscription.created_at
        delay = self._settings.processing_delay
        if elapsed < delay:
            return "NEW"
        if elapsed < 2 * delay:
            return "PROCESSING"
        return "ERROR" if inscription.ends_in_error else "SUCCESS"

    def _classification(self, inscription: Inscription) -> str | None:
        if inscription.pinned_classification is not None:
            return inscription.pinned_classification
        if self._status(inscription) != "SUCCESS":
            return None
        since = inscription.classified_since
        if since is None:
            since = inscription.created_at + 2 * self._settings.processing_delay
        path = classification_path(inscription.cpf)
        step = self._settings.classification_step
        steps_taken = len(path) - 1 if step <= 0 else int((self.clock() - since) / step)
        return path[min(max(steps_taken, 0), len(path) - 1)]

    def _view(self, inscription: Inscription) -> dict[str, Any]:
        """An inscription as the CPF query shows it."""
        return {
            "id": inscription.id,
            "classificacao": {"descricao": self._classification(inscription)},
            "curso": inscription.offer["dsCurso"],
            "unidade": str(inscription.offer["idUnidadeOrigem"]),
            "status": self._status(inscription),
            "sistema": inscription.offer["sistema"],
            # assumption (issue 21): the contract lists {id, classificacao, curso, unidade,
            # status}; the capture period and the creation time are shown too, so a client can
            # tell its own inscription from an older one of the same CPF
            "periodoCaptacao": inscription.offer.get("periodoCaptacao"),
            "dataInscricao": datetime.fromtimestamp(inscription.created_wall, UTC).isoformat(
                timespec="seconds"
            ),
        }

    # -- queries ------------------------------------------------------------------------------
    def _cpf_param(self, request: SandboxRequest) -> str | None:
        cpf = request.params["cpf"]
        return only_digits(cpf) if is_valid_cpf(cpf) else None

    def _inscriptions_by_cpf(self, request: SandboxRequest) -> Reply:
        cpf = self._cpf_param(request)
        if cpf is None:
            return Reply(400, {"statusCode": 400, "message": "CPF inválido"})
        views = [self._view(i) for i in self._inscriptions if i.cpf == cpf]
        return Reply(200, {"inscricoes": views})

    def _inscription(self, request: SandboxRequest) -> Reply:
        wanted_id, wanted_system = request.params["inscricao"], request.params["sistema"].upper()
        for inscription in self._inscriptions:
            if inscription.id == wanted_id and inscription.offer["sistema"] == wanted_system:
                return Reply(200, self._view(inscription))
        return Reply(404, {"statusCode": 404, "message": "Inscrição não encontrada"})

    def _enrolments_by_cpf(self, request: SandboxRequest) -> Reply:
        cpf = self._cpf_param(request)
        if cpf is None:
            return Reply(400, {"statusCode": 400, "message": "CPF inválido"})
        enrolments = [
            {
                "id": f"MAT{inscription.id}",
                "inscricaoId": inscription.id,
                "curso": inscription.offer["dsCurso"],
                "unidade": str(inscription.offer["idUnidadeOrigem"]),
                "sistema": inscription.offer["sistema"],
                "situacao": "MATRICULADO",
            }
            for inscription in self._inscriptions
            if inscription.cpf == cpf and (self._classification(inscription) or "") == "Aluno"
        ]
        return Reply(200, {"matriculas": enrolments})

    def _catalog_search(self, request: SandboxRequest) -> Reply:
        started = time.perf_counter()
        try:
            body = request.json() if request.body.strip() else {}
            hits = search_catalog(self.catalog, body, date.today())
        except (ValueError, UnicodeDecodeError) as error:
            return Reply(400, search_error_body("parsing_exception", str(error), 400))
        took_ms = round((time.perf_counter() - started) * 1000)
        return Reply(
            200,
            {
                "took": took_ms,
                "timed_out": False,
                "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": hits,
            },
        )

    # -- control endpoints --------------------------------------------------------------------
    def _control_revoke(self, _request: SandboxRequest) -> Reply:
        return Reply(200, {"revoked": self.revoke_tokens()})

    def _control_pin(self, request: SandboxRequest) -> Reply:
        changes = request.json_object()
        if changes is None:
            return Reply(400, {"error": 'the body must be {"status": ..., "classificacao": ...}'})
        try:
            return Reply(200, self.pin_inscription(request.params["cpf"], **changes))
        except ValueError as error:
            return Reply(400, {"error": str(error)})

    def _pin(self, cpf_text: str, changes: dict[str, Any]) -> dict[str, Any]:
        unknown = set(changes) - {"status", "classificacao", "oferta"}
        if unknown or not {"status", "classificacao"} & set(changes):
            raise ValueError('give "status" and/or "classificacao" (and optionally "oferta")')
        for key in ("status", "classificacao"):
            if key in changes and changes[key] is not None and is_blank(changes[key]):
                raise ValueError(f"{key} must be a non-empty string or null")
        if not is_valid_cpf(cpf_text):
            raise ValueError("CPF inválido")
        cpf = only_digits(cpf_text)
        inscription = next((i for i in reversed(self._inscriptions) if i.cpf == cpf), None)
        if inscription is None:
            offer_id = changes.get("oferta") or self._first_open_offer_id()
            if self._offer_problem(offer_id) is not None:
                raise ValueError(f"oferta {offer_id!r}: {self._offer_problem(offer_id)}")
            inscription = self._new_inscription(cpf, self._offers_by_id[offer_id])
        if "classificacao" in changes:
            inscription.pinned_classification = changes["classificacao"]
            if changes["classificacao"] is not None and "status" not in changes:
                inscription.pinned_status = "SUCCESS"  # only a processed inscription is classified
        if "status" in changes:
            inscription.pinned_status = changes["status"]
            if changes["status"] == "SUCCESS" and "classificacao" not in changes:
                inscription.pinned_classification = None
                inscription.classified_since = self.clock()  # the path starts now
        return self._view(inscription)

    def _first_open_offer_id(self) -> str:
        return next(doc["id"] for doc in self.catalog if self._offer_problem(doc["id"]) is None)


def _kroton_error(message: str, errors: list[str]) -> dict[str, Any]:
    return {"success": False, "status": "ERROR", "message": message, "errors": errors}


# --------------------------------------------------------------------------------------------
# Register body validation (one message per field, as Kroton answers)
# --------------------------------------------------------------------------------------------
def register_body_errors(
    body: dict[str, Any] | None, offer_problem: Callable[[str], str | None]
) -> list[str]:
    """Everything wrong with a register body, as `"<field path>: <message>"`."""
    if body is None:
        return ["body: JSON inválido (esperado um objeto)"]
    return _personal_data_errors(body.get("dadosPessoais")) + _inscription_errors(
        body.get("inscricao"), offer_problem
    )


def _personal_data_errors(personal: Any) -> list[str]:
    if not isinstance(personal, dict):
        return ["dadosPessoais: obrigatório"]
    problems: dict[str, str | None] = {
        "celular": _phone_problem(personal.get("celular")),
        "cpf": None if is_valid_cpf(personal.get("cpf")) else "CPF inválido",
        "dataNascimento": _birth_date_problem(personal.get("dataNascimento")),
        "email": _email_problem(personal.get("email")),
        "necessidadesEspeciais": (
            None
            if isinstance(personal.get("necessidadesEspeciais"), list)
            else "deve ser uma lista"
        ),
        "nome": "obrigatório" if is_blank(personal.get("nome")) else None,
        "rg": "obrigatório" if is_blank(personal.get("rg")) else None,
        "sexo": None if personal.get("sexo") in ("M", "F", "NI") else "sexo deve ser M, F ou NI",
    }
    errors = [f"dadosPessoais.{name}: {problem}" for name, problem in problems.items() if problem]
    return errors + _address_errors(personal.get("endereco"))


def _address_errors(address: Any) -> list[str]:
    if not isinstance(address, dict):
        return ["dadosPessoais.endereco: obrigatório"]
    cep = address.get("cep")
    problems: dict[str, str | None] = {
        "cep": None
        if isinstance(cep, str) and re.fullmatch(r"\d{5}-?\d{3}", cep)
        else "CEP deve ter 8 dígitos",
        "logradouro": "obrigatório" if is_blank(address.get("logradouro")) else None,
        "municipio": "obrigatório" if is_blank(address.get("municipio")) else None,
        "numero": "obrigatório" if is_blank(address.get("numero")) else None,
        "uf": None if address.get("uf") in BRAZILIAN_STATES else "UF inválida",
    }
    return [f"dadosPessoais.endereco.{name}: {p}" for name, p in problems.items() if p]


def _phone_problem(value: Any) -> str | None:
    valid = (
        isinstance(value, str)
        and re.fullmatch(r"[\d\s()+-]+", value) is not None
        and len(only_digits(value)) in (10, 11)
    )
    return None if valid else "celular deve ter 10 ou 11 dígitos"


def _birth_date_problem(value: Any) -> str | None:
    if plausible_birth_date(value, "%Y-%m-%d") is None:
        return "data de nascimento inválida (AAAA-MM-DD, a partir de 1900)"
    return None


def _email_problem(value: Any) -> str | None:
    return None if is_email(value) else "e-mail inválido"


def _inscription_errors(inscription: Any, offer_problem: Callable[[str], str | None]) -> list[str]:
    if not isinstance(inscription, dict):
        return ["inscricao: obrigatório"]
    errors: list[str] = []
    channel = inscription.get("canalVendas")
    if not isinstance(channel, dict) or not is_strict_int(channel.get("id")):
        errors.append("inscricao.canalVendas.id: deve ser um número inteiro")
    if is_blank(inscription.get("idAfiliado")):
        errors.append("inscricao.idAfiliado: obrigatório")
    if not is_strict_int(inscription.get("idTipoProva")):
        errors.append("inscricao.idTipoProva: deve ser um número inteiro")
    offers = inscription.get("ofertas")
    if not isinstance(offers, dict):
        return [*errors, "inscricao.ofertas: obrigatório"]
    first_id = _offer_id(offers.get("primeiraOpcao"))
    first_problem = "obrigatório" if first_id is None else offer_problem(first_id)
    if first_problem:
        errors.append(f"inscricao.ofertas.primeiraOpcao.id: {first_problem}")
    if offers.get("segundaOpcao") is not None:
        second_id = _offer_id(offers["segundaOpcao"])
        if second_id is None:
            second_problem: str | None = "obrigatório"
        elif second_id == first_id:
            second_problem = "deve ser diferente da primeira opção"
        else:
            second_problem = offer_problem(second_id)
        if second_problem:
            errors.append(f"inscricao.ofertas.segundaOpcao.id: {second_problem}")
    return errors


def _offer_id(option: Any) -> str | None:
    offer_id = option.get("id") if isinstance(option, dict) else None
    return offer_id if isinstance(offer_id, str) and offer_id else None


# --------------------------------------------------------------------------------------------
# The catalog: a small Elasticsearch query evaluator
# --------------------------------------------------------------------------------------------
Predicate = Callable[[dict[str, Any]], bool]
FLOAT_TOLERANCE = 0.001  # prices travel as floats: 599.9 must match 599.9000000001


class QueryError(ValueError):
    """A query the sandbox (like Elasticsearch) cannot parse: answered 400."""


def search_error_body(error_type: str, reason: str, status: int) -> dict[str, Any]:
    """An error in Elasticsearch's shape."""
    cause = {"type": error_type, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def search_catalog(documents: list[dict[str, Any]], body: Any, today: date) -> dict[str, Any]:
    """The `hits` block of a search over `documents`; QueryError for a malformed body.

    Supports `query` with `bool` (`must`, `filter`, `must_not`, `should`), `match` (text: every
    token with operator AND, any token with OR, the default; case- and accent-insensitive),
    `term`, `terms`, `range` (gte/gt/lte/lt; "now/d" is today) and `match_all`, plus `size`
    and `from`. Every hit scores 1.0, in index order.
    """
    if not isinstance(body, dict):
        raise QueryError("the request body must be a JSON object")
    unknown = set(body) - {"query", "size", "from", "_source", "track_total_hits"}
    if unknown:
        raise QueryError(f"unknown or unsupported key(s) [{', '.join(sorted(unknown))}]")
    size, offset = body.get("size", 10), body.get("from", 0)
    if not (is_strict_int(size) and size >= 0 and is_strict_int(offset) and offset >= 0):
        raise QueryError("[size] and [from] must be non-negative integers")
    predicate = compile_query(body.get("query", {"match_all": {}}), today)
    matched = [doc for doc in documents if predicate(doc)]
    return {
        "total": {"value": len(matched), "relation": "eq"},
        "max_score": 1.0 if matched else None,
        "hits": [
            {"_index": "oferta", "_id": doc["id"], "_score": 1.0, "_source": dict(doc)}
            for doc in matched[offset : offset + size]
        ],
    }


def compile_query(query: Any, today: date) -> Predicate:
    """A predicate over documents; the whole query is checked before any document is seen."""
    if not isinstance(query, dict) or len(query) != 1:
        raise QueryError("a query must be an object with exactly one query type")
    ((kind, spec),) = query.items()
    if kind == "match_all":
        return lambda _doc: True
    if kind == "bool":
        return _compile_bool(spec, today)
    if kind == "match":
        field_name, value = _single_field(kind, spec)
        return _compile_match(field_name, value)
    if kind == "term":
        field_name, value = _single_field(kind, spec)
        if isinstance(value, dict):
            value = value.get("value")
        return _field_predicate(field_name, lambda doc_value: _equal(doc_value, value, exact=True))
    if kind == "terms":
        field_name, values = _single_field(kind, spec)
        if not isinstance(values, list):
            raise QueryError("[terms] needs a list of values")
        return _field_predicate(
            field_name, lambda doc_value: any(_equal(doc_value, v, exact=True) for v in values)
        )
    if kind == "range":
        field_name, bounds = _single_field(kind, spec)
        return _compile_range(field_name, bounds, today)
    raise QueryError(f"unknown query [{kind}]")


def _compile_bool(spec: Any, today: date) -> Predicate:
    if not isinstance(spec, dict):
        raise QueryError("[bool] must be an object")
    unknown = set(spec) - {"must", "filter", "must_not", "should", "minimum_should_match"}
    if unknown:
        raise QueryError(f"[bool] query does not support [{', '.join(sorted(unknown))}]")

    def clauses(key: str) -> list[Predicate]:
        value = spec.get(key, [])
        return [compile_query(clause, today) for clause in _as_list(value)]

    required = clauses("must") + clauses("filter")
    excluded = clauses("must_not")
    optional = clauses("should")
    # Elasticsearch: without must/filter, at least one `should` has to match.
    should_needed = spec.get("minimum_should_match", 0 if required else 1) if optional else 0

    def predicate(doc: dict[str, Any]) -> bool:
        return (
            all(p(doc) for p in required)
            and not any(p(doc) for p in excluded)
            and sum(p(doc) for p in optional) >= should_needed
        )

    return predicate


def _compile_match(field_name: str, value: Any) -> Predicate:
    operator = "OR"
    if isinstance(value, dict):
        unknown = set(value) - {"query", "operator"}
        if "query" not in value or unknown:
            raise QueryError(f"[match] on [{field_name}] takes {{query, operator}}")
        operator = str(value.get("operator", "OR")).upper()
        if operator not in ("AND", "OR"):
            raise QueryError(f"[match] operator must be AND or OR, not [{operator}]")
        value = value["query"]
    if isinstance(value, (dict, list)) or value is None:
        raise QueryError(f"[match] on [{field_name}] needs a plain value")

    def matches(doc_value: Any) -> bool:
        if isinstance(doc_value, str):
            wanted, present = _tokens(str(value)), set(_tokens(doc_value))
            if not wanted:
                return False
            found = [token in present for token in wanted]
            return all(found) if operator == "AND" else any(found)
        return _equal(doc_value, value, exact=False)

    return _field_predicate(field_name, matches)


def _compile_range(field_name: str, bounds: Any, today: date) -> Predicate:
    operators = {"gte", "gt", "lte", "lt"}
    if not isinstance(bounds, dict) or not set(bounds) & operators:
        raise QueryError(f"[range] on [{field_name}] needs gte, gt, lte or lt")
    unknown = set(bounds) - operators - {"format", "time_zone"}
    if unknown:
        raise QueryError(f"[range] does not support [{', '.join(sorted(unknown))}]")
    resolved = {op: _resolve_date_math(bounds[op], today) for op in operators & set(bounds)}

    def within(doc_value: Any) -> bool:
        for op, bound in resolved.items():
            if _is_number(doc_value):
                left, right = float(doc_value), _as_float(bound, field_name)
                result = (left > right, left == right, left < right)
            else:
                left_text, right_text = str(doc_value), str(bound)
                result = (left_text > right_text, left_text == right_text, left_text < right_text)
            greater, equal, less = result
            ok = {"gte": greater or equal, "gt": greater, "lte": less or equal, "lt": less}[op]
            if not ok:
                return False
        return True

    return _field_predicate(field_name, within)


def _resolve_date_math(bound: Any, today: date) -> Any:
    """ISO dates compare as strings; `now/d` is today, `now` this second."""
    if bound == "now/d":
        return today.isoformat()
    if bound == "now":
        return datetime.now().isoformat(timespec="seconds")
    return bound


def _field_predicate(field_name: str, test: Callable[[Any], bool]) -> Predicate:
    """A document without the field never matches."""
    return lambda doc: field_name in doc and doc[field_name] is not None and test(doc[field_name])


def _equal(doc_value: Any, query_value: Any, exact: bool) -> bool:
    if isinstance(doc_value, bool):
        if isinstance(query_value, str) and query_value.lower() in ("true", "false"):
            return doc_value == (query_value.lower() == "true")
        return isinstance(query_value, bool) and doc_value == query_value
    if _is_number(doc_value):
        number = _as_float(query_value, "a numeric field")
        return abs(float(doc_value) - number) <= (0 if exact else FLOAT_TOLERANCE)
    if exact:
        return doc_value == query_value
    return _tokens(str(doc_value)) == _tokens(str(query_value))


def _tokens(text: str) -> list[str]:
    """Lower-cased words without accents: "Análise e Desenvolvimento" -> analise, e, ..."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.findall(r"\w+", plain)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_float(value: Any, field_name: str) -> float:
    if _is_number(value):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        raise QueryError(f"[{value}] is not a number, as [{field_name}] needs") from None


def _single_field(kind: str, spec: Any) -> tuple[str, Any]:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise QueryError(f"[{kind}] query must name exactly one field")
    ((field_name, value),) = spec.items()
    return field_name, value


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


#: what `anubis-sandbox serve kroton` serves, and the flags `make demo` starts it with
SANDBOX = KrotonSandbox
DEMO_FLAGS = ["--processing-delay", "1", "--classification-step", "3", "--rate-limit", "600/60"]


def main(argv: list[str] | None = None) -> int:
    """`anubis-sandbox serve kroton`: serve in the foreground until SIGINT/SIGTERM."""
    return run_main(KrotonSandbox, argv)


if __name__ == "__main__":
    raise SystemExit(main())
