"""Anubis: paying students from the marketplaces to the universities' enrolment APIs.

Importing the package makes this process safe to log and write from: every log record is
masked (secrets by value, personal data) as it is created, and every database write is redacted
of secrets (`core.masking`, `db.redact_writes`). Both are process-wide, so run workers, the code
server, the CLI and the tests get them whatever they import first. The secrets in the
environment the process started with are registered here too (the settings model registers
what it loads later; this also covers variables it does not own, such as `DAGSTER_PG_PASSWORD`).
"""

from anubis_dagster.core.masking import install_log_masking
from anubis_dagster.db.redact_writes import install_write_redaction
from anubis_dagster.settings import register_environment_secrets

register_environment_secrets()
install_log_masking()
install_write_redaction()
