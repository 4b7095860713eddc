"""Kroton (Cogna): course sync in the catalog, then registration, then status checks."""

from __future__ import annotations

from anubis_dagster.core.states import Status
from anubis_dagster.integrations.base import IESAdapter, register_adapter


@register_adapter
class KrotonAdapter(IESAdapter):
    type = "kroton"
    initial_status = Status.TO_SYNC
