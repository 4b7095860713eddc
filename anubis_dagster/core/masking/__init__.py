"""Masking of personal data and secrets before they reach the Dagster run log, alerts, event
rows or exception text.

The ops team reads run logs and Slack; LGPD says they must not see students' CPFs, e-mails,
phones, names or addresses there, and no credential may be stored or shown at all. Every text
first goes through `core.redaction` (secrets by value and by key name), then personal data is
masked by pattern. The app DB keeps the full order (it is the system of record); everything
written for a human goes through this module.

CPF masking follows the Brazilian government's publication rule (digits 4 to 9 visible:
``***.456.789-**``), which keeps enough to tell two students apart in a log without exposing the
number.

Free text is masked around what must stay usable: URLs (a run link broken by the phone pattern
is useless), run ids (UUIDs), timestamps and labelled ids (`order 1234567890`) are left as they
are; inside a URL only a CPF (after `/cpf/` or a valid 11-digit one), an e-mail or a personal
query parameter is masked.

The package: `values` masks one value of a known kind, `text` masks free text and JSON-like
data (the patterns and the order they run in), `logs` masks log records and exception text.
Callers import from `core.masking`.
"""

from anubis_dagster.core.masking.logs import MaskedError, install_log_masking, scrub_exception
from anubis_dagster.core.masking.text import mask_data, mask_text, mask_url_path, mask_value
from anubis_dagster.core.masking.values import (
    is_valid_cpf,
    mask_cpf,
    mask_email,
    mask_name,
    mask_phone,
)

__all__ = [
    "MaskedError",
    "install_log_masking",
    "is_valid_cpf",
    "mask_cpf",
    "mask_data",
    "mask_email",
    "mask_name",
    "mask_phone",
    "mask_text",
    "mask_url_path",
    "mask_value",
    "scrub_exception",
]
