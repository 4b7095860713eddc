from anubis_dagster.core.masking import (
    mask_cpf,
    mask_data,
    mask_email,
    mask_name,
    mask_phone,
    mask_text,
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
