"""The contract every IES adapter implements, and the registry of adapters by type.

An integration's `type` (from the configuration file) names its adapter. Generic code (intake,
the delivery ops) only talks to adapters through this module, so adding an IES is one package
that subclasses `IESAdapter` and calls `register_adapter`, plus a configuration entry.
"""

from __future__ import annotations

from typing import ClassVar

from anubis_dagster.core.states import Status


class IESAdapter:
    """Base class of an IES adapter. Subclasses set `type` and `initial_status`."""

    type: ClassVar[str]
    #: The status a valid new subscription starts in (its first step of work).
    initial_status: ClassVar[Status] = Status.TO_REGISTER


_ADAPTERS: dict[str, type[IESAdapter]] = {}


class UnknownIntegrationType(KeyError):
    pass


def register_adapter(adapter: type[IESAdapter]) -> type[IESAdapter]:
    """Class decorator: make `adapter` the one used for integrations of its `type`."""
    _ADAPTERS[adapter.type] = adapter
    return adapter


def adapter_class(integration_type: str) -> type[IESAdapter]:
    _load_builtin_adapters()
    try:
        return _ADAPTERS[integration_type]
    except KeyError:
        raise UnknownIntegrationType(
            f"no adapter registered for integration type {integration_type!r}"
        ) from None


def initial_status_for(integration_type: str) -> Status:
    return adapter_class(integration_type).initial_status


def _load_builtin_adapters() -> None:
    # Imported here, not at module top, so adapters can import this module.
    import anubis_dagster.integrations.estacio.adapter
    import anubis_dagster.integrations.kroton.adapter  # noqa: F401
