"""Estácio / Wyden (Yduqs): LGPD consent at OneTrust, then registration."""

from __future__ import annotations

from anubis_dagster.core.states import Status
from anubis_dagster.integrations.base import IESAdapter, register_adapter


@register_adapter
class EstacioAdapter(IESAdapter):
    type = "estacio"
    initial_status = Status.TO_SYNC_LGPD
