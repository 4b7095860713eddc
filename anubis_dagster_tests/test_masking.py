import pytest

from anubis_dagster.core.masking import (
    MaskedError,
    is_valid_cpf,
    mask_cpf,
    mask_data,
    mask_email,
    mask_name,
    mask_phone,
    mask_text,
    mask_url_path,
    scrub_exception,
)


def test_cpf_keeps_only_the_middle_digits() -> None:
    assert mask_cpf("529.982.247-25") == "***.982.247-**"
    assert mask_cpf("52998224725") == "***.982.247-**"
    assert mask_cpf("123") == "***"
    assert mask_cpf(None) == ""


def test_email_phone_and_name() -> None:
    assert mask_email("maria.silva@gmail.com") == "m***@g***.com"
    assert mask_email("not-an-email") == "***"
    assert mask_phone("(11) 97540-5666") == "(**) *****-**66"
    assert mask_name("Maria da Silva") == "M. d. S."


def test_free_text_is_scrubbed() -> None:
    text = "CPF 529.982.247-25 / 52998224725, mail maria@x.com.br, tel (11) 97540-5666"
    masked = mask_text(text)
    assert "529.982.247-25" not in masked and "52998224725" not in masked
    assert "maria@x.com.br" not in masked
    assert "97540-5666" not in masked
    assert "***.982.247-**" in masked


def test_structures_are_masked_by_key_and_by_pattern() -> None:
    payload = {
        "dadosPessoais": {
            "cpf": "52998224725",
            "nome": "Maria da Silva",
            "email": "maria@x.com",
            "celular": "11975405666",
            "dataNascimento": "1990-01-01",
            "endereco": {"cep": "01310100", "logradouro": "Av. Paulista", "uf": "SP"},
            "sexo": "F",
        },
        "messages": ["CPF 529.982.247-25 já inscrito"],
        "access_token": "secret-token",
    }
    masked = mask_data(payload)
    flat = str(masked)
    for secret in (
        "52998224725",
        "Maria da Silva",
        "maria@x.com",
        "11975405666",
        "1990-01-01",
        "01310100",
        "Av. Paulista",
        "529.982.247-25",
        "secret-token",
    ):
        assert secret not in flat, secret
    assert masked["dadosPessoais"]["endereco"]["uf"] == "SP"
    assert masked["dadosPessoais"]["sexo"] == "F"


# --- item 7: masking never breaks a link and misses no personal data -------------------------

RUN_ID = "0b5c1f7e-1234-4567-8901-123456789012"

KEPT_INTACT = [
    f"<http://localhost:3000/runs/{RUN_ID}|Open the run in Dagster>",
    f"https://dagster.example.com/runs/{RUN_ID}",
    "http://dagster.example.com/runs/11975405666?tab=logs",
    "https://example.com/orders/12345678901234567890/items",
    "https://example.com/a/1197540566/b/21987654321",
    "http://127.0.0.1:8080/ms/inscricao/v4/captacao/inscricao/1234567/sistema/OLIMPO",
    f"run {RUN_ID} failed",
    f"run id {RUN_ID[:8]}",
    "at 2026-11-27T18:08:02.123456+00:00",
    "at 2026-11-27 18:08:02",
    "at 2026-11-27T18:08:02Z",
    "born 1990-01-01",
    "order 1234567890",
    "order_id=11975405666",
    "orders 1197540566 done",
    "subscription #1234567890",
    '{"order_id": 11975405666}',
    "pedido 2198765432 recusado",
    "HTTP 503 in 1234 ms",
    "HTTP 429, retry after 30 s",
    "register subscription #12: 201 ok in 45 ms",
    "took 1234567 ms",
    "version 1.2.3 on 192.168.100.10:5432",
    "Basic information about the Aluno → enrolled mapping",
    "status Aluno, Convocado → enrolled",
    "10.5% error rate, 500 pending",
    "quota 100/300 exceeded",
    "MS004 offer not found",
]


@pytest.mark.parametrize("text", KEPT_INTACT)
def test_links_ids_timestamps_and_numbers_stay_intact(text: str) -> None:
    assert mask_text(text) == text


