"""Anubis: paying students from the marketplaces to the universities' enrolment APIs.

Importing the package makes this process safe to log and write from: every log record is
masked (secrets by value, personal data) as it is created, and every database write is redacted
of secrets (`core.masking`, `db.redact_writes`). Both are process-wide, so run workers, the code
server, the CLI and the tests get them whatever they import first.
"""

from anubis_dagster.core.masking import install_log_masking
from anubis_dagster.db.redact_writes import install_write_redaction

install_log_masking()
install_write_redaction()
