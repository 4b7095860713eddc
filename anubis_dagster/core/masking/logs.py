"""Masking where text leaves the process without passing a masking call: every log record
as it is created, and the text of exceptions before it reaches a run failure."""

from __future__ import annotations

import logging
from typing import Any

from anubis_dagster.core.masking.text import mask_text
from anubis_dagster.core.redaction import redact

# --- log records --------------------------------------------------------------------------
#: loggers whose messages may carry personal data (ours, and httpx's request lines with their
#: URLs); every other logger's messages are redacted of secrets only
_PERSONAL_LOGGERS = ("anubis", "httpx", "httpcore", "dagster")
_log_masking_installed = False


def install_log_masking() -> None:
    """Mask every log record of this process as it is created, before any handler sees it: the
    Dagster run log (`context.log` records), the console, and third-party loggers (httpx logs
    each request URL, a webhook URL is a credential). Idempotent."""
    global _log_masking_installed
    if _log_masking_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            _mask_record(record)
        except Exception:  # masking must never lose a log line; the redaction alone then
            record.msg, record.args = redact(str(record.msg)), ()
        return record

    logging.setLogRecordFactory(factory)
    _log_masking_installed = True


def _mask_record(record: logging.LogRecord) -> None:
    message = record.getMessage()
    personal = record.name.startswith(_PERSONAL_LOGGERS)
    masked = mask_text(message) if personal else redact(message)
    if masked != message:
        record.msg, record.args = masked, ()
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        import traceback

        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = mask_text(text) if personal else redact(text)


# --- exceptions ---------------------------------------------------------------------------
class MaskedError(Exception):
    """Stands in for an exception whose text carried a secret or personal data and could not be
    masked in place (raised `from None`, so the original is not chained to it)."""


def scrub_exception(exc: BaseException) -> BaseException:
    """Mask secrets and personal data out of the text of `exc` and of its causes, before the
    text reaches a run failure (Dagster stores the message of every exception in the chain).

    Rewrites `args` (and a Dagster `Failure`'s `description`) in place and returns `exc` when
    that cleans every text; otherwise returns a `MaskedError` with the masked text of the whole
    chain, to be raised `from None`. Interrupts pass through untouched."""
    if not isinstance(exc, Exception):
        return exc
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        context = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or context
    clean = True
    for error in chain:
        if not _scrub_in_place(error):
            clean = False
    if clean:
        return exc
    text = " <- ".join(f"{type(e).__name__}: {_safe_str(e)}" for e in chain)
    return MaskedError(mask_text(text)[:4000])


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # a broken __str__ must not hide the failure itself
        return "<unprintable>"


def _scrub_in_place(error: BaseException) -> bool:
    """True when the text of `error` is clean (already, or after masking its args)."""
    original = _safe_str(error)
    if mask_text(original) == original:
        return True
    try:
        error.args = tuple(mask_text(a) if isinstance(a, str) else a for a in error.args)
        description = getattr(error, "description", None)
        if isinstance(description, str):
            error.description = mask_text(description)  # type: ignore[attr-defined]
    except Exception:  # read-only attributes: replace the exception instead
        return False
    now = _safe_str(error)
    return now != original and mask_text(now) == now