# (text, what must not survive, what the masked text must contain)
MASKED = [
    ("CPF 529 982 247 25", "529 982 247 25", "***.982.247-**"),
    ("CPF 529.982.247-25", "529.982.247-25", "***.982.247-**"),
    ("CPF 52998224725", "52998224725", "***.982.247-**"),
    ("CPF 529-982-247-25", "529-982-247-25", "***.982.247-**"),
    ("CPF 529.982.247.25", "529.982.247.25", "***.982.247-**"),
    ("CPF 529.982.247/25", "529.982.247/25", "***.982.247-**"),
    ("CPF 529.982.247 25.", "529.982.247 25", "***.982.247-**"),
    ("cpf:52998224725,", "52998224725", "***.982.247-**"),
    ("mail maria.silva@gmail.com", "maria.silva@gmail.com", "m***@g***.com"),
    ("tel (11) 97540-5666", "97540-5666", "**66"),
    ("tel 11 97540 5666", "97540 5666", "**66"),
    ("tel 11 9 7540-5666", "7540-5666", "**66"),
    ("tel +55 11 97540-5666", "97540-5666", "**66"),
    ("tel 11975405666.", "11975405666", "**66"),
    ("tel (11)3456-7890", "3456-7890", "**90"),
    ("Candidata Maria da Silva já inscrita", "Maria da Silva", "Candidata M. d. S."),
    ("Candidato João Pedro", "João Pedro", "Candidato J. P."),
    ("candidato(a) Ana Beatriz Souza", "Ana Beatriz", "A. B. S."),
    ("Aluno JOÃO PEDRO DOS SANTOS matriculado", "JOÃO PEDRO", "J. P. D. S."),
    ("Aluna Fernanda Oliveira", "Fernanda Oliveira", "Aluna F. O."),
    ("Nome: maria souza; ok", "maria souza", "Nome: m. s."),
    ("nome do candidato: Carlos Eduardo", "Carlos Eduardo", "C. E."),
    ("Sr. José Alves e Sra. Ana Lima", "José Alves", "Sr. J. A."),
    ("Sr. José Alves e Sra. Ana Lima", "Ana Lima", "Sra. A. L."),
    ("mora na Rua Augusta, 123 perto", "Augusta", "Rua ***"),
    ("Rua das Flores, nº 45", "Flores", "Rua ***"),
    ("Av. Paulista 1000, São Paulo", "Paulista", "Av. ***"),
    ("Avenida Brasil, 500 - apto 12", "Brasil, 500", "Avenida ***"),
    ("Travessa do Comércio 45", "Comércio", "Travessa ***"),
    ("Alameda Santos, 200", "Santos", "Alameda ***"),
    ("Rodovia BR-101 km 5", "BR-101", "Rodovia ***"),
    ("Praça da Sé, 10", "Sé", "Praça ***"),
    ("CEP 01310-100", "01310-100", "CEP *****-***"),
    (
        "404 for url 'http://127.0.0.1:8080/ms/inscricao/v4/captacao/inscricao/cpf/52998224725'",
        "52998224725",
        "/cpf/***.982.247-**'",
    ),
    ("GET https://x.com/a?email=maria@x.com&page=2", "maria@x.com", "page=2"),
    ("GET https://x.com/a?cpf=52998224725&page=2", "52998224725", "cpf=***.982.247-**&page=2"),
    ("GET https://x.com/a/52998224725/b", "52998224725", "https://x.com/a/***.982.247-**/b"),
    ("GET https://x.com/a?phone=11975405666", "11975405666", "phone=(**) *****-**66"),
    (f"run {RUN_ID}: CPF 529 982 247 25", "529 982 247 25", RUN_ID),
    # a CPF after an id-like word is still a CPF
    ("inscricao 529.982.247-25", "529.982.247-25", "***.982.247-**"),
    ("id 52998224725", "52998224725", "***.982.247-**"),
    ("order 52998224725 refused", "52998224725", "***.982.247-**"),
    ("Candidato: Maria Silva", "Maria Silva", "M. S."),
    ("R. das Flores 123, Centro", "Flores 123", "R. ***"),
]


@pytest.mark.parametrize(("text", "hidden", "shown"), MASKED)
def test_personal_data_in_free_text_is_masked(text: str, hidden: str, shown: str) -> None:
    masked = mask_text(text)
    assert hidden not in masked
    assert shown in masked


def test_url_path_masks_cpf_and_cep_but_keeps_ids() -> None:
    assert mask_url_path("/inscricao/cpf/52998224725") == "/inscricao/cpf/***.982.247-**"
    assert mask_url_path("/cep/01310100") == "/cep/*****-***"
    assert mask_url_path("/inscricao/1234567/sistema/OLIMPO") == "/inscricao/1234567/sistema/OLIMPO"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("52998224725", True),
        ("529.982.247-25", True),
        ("52998224724", False),
        ("11111111111", False),
    ],
)
def test_cpf_check_digits(value: str, valid: bool) -> None:
    assert is_valid_cpf(value) is valid


# --- exception text that ends up in a run failure ------------------------------------------


def test_exception_text_and_its_causes_are_masked_in_place() -> None:
    try:
        try:
            raise ValueError("duplicate key for Candidata Maria Souza, CPF 529.982.247-25")
        except ValueError as inner:
            raise RuntimeError("insert failed: tel 11975405666") from inner
    except RuntimeError as raised:
        outer = raised
        scrubbed = scrub_exception(outer)
    assert scrubbed is outer  # same type: retry policies and handlers still see it
    assert str(outer) == "insert failed: tel (**) *****-**66"
    assert str(outer.__cause__) == "duplicate key for Candidata M. S., CPF ***.982.247-**"


def test_an_exception_whose_text_cannot_be_rewritten_is_replaced() -> None:
    class Stubborn(Exception):
        def __str__(self) -> str:
            return "row (529.982.247-25, maria@x.com)"

    scrubbed = scrub_exception(Stubborn())
    assert isinstance(scrubbed, MaskedError)
    assert "529.982.247-25" not in str(scrubbed) and "maria@x.com" not in str(scrubbed)
    assert str(scrubbed).startswith("Stubborn: row (***.982.247-**")


def test_clean_exceptions_and_interrupts_are_left_alone() -> None:
    error = RuntimeError(f"HTTP 503 in 1200 ms, run {RUN_ID}")
    assert scrub_exception(error) is error and str(error) == f"HTTP 503 in 1200 ms, run {RUN_ID}"
    interrupt = KeyboardInterrupt("CPF 529.982.247-25")
    assert scrub_exception(interrupt) is interrupt
