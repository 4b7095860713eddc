"""Whether an integration type's partner is asked what became of registered students (a
status check). Without one, whether a registered student enrolled is never known, so its
conversion is n/a: the metrics asset and `anubis report` say so alike.

The answer is the adapter's `check_statuses`. `anubis report` starts without Dagster and HTTP
(issue 20), which adapter modules import, so a built-in IES declares those statuses in its
plain `mapping.py` as `CHECK_STATUSES`, the very set its adapter's `check_statuses` is; an IES
without that declaration (a test's adapter) is asked through its adapter."""

from __future__ import annotations

import importlib

#: why an integration without a status check has no conversion
NO_STATUS_CHECK = "has no status check: whether a registered student enrolled is never known"


def has_status_check(integration_type: str) -> bool | None:
    """True when the adapter of `integration_type` follows registered students at the
    partner; None when no adapter of that type is known (a type removed from the code)."""
    try:
        mapping = importlib.import_module(f"anubis_dagster.integrations.{integration_type}.mapping")
    except ModuleNotFoundError:
        mapping = None
    declared = getattr(mapping, "CHECK_STATUSES", None)
    if declared is not None:
        return bool(declared)
    # imports Dagster and HTTP: only for an IES that does not declare its statuses apart
    from anubis_dagster.integrations.base import UnknownIntegrationType, adapter_class

    try:
        return bool(adapter_class(integration_type).check_statuses)
    except UnknownIntegrationType:
        return None
